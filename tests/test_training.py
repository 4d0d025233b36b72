from __future__ import annotations

import json

import pytest
import torch

from rnnkit.checkpoint import load_checkpoint
from rnnkit.runner import RunInterrupted, train_run
from rnnkit.spec import resolve_spec
from rnnkit.task import Task
from rnnkit.training import Trainer, make_optimizer, make_scheduler
from tests.helpers import tiny_spec


def test_lstm_learns_short_palindromes_and_stops_early(tmp_path):
    spec = resolve_spec(
        tiny_spec(), ["train.max_steps=400", "train.early_stop.window=10", "train.early_stop.threshold=0.95"]
    )
    meta = train_run(spec, tmp_path / "run", progress=False)
    assert meta["status"] == "solved"
    assert meta["steps"] < 400
    assert meta["final_accuracy"] >= 0.9


def test_run_directory_contents(tmp_path):
    spec = resolve_spec(tiny_spec(), ["train.max_steps=20", "train.early_stop.threshold=0"])
    meta = train_run(spec, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert meta["status"] == "max_steps" and meta["steps"] == 20
    assert (run / "config.yaml").read_text() == spec.to_yaml()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [10, 20]
    assert set(records[0]) == {"step", "loss", "accuracy", "lr", "grad_norm", "elapsed"}
    assert "eval_accuracy" in records[-1]
    state, saved = load_checkpoint(run)
    assert saved["model"] == "lstm" and saved["parameters"] == 4 * 16 * (10 + 16 + 1) + 10 * 17
    assert set(state) == {"W_gx", "W_gh", "b_g", "W_ph", "b_p"}
    assert not list(run.glob("*.tmp"))


def test_same_seed_same_weights(tmp_path):
    spec = resolve_spec(tiny_spec(), ["train.max_steps=15", "train.early_stop.threshold=0"])
    train_run(spec, tmp_path / "a", progress=False)
    train_run(spec, tmp_path / "b", progress=False)
    a, _ = load_checkpoint(tmp_path / "a")
    b, _ = load_checkpoint(tmp_path / "b")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_plateau_is_recorded(tmp_path):
    # lr tiny: nothing is learnt, so the plateau rule ends the run before max_steps
    spec = resolve_spec(
        tiny_spec(),
        [
            "task.length=12",
            "train.lr=1e-9",
            "train.max_steps=500",
            "train.plateau.patience=40",
            "train.early_stop.window=5",
        ],
    )
    meta = train_run(spec, tmp_path / "run", progress=False)
    assert meta["status"] == "plateau" and meta["steps"] < 500


def test_interrupt_saves_and_marks_the_run(tmp_path, monkeypatch):
    spec = resolve_spec(tiny_spec(), ["train.max_steps=100", "train.early_stop.threshold=0"])
    original = Trainer.train_step
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(RunInterrupted) as info:
        train_run(spec, tmp_path / "run", progress=False)
    assert info.value.step == 6
    _, meta = load_checkpoint(tmp_path / "run")
    assert meta["status"] == "interrupted" and meta["steps"] == 6


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_optimizers(name):
    spec = resolve_spec(tiny_spec(), [f"train.optimizer={name}"])
    params = [torch.nn.Parameter(torch.ones(2))]
    opt = make_optimizer(params, spec.train)
    expected = {
        "sgd": torch.optim.SGD,
        "momentum": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
    }[name]
    assert type(opt) is expected
    if name == "momentum":
        assert opt.param_groups[0]["momentum"] == 0.9


def test_step_schedule_decays_the_lr():
    spec = resolve_spec(tiny_spec(), ["train.schedule=step", "train.lr_decay_every=2", "train.lr_gamma=0.5"])
    opt = make_optimizer([torch.nn.Parameter(torch.ones(1))], spec.train)
    sched = make_scheduler(opt, spec.train)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005])


def test_gradient_clipping_bounds_the_update():
    spec = resolve_spec(tiny_spec(), ["train.optimizer=sgd", "train.lr=1.0", "train.max_norm=0.5"])

    class Huge(StubTask):
        def loss_and_correct(self, model, x, y):
            return (model.w * 1000).sum(), torch.tensor(0)

    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(4))
    trainer = Trainer(model, Huge(None, torch.device("cpu"), 0), spec.train)
    _, _, norm = trainer.train_step()
    assert norm == pytest.approx(2000.0)
    assert model.w.detach().norm().item() == pytest.approx(0.5)


def test_a_diverging_run_stops_and_says_so():
    spec = resolve_spec(tiny_spec(), ["train.max_steps=50", "train.early_stop.threshold=0"])

    class Exploding(StubTask):
        def loss_and_correct(self, model, x, y):
            return model.w.sum() * float("nan"), torch.tensor(0)

    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.ones(3))
    result = Trainer(model, Exploding(None, torch.device("cpu"), 0), spec.train).run()
    assert result.status == "diverged" and result.steps == 1


class StubTask(Task):
    """A task of one constant sample; tests override ``loss_and_correct``."""

    name, kind, config_type = "stub", "sequence-classification", object

    def __init__(self, config, device, seed):
        self.device = device

    @property
    def dims(self):
        return {}

    def train_batch(self, batch_size):
        return torch.zeros(1), torch.zeros(1)

    def loss_and_correct(self, model, x, y):
        raise NotImplementedError

    def evaluate(self, model, budget):
        return {"loss": float("nan"), "accuracy": 0.0}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_the_gradient_norm_and_clipping_are_clip_grad_norms():
    from rnnkit.training import clip_gradients, gradient_norm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3), torch.nn.Linear(3, 2))
    model[3].requires_grad_(False)  # parameters without gradients are left out, as clip_grad_norm_ does
    model(torch.randn(4, 5)).pow(2).sum().backward()
    copy = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for max_norm in (0.1, 1e6):  # clipped, and left as it is
        grads = [g.clone() for g in copy]
        expected = [g.clone() for g in copy]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in expected]
        for p, g in zip(params, expected, strict=True):
            p.grad = g  # clip_grad_norm_ on stand-ins whose gradients are the copies
        wanted = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = gradient_norm(grads)
        assert norm.dim() == 0 and torch.equal(norm, wanted)
        clip_gradients(grads, max_norm, norm)
        assert all(torch.equal(a, b) for a, b in zip(grads, expected, strict=True))
        assert (max_norm == 1e6) == all(torch.equal(a, b) for a, b in zip(grads, copy, strict=True))
    assert gradient_norm([]).item() == 0.0


def test_best_weights_wait_in_memory_until_due_or_flushed(tmp_path):
    from rnnkit.checkpoint import BEST_LINK, ThrottledPublisher, checkpoint_dir

    weights = {"w": torch.ones(3)}
    keeper = ThrottledPublisher(tmp_path, BEST_LINK, interval=3600)
    keeper.offer(weights, {"steps": 1})
    keeper.offer(weights, {"steps": 2})
    weights["w"].mul_(5)  # the model trains on: what was offered is a copy
    assert checkpoint_dir(tmp_path, BEST_LINK) is None  # not due: nothing written
    keeper.flush()
    state, meta = load_checkpoint(checkpoint_dir(tmp_path, BEST_LINK))
    assert meta["steps"] == 2 and torch.equal(state["w"], torch.ones(3)) and keeper.pending is None
    keeper.interval = 0  # due at once: published when offered
    keeper.offer(weights, {"steps": 3})
    assert load_checkpoint(checkpoint_dir(tmp_path, BEST_LINK))[1]["steps"] == 3 and keeper.pending is None


def test_throttled_best_publishes_end_with_the_same_best(tmp_path, monkeypatch):
    import rnnkit.checkpoint
    from rnnkit.checkpoint import BEST_LINK, checkpoint_dir, load_state
    from rnnkit.runner import Checkpointer

    publish = rnnkit.checkpoint.publish
    published: list[str] = []

    def counting(run_dir, link, files):
        published.append(link)
        return publish(run_dir, link, files)

    monkeypatch.setattr(rnnkit.checkpoint, "publish", counting)
    spec = resolve_spec(
        tiny_spec(
            {
                "train.eval_every": 2,
                "train.checkpoint_every": 10,
                "train.max_steps": 30,
                "train.early_stop.threshold": 0,
            }
        )
    )
    bests = {}
    for every in (0.0, float("inf")):  # every improvement at once; only with each checkpoint and at the end
        monkeypatch.setattr(Checkpointer, "BEST_EVERY_S", every)
        published.clear()
        train_run(spec, tmp_path / str(every))
        bests[every] = (len(published), *load_checkpoint(checkpoint_dir(tmp_path / str(every), BEST_LINK)))
        state = load_state(checkpoint_dir(tmp_path / str(every)) / "state.pt")["trainer"]
        assert bests[every][2]["eval_loss"] == state["best_eval_loss"]  # best/ is the best the state records
    (eager, eager_state, eager_meta), (lazy, lazy_state, lazy_meta) = bests[0.0], bests[float("inf")]
    assert eager >= 10 and lazy <= 3  # 15 evaluations, nearly all improving; 2 checkpoints and the end
    assert lazy_meta["steps"] == eager_meta["steps"] and lazy_meta["eval_loss"] == eager_meta["eval_loss"]
    assert all(torch.equal(lazy_state[k], eager_state[k]) for k in eager_state)
