"""Check that a model keeps the plugin contract (see docs/plugins.md); for plugin authors and rnnkit's
own tests, which run it over every registered model.

    from rnnkit.testing import check_model, registered_models

    @pytest.mark.parametrize("name", registered_models())
    def test_contract(name):
        check_model(name)

For each task the model declares, ``check_model`` builds it with its default config on tiny sizes, runs
forward and backward on tiny inputs (shapes, finite gradients for every parameter), compares the
declared parameter count with the built model, round-trips a checkpoint (safetensors + meta.json) into
a fresh model, and, for character models, checks that generating with the carried state gives what
feeding the whole sequence gives. A broken contract raises AssertionError saying what broke.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rnnkit.registry import TASKS, ModelDef, Registry, default_registry

TINY_DIMS: dict[str, dict[str, int]] = {
    "sequence-classification": {"input_size": 3, "num_classes": 4},
    "char-lm": {"vocab_size": 7},
    "node-classification": {"num_features": 5, "num_classes": 3},
}


def registered_models(registry: Registry | None = None) -> list[str]:
    """Names of every model that loads (for ``pytest.mark.parametrize``)."""
    return [e.name for e in (registry or default_registry()).load_all()]


def check_model(name: str, registry: Registry | None = None) -> list[str]:
    """Check the registered model ``name`` against the contract; returns the tasks checked."""
    model_def = (registry or default_registry()).get(name)
    assert model_def.tasks, f"{name}: declares no task"
    for task in model_def.tasks:
        assert task in TASKS, f"{name}: unknown task '{task}' (known: {', '.join(TASKS)})"
        _check_task(model_def, task)
    return list(model_def.tasks)


def _check_task(model_def: ModelDef, task: str) -> None:
    import torch

    torch.manual_seed(0)
    dims = TINY_DIMS[task]
    config = model_def.make_config()
    model = model_def.build(config, **dims)
    assert isinstance(model, torch.nn.Module), f"{model_def.name}: build() must return a torch.nn.Module"
    params = [p for p in model.parameters() if p.requires_grad]
    if model_def.count_parameters is not None:
        declared = model_def.parameter_count(config, **dims)
        actual = sum(p.numel() for p in params)
        assert declared == actual, f"{model_def.name}: count_parameters says {declared}, the model has {actual}"
    inputs = _inputs(task, dims)
    output = _forward(model, task, inputs, dims, model_def.name)
    output.float().square().mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), (
                f"{model_def.name}: no finite gradient for {pname}"
            )
    _check_checkpoint(model_def, config, model, task, inputs, dims)
    if task == "char-lm":
        _check_generation(model, dims["vocab_size"], model_def.name)


def _inputs(task: str, dims: dict[str, int]) -> tuple[Any, ...]:
    import torch

    if task == "sequence-classification":
        return (torch.randn(2, 5, dims["input_size"]),)
    if task == "char-lm":
        return (torch.randint(0, dims["vocab_size"], (2, 6)),)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 5], [1, 0, 2, 1, 3, 2, 4, 3, 5, 4]])
    return torch.randn(6, dims["num_features"]), edge_index


def _forward(model: Any, task: str, inputs: tuple[Any, ...], dims: dict[str, int], name: str) -> Any:
    out = model(*inputs)
    if task == "sequence-classification":
        assert tuple(out.shape) == (2, dims["num_classes"]), f"{name}: logits shape {tuple(out.shape)}, expected (2, 4)"
        return out
    if task == "char-lm":
        assert isinstance(out, tuple) and len(out) == 2, f"{name}: a char-lm model returns (logits, state)"
        logits = out[0]
        expected = (2, 6, dims["vocab_size"])
        assert tuple(logits.shape) == expected, f"{name}: logits shape {tuple(logits.shape)}, expected {expected}"
        return logits
    assert tuple(out.shape) == (6, dims["num_classes"]), f"{name}: logits shape {tuple(out.shape)}, expected (6, 3)"
    return out


def _check_checkpoint(
    model_def: ModelDef, config: Any, model: Any, task: str, inputs: tuple[Any, ...], dims: dict[str, int]
) -> None:
    import torch

    from rnnkit.checkpoint import CHECKPOINT_LINK, checkpoint_files, load_checkpoint, publish

    model.eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        files = checkpoint_files(model.state_dict(), {"model": model_def.name, "model_task": task})
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
    import torch

    from rnnkit.data.text import Vocabulary
    from rnnkit.generate import generate

    vocab = Vocabulary([chr(ord("a") + i) for i in range(vocab_size)])
    (text,) = generate(model, vocab, prompt="abc", length=12, temperature=0)
    with torch.no_grad():
        logits, _ = model(torch.tensor([vocab.encode("abc" + text)]))
    greedy = vocab.decode(logits[0, 2:-1].argmax(-1).tolist())
    assert greedy == text, (
        f"{name}: generation with the carried state ({text!r}) differs from feeding the whole sequence ({greedy!r})"
    )
