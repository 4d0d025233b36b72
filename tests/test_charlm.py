"""The character LSTM: both backends on one weight layout, generation with carried state, resume."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.checkpoint import load_checkpoint
from rnnkit.data.text import Vocabulary
from rnnkit.language_model import load_language_model
from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig, count_parameters
from rnnkit.runner import RunInterrupted, train_run
from rnnkit.sampling import Steppable, generate, next_ids
from rnnkit.spec import resolve_spec
from rnnkit.training import Trainer
from tests.helpers import small_text

VOCAB = 11


def _pair(layers: int = 2, dropout: float = 0.0) -> tuple[CharLSTM, CharLSTM]:
    torch.manual_seed(0)
    cfg = dict(embedding_size=6, hidden_size=9, layers=layers, dropout=dropout)
    a = CharLSTM(VOCAB, CharLSTMConfig(backend="torch", **cfg)).double()
    b = CharLSTM(VOCAB, CharLSTMConfig(backend="scratch", **cfg)).double()
    b.load_state_dict(a.state_dict())  # one layout: torch weights load into scratch as they are
    return a, b


def test_backends_share_weight_names_and_init():
    torch.manual_seed(3)
    a = CharLSTM(VOCAB, CharLSTMConfig(backend="torch", embedding_size=5, hidden_size=7))
    torch.manual_seed(3)
    b = CharLSTM(VOCAB, CharLSTMConfig(backend="scratch", embedding_size=5, hidden_size=7))
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_backends_give_equal_logits_and_gradients(layers):
    a, b = _pair(layers)
    tokens = torch.randint(0, VOCAB, (4, 13))
    state = (torch.randn(layers, 4, 9, dtype=torch.float64), torch.randn(layers, 4, 9, dtype=torch.float64))
    logits_a, (h_a, c_a) = a(tokens, state)
    logits_b, (h_b, c_b) = b(tokens, state)
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(h_a, h_b)
    torch.testing.assert_close(c_a, c_b)
    logits_a.square().mean().backward()
    logits_b.square().mean().backward()
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, msg=name)


def test_parameter_count_formula():
    cfg = CharLSTMConfig(embedding_size=6, hidden_size=9, layers=3)
    model = CharLSTM(VOCAB, cfg)
    assert count_parameters(cfg, vocab_size=VOCAB) == sum(p.numel() for p in model.parameters())


def test_carried_state_generation_matches_feeding_the_whole_sequence():
    torch.manual_seed(1)
    model = CharLSTM(VOCAB, CharLSTMConfig(embedding_size=6, hidden_size=16)).eval()
    vocab = Vocabulary([chr(ord("a") + i) for i in range(VOCAB)])
    (text,) = generate(model, vocab, prompt="abc", length=25, temperature=0)
    full = torch.tensor(vocab.encode("abc" + text))[None]  # (1, 28)
    logits, _ = model(full)
    greedy = logits[0, 2:-1].argmax(-1)  # each position's prediction of the next character
    assert vocab.decode(greedy.tolist()) == text


def test_sampling_rules():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]]).repeat(500, 1)
    assert torch.all(next_ids(logits, 0, 0, g) == 1)
    assert set(next_ids(logits, 1.0, 2, g).tolist()) == {1, 3}  # top-k 2 keeps the two most likely
    cold = next_ids(logits, 0.05, 0, g)
    assert (cold == 1).float().mean() > 0.99
    hot = next_ids(logits, 100.0, 0, g)
    assert len(set(hot.tolist())) == 4


def test_generate_a_batch_reproducibly():
    torch.manual_seed(2)
    model = CharLSTM(VOCAB, CharLSTMConfig(embedding_size=4, hidden_size=8))
    vocab = Vocabulary([chr(ord("a") + i) for i in range(VOCAB)])
    texts = generate(model, vocab, prompt="ab", length=40, temperature=1.0, num=5, seed=7)
    assert len(texts) == 5 and all(len(t) == 40 for t in texts)
    assert len(set(texts)) > 1
    assert texts == generate(model, vocab, prompt="ab", length=40, temperature=1.0, num=5, seed=7)


def _lm_spec(tmp_path, **train):
    spec = {
        "name": "lm",
        "seed": 0,
        "device": "cpu",
        "task": {"name": "text", "text": str(small_text(tmp_path)), "seq_len": 16},
        "model": {"name": "charlstm", "embedding_size": 8, "hidden_size": 16, "layers": 2, "dropout": 0.2},
        "train": {
            "optimizer": "adam",
            "lr": 0.01,
            "batch_size": 8,
            "max_steps": 40,
            "log_every": 5,
            "eval_every": 10,
            "checkpoint_every": 10,
            "schedule": "step",
            "lr_decay_every": 7,
            "lr_gamma": 0.5,
            "max_norm": 5.0,
            "early_stop": {"threshold": 0},
            "plateau": {"patience": 0},
            **train,
        },
    }
    return resolve_spec(spec)


@pytest.mark.parametrize("backend", ["torch", "scratch"])
def test_resume_continues_exactly(tmp_path, monkeypatch, backend):
    spec = _lm_spec(tmp_path)
    spec.model.backend = backend
    straight = train_run(spec, tmp_path / "straight", progress=False)

    original = Trainer.train_step
    calls = {"n": 0}

    def stop_half_way(self):
        calls["n"] += 1
        if calls["n"] == 23:  # mid log window (log_every 5) and mid checkpoint interval
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", stop_half_way)
    with pytest.raises(RunInterrupted):
        train_run(spec, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train_run(spec, tmp_path / "resumed", progress=False, resume=True)

    assert resumed["steps"] == straight["steps"] == 40
    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "resumed")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert resumed["final_metrics"] == straight["final_metrics"]

    def records(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed"} for line in lines]

    assert records("resumed") == records("straight")


def test_checkpoint_loads_with_the_other_backend(tmp_path):
    spec = _lm_spec(tmp_path, max_steps=10)
    train_run(spec, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    torch_model, vocab, meta = load_language_model(tmp_path / "run", backend="torch")
    scratch_model, _, _ = load_language_model(tmp_path / "run", backend="scratch")
    tokens = torch.tensor([vocab.encode("Poirot said")])
    torch.testing.assert_close(torch_model(tokens)[0], scratch_model(tokens)[0], rtol=1e-5, atol=1e-5)
    assert meta["vocabulary"] == vocab.chars and meta["steps"] == 10


@pytest.mark.parametrize("backend", ["torch", "scratch"])
def test_fast_generation_step_equals_forward(backend):
    torch.manual_seed(4)
    model = CharLSTM(VOCAB, CharLSTMConfig(embedding_size=6, hidden_size=10, layers=3, backend=backend)).eval()
    tokens = torch.randint(0, VOCAB, (3, 7))
    with torch.inference_mode():
        logits, (h, c) = model(tokens)  # (3, 7, vocab), each (layers, batch, hidden)
        step = model.stepper()
        zeros = torch.zeros(3, 3, 10)  # (layers, batch, hidden): the state forward starts from
        start = state = (zeros, zeros.clone())
        for t in range(7):
            out, state = step(tokens[:, t], state)  # (3, vocab), the model's own (h, c)
            torch.testing.assert_close(out, logits[:, t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state[0], h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state[1], c, rtol=1e-5, atol=1e-5)
        assert torch.equal(start[0], zeros) and torch.equal(start[1], zeros)  # the state given is left as it was
        torch.testing.assert_close(step(tokens[:, 0], start)[0], logits[:, 0], rtol=1e-5, atol=1e-5)


class _ForwardOnly(torch.nn.Module):
    """A char-lm model without a stepper: generation calls its forward one character at a time."""

    def __init__(self, inner: CharLSTM) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens, state=None):
        return self.inner(tokens, state)


def test_a_model_without_a_stepper_generates_the_same_text():
    torch.manual_seed(5)
    model = CharLSTM(VOCAB, CharLSTMConfig(embedding_size=6, hidden_size=16)).eval()
    vocab = Vocabulary([chr(ord("a") + i) for i in range(VOCAB)])
    plain = _ForwardOnly(model)
    assert isinstance(model, Steppable) and not isinstance(plain, Steppable)
    options = {"prompt": "abc", "length": 30, "temperature": 0}
    assert generate(plain, vocab, **options) == generate(model, vocab, **options)


class _WrongStepLSTM(CharLSTM):
    """A stepper that forgets the carried state: right on the first step from zeros, wrong after."""

    def stepper(self):
        step = super().stepper()

        def wrong(ids, state):
            logits, new = step(ids, tuple(torch.zeros_like(s) for s in state))
            return logits, new

        return wrong


class _InPlaceStepLSTM(CharLSTM):
    """A stepper that changes the state it is given in place (the logits are right)."""

    def stepper(self):
        step = super().stepper()

        def in_place(ids, state):
            logits, new = step(ids, state)
            state[1].mul_(0.5)
            return logits, new

        return in_place


@pytest.mark.parametrize(
    "model_class,message",
    [
        (_WrongStepLSTM, r"broken: stepper\(\) gives other logits than forward over the whole sequence at step 1"),
        (_InPlaceStepLSTM, r"broken: stepper\(\) gives other logits from a state it was given before"),
    ],
    ids=["forgets-the-state", "changes-a-state-in-place"],
)
def test_the_checker_catches_a_broken_stepper(model_class, message):
    from rnnkit.registry import ModelDef, Registry
    from rnnkit.testing import check_model

    registry = Registry()
    registry.add(
        ModelDef("broken", ("char-lm",), CharLSTMConfig, lambda config, *, vocab_size: model_class(vocab_size, config))
    )
    with pytest.raises(AssertionError, match=message):
        check_model("broken", registry)


def test_the_checker_runs_the_chargru_stepper(monkeypatch):
    rnnkit_gru = pytest.importorskip("rnnkit_gru")
    from rnnkit.testing import check_model

    calls = []
    original = rnnkit_gru.CharGRU.stepper

    def counted(self):
        step = original(self)

        def counting(ids, state):
            calls.append(tuple(ids.shape))
            return step(ids, state)

        return counting

    monkeypatch.setattr(rnnkit_gru.CharGRU, "stepper", counted)
    assert check_model("chargru") == ["char-lm"]
    assert (2,) in calls and (1,) in calls  # the step-by-step comparison (batch 2) and generation (batch 1)


def test_checkpoints_name_the_model_kind_old_ones_the_model_task(tmp_path):
    import shutil

    from rnnkit.errors import CheckpointError
    from rnnkit.language_model import pretrained_path

    shipped = json.loads((pretrained_path() / "meta.json").read_text())
    assert shipped["model_kind"] == "char-lm" and "model_task" not in shipped
    old = tmp_path / "old"
    shutil.copytree(pretrained_path(), old)
    meta = {("model_task" if k == "model_kind" else k): v for k, v in shipped.items()}
    (old / "meta.json").write_text(json.dumps(meta))
    model, vocab, loaded = load_language_model(old)  # written before rnnkit called it a kind
    assert loaded["model_task"] == "char-lm" and len(vocab) == 88
    (old / "meta.json").write_text(json.dumps({**meta, "model_kind": "sequence-classification"}))
    with pytest.raises(CheckpointError, match="kind sequence-classification"):  # model_kind wins
        load_language_model(old)
