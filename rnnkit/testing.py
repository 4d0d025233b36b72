"""Check that a model keeps the plugin contract (see docs/plugins.md); for plugin authors and rnnkit's
own tests, which run it over every registered model.

    from rnnkit.testing import check_model, registered_models

    @pytest.mark.parametrize("name", registered_models())
    def test_contract(name):
        check_model(name)

For each model kind the model declares (``rnnkit.kinds``), ``check_model`` builds it with its default
config on the kind's tiny sizes, runs forward and backward on the kind's tiny inputs (shapes, finite
gradients for every parameter), compares the declared parameter count with the built model,
round-trips a checkpoint (safetensors + meta.json) into a fresh model, and, for character models,
checks that generating with the carried state gives what feeding the whole sequence gives. A broken
contract raises AssertionError saying what broke.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnkit.checkpoint import CHECKPOINT_LINK, checkpoint_files, load_checkpoint, publish
from rnnkit.data.text import Vocabulary
from rnnkit.kinds import KINDS, ModelKind
from rnnkit.registry import ModelDef, Registry, default_registry
from rnnkit.sampling import Steppable, generate


def registered_models(registry: Registry | None = None) -> list[str]:
    """Names of every model that loads (for ``pytest.mark.parametrize``)."""
    return [e.name for e in (registry or default_registry()).load_all()]


def check_model(name: str, registry: Registry | None = None) -> list[str]:
    """Check the registered model ``name`` against the contract; returns the model kinds checked."""
    model_def = (registry or default_registry()).get(name)
    assert model_def.kinds, f"{name}: declares no model kind"
    for kind in model_def.kinds:
        assert kind in KINDS, f"{name}: unknown model kind '{kind}' (known: {', '.join(KINDS)})"
        _check_kind(model_def, KINDS[kind])
    return list(model_def.kinds)


def _check_kind(model_def: ModelDef, kind: ModelKind) -> None:
    torch.manual_seed(0)
    dims = dict(kind.tiny_dims)
    config = model_def.make_config()
    model = model_def.build(config, **dims)
    assert isinstance(model, torch.nn.Module), f"{model_def.name}: build() must return a torch.nn.Module"
    params = [p for p in model.parameters() if p.requires_grad]
    if model_def.count_parameters is not None:
        declared = model_def.parameter_count(config, **dims)
        actual = sum(p.numel() for p in params)
        assert declared == actual, f"{model_def.name}: count_parameters says {declared}, the model has {actual}"
    inputs = kind.tiny_inputs(dims)
    output = kind.check_output(model(*inputs), dims, model_def.name)
    output.float().square().mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), (
                f"{model_def.name}: no finite gradient for {pname}"
            )
    _check_checkpoint(model_def, config, model, kind.name, inputs, dims)
    if kind.name == "char-lm":
        _check_generation(model, dims["vocab_size"], model_def.name)


def _check_checkpoint(
    model_def: ModelDef, config: Any, model: Any, kind: str, inputs: tuple[Any, ...], dims: dict[str, int]
) -> None:
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        files = checkpoint_files(model.state_dict(), {"model": model_def.name, "model_kind": kind})
        publish(Path(tmp), CHECKPOINT_LINK, files)
        state, meta = load_checkpoint(tmp)
        again = model_def.build(config, **dims)
        again.load_state_dict(state)
        again.eval()
        a, b = model(*inputs), again(*inputs)
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        assert torch.equal(a, b), f"{model_def.name}: a reloaded checkpoint gives other outputs"
        assert meta["model"] == model_def.name


def _check_generation(model: Any, vocab_size: int, name: str) -> None:
    """A stepper (``rnnkit.sampling.Steppable``), if the model declares one, gives forward's logits
    step by step and leaves the states it is given as they were; greedy generation with the carried
    state gives what feeding the whole sequence gives."""
    model.eval()
    if isinstance(model, Steppable):
        tokens = torch.randint(0, vocab_size, (2, 8))  # (batch, seq)
        with torch.inference_mode():
            whole, _ = model(tokens)  # (batch, seq, vocab)
            _, first = model(tokens[:, :1])  # the state after the first character
            step = model.stepper()
            state, outputs = first, []
            for t in range(1, tokens.shape[1]):
                logits, state = step(tokens[:, t], state)
                assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == (2, vocab_size), (
                    f"{name}: stepper() must return (logits (batch, vocab), state); got logits "
                    f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
                )
                gap = (logits - whole[:, t]).abs().max().item()
                assert torch.allclose(logits, whole[:, t], rtol=1e-4, atol=1e-5), (
                    f"{name}: stepper() gives other logits than forward over the whole sequence at step {t} "
                    f"(largest difference {gap:.3g})"
                )
                outputs.append(logits)
            again, _ = step(tokens[:, 1], first)  # from a state it was given before
            assert torch.allclose(again, outputs[0], rtol=1e-4, atol=1e-5), (
                f"{name}: stepper() gives other logits from a state it was given before (it must not change "
                "a state in place)"
            )
    vocab = Vocabulary([chr(ord("a") + i) for i in range(vocab_size)])
    (text,) = generate(model, vocab, prompt="abc", length=12, temperature=0)
    with torch.no_grad():
        logits, _ = model(torch.tensor([vocab.encode("abc" + text)]))
    greedy = vocab.decode(logits[0, 2:-1].argmax(-1).tolist())
    assert greedy == text, (
        f"{name}: generation with the carried state ({text!r}) differs from feeding the whole sequence ({greedy!r})"
    )
