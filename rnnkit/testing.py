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
checks that generating with the carried state gives what feeding the whole sequence gives, and the
states a model shows through ``inspect_states`` (``rnnkit.kinds.StateInspectable``); for sequence
classifiers, the per-step states of ``step_states`` (``rnnkit.kinds.StepStates``). A broken
contract raises AssertionError saying what broke.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnkit.checkpoint import CHECKPOINT_LINK, checkpoint_files, load_checkpoint, publish
from rnnkit.data.text import Vocabulary
from rnnkit.kinds import KINDS, ModelKind, StateInspectable, StepStates
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
    if kind.name == "sequence-classification" and isinstance(model, StepStates):
        _check_step_states(model, inputs[0], dims["num_classes"], model_def.name)
    if kind.name == "char-lm":
        _check_generation(model, dims["vocab_size"], model_def.name)
        if isinstance(model, StateInspectable):
            _check_states(model, dims["vocab_size"], model_def.name)


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


def _check_states(model: Any, vocab_size: int, name: str) -> None:
    """``inspect_states`` (``rnnkit.kinds.StateInspectable``), if the model declares it, gives named
    tensors of one shape (seq, batch, layers, units), finite and in [-1, 1], and from a state that
    forward returned gives what it gives for those steps of the whole sequence."""
    model.eval()
    tokens = torch.randint(0, vocab_size, (2, 7))  # (batch, seq)
    with torch.inference_mode():
        states = model.inspect_states(tokens)
        assert isinstance(states, dict) and states, f"{name}: inspect_states() must return a non-empty dict"
        shapes = set()
        for key, value in states.items():
            assert isinstance(key, str) and isinstance(value, torch.Tensor), (
                f"{name}: inspect_states() must map names to tensors; got {key!r}: {type(value).__name__}"
            )
            assert value.dim() == 4 and tuple(value.shape[:2]) == (7, 2), (
                f"{name}: inspect_states()['{key}'] is {tuple(value.shape)}, expected (seq 7, batch 2, layers, units)"
            )
            assert torch.isfinite(value).all() and value.abs().max() <= 1 + 1e-6, (
                f"{name}: inspect_states()['{key}'] has values outside [-1, 1]"
            )
            shapes.add(tuple(value.shape))
        assert len(shapes) == 1, f"{name}: inspect_states() gives tensors of different shapes {sorted(shapes)}"
        _, first = model(tokens[:, :3])  # the state after three characters
        rest = model.inspect_states(tokens[:, 3:], first)
        for key, value in states.items():
            assert key in rest and torch.allclose(rest[key], value[3:], rtol=1e-4, atol=1e-5), (
                f"{name}: inspect_states()['{key}'] from a state forward returned differs from the whole sequence's"
            )


def _check_step_states(model: Any, x: torch.Tensor, num_classes: int, name: str) -> None:
    """``step_states`` (``rnnkit.kinds.StepStates``), if the model declares it, gives forward's logits
    and one (batch, ...) state per step, each in the graph of the logits with a finite gradient (the
    tensors the recurrence computes from: a copy would not be reached)."""
    model.eval()
    batch, steps = x.shape[:2]  # x: (batch, steps, input_size)
    out = model.step_states(x)
    assert isinstance(out, tuple) and len(out) == 2, f"{name}: step_states(x) must return (logits, states)"
    logits, states = out[0], list(out[1])
    assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == (batch, num_classes), (
        f"{name}: step_states(x) must return logits (batch, num_classes) first"
    )
    with torch.no_grad():
        expected = model(x)  # (batch, num_classes)
    gap = (logits.detach() - expected).abs().max().item()
    assert torch.allclose(logits.detach(), expected, rtol=1e-4, atol=1e-5), (
        f"{name}: step_states(x) gives other logits than forward (largest difference {gap:.3g})"
    )
    assert len(states) == steps, f"{name}: step_states(x) gives {len(states)} states for {steps} steps"
    for t, state in enumerate(states, 1):
        assert isinstance(state, torch.Tensor) and state.shape[0] == batch, (
            f"{name}: step_states(x): the state after step {t} must be a (batch, ...) tensor"
        )
    try:
        grads = torch.autograd.grad(logits.float().square().mean(), states)
    except RuntimeError as exc:
        raise AssertionError(
            f"{name}: step_states(x): a state is not in the graph of the logits (return the tensors the "
            f"recurrence computes from, not copies): {exc}"
        ) from exc
    for t, grad in enumerate(grads, 1):
        assert torch.isfinite(grad).all(), f"{name}: step_states(x): no finite gradient at the state after step {t}"


def bracket_text(chars: int, seed: int) -> str:
    """A synthetic text for testing what a character model's states show (``inspect_states``): words
    of the same letters inside and outside brackets, so that only the memory of "(" tells that ")" may
    come, and a model that predicts ")" well must carry "inside brackets" in its state. Seeded."""
    rng = random.Random(seed)
    out, inside = [], False
    while len(out) < chars:
        out.extend(rng.choice("abcdef") for _ in range(rng.randint(1, 4)))
        r = rng.random()
        if not inside and r < 0.3:
            out.append(" (")
            inside = True
        elif inside and r < 0.35:
            out.append(") ")
            inside = False
        else:
            out.append(" ")
    return "".join(out)[:chars]
