"""Model kinds: what a model is built with and how it is called, one ``ModelKind`` object per kind.

A model kind ("kind") is the shape of a model's interface: the keyword arguments ``build`` receives
(``dims``), the call signature and the output it returns. A ``ModelDef`` declares the kinds it
supports; a data task (``rnnkit.tasks``) names the kind its models must be. Each ``ModelKind`` also
holds the sizes the contract checker (``rnnkit.testing``) builds on, its tiny inputs and output
checks, and the sizes ``rnnkit models`` counts parameters for.

``KINDS`` maps each kind's name to its object. This module imports no other rnnkit module, and torch
only inside the methods that make or check tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ModelKind:
    """Everything about one model kind.

    ``dims`` are the keyword names ``build(config, **dims)`` receives; ``tiny_dims`` the sizes the
    contract checker builds with; ``default_dims`` the sizes ``rnnkit models`` counts parameters for,
    described by ``default_dims_note`` (formatted with those dims); ``signature`` the call, in words.
    Subclasses give ``tiny_inputs`` and ``check_output``.
    """

    name: str
    description: str
    dims: tuple[str, ...]
    signature: str
    tiny_dims: Mapping[str, int] = field(hash=False)
    default_dims: Mapping[str, int] = field(hash=False)
    default_dims_note: str

    def __post_init__(self) -> None:
        for attr in ("tiny_dims", "default_dims"):
            sizes = getattr(self, attr)
            if set(sizes) != set(self.dims):
                raise ValueError(f"kind '{self.name}': {attr} {sorted(sizes)} must name exactly {list(self.dims)}")
            object.__setattr__(self, attr, MappingProxyType(dict(sizes)))  # read-only

    def dims_note(self, dims: Mapping[str, int] | None = None) -> str:
        """``default_dims_note`` for ``dims`` (default: ``default_dims``), e.g. for a table caption."""
        return self.default_dims_note.format(**(self.default_dims if dims is None else dims))

    def tiny_inputs(self, dims: Mapping[str, int]) -> tuple[Any, ...]:
        """Small random positional arguments for a model built with ``dims``."""
        raise NotImplementedError

    def check_output(self, output: Any, dims: Mapping[str, int], name: str) -> Any:
        """Check what model ``name`` returned for ``tiny_inputs(dims)``; returns the logits tensor to
        backpropagate through. A wrong type or shape raises AssertionError saying what was expected."""
        raise NotImplementedError


def _logits(output: Any, name: str, kind: str) -> Any:
    import torch

    assert isinstance(output, torch.Tensor), (
        f"{name}: a {kind} model returns a logits tensor, not {type(output).__name__}"
    )
    return output


def _check_shape(logits: Any, expected: tuple[int, ...], name: str) -> None:
    assert tuple(logits.shape) == expected, f"{name}: logits shape {tuple(logits.shape)}, expected {expected}"


@dataclass(frozen=True)
class SequenceClassification(ModelKind):
    """A sequence of feature vectors in, the logits of the last step out (the palindrome task)."""

    batch: int = 2
    steps: int = 5

    def tiny_inputs(self, dims: Mapping[str, int]) -> tuple[Any, ...]:
        import torch

        return (torch.randn(self.batch, self.steps, dims["input_size"]),)

    def check_output(self, output: Any, dims: Mapping[str, int], name: str) -> Any:
        logits = _logits(output, name, self.name)
        _check_shape(logits, (self.batch, dims["num_classes"]), name)
        return logits


@runtime_checkable
class StepStates(Protocol):
    """A sequence-classification model that shows its state after every step (optional;
    ``train.record_gradients`` needs it).

    ``step_states(x)``, x (batch, seq, input_size), returns ``(logits, states)``: the logits forward
    returns (batch, num_classes), and ``states``, a list of seq tensors (batch, ...): the state the
    recurrence carries from step t to step t+1, the one its memory travels in (the vanilla RNN's h_t,
    the LSTM's cell c_t). They must be the very tensors the later steps and the logits are computed
    from, so that autograd gives the whole gradient of the loss against s_t, through every later step
    (a copy, a stack or a detached tensor gets only its direct part, or none). ``rnnkit.gradient_flow``
    measures ‖∂L/∂s_t‖ with it; a model without it trains as before and records no gradients.
    ``rnnkit.testing.check_model`` checks it.
    """

    def step_states(self, x: Any) -> tuple[Any, list[Any]]: ...


@dataclass(frozen=True)
class CharLM(ModelKind):
    """Character ids in, next-character logits at every step and the carried state out."""

    batch: int = 2
    steps: int = 6

    def tiny_inputs(self, dims: Mapping[str, int]) -> tuple[Any, ...]:
        import torch

        return (torch.randint(0, dims["vocab_size"], (self.batch, self.steps)),)

    def check_output(self, output: Any, dims: Mapping[str, int], name: str) -> Any:
        assert isinstance(output, tuple) and len(output) == 2, f"{name}: a {self.name} model returns (logits, state)"
        logits = _logits(output[0], name, self.name)
        _check_shape(logits, (self.batch, self.steps, dims["vocab_size"]), name)
        return logits


@runtime_checkable
class StateInspectable(Protocol):
    """A char-lm model that shows its states step by step (optional; ``rnnkit inspect`` needs it).

    ``inspect_states(tokens, state=None)`` takes tokens (batch, seq) int64 and, optionally, a state
    that the model's forward returned (the text before them), and returns a dict of named tensors,
    each (seq, batch, layers, units): the state at step t after reading ``tokens[:, t]``, for every
    layer. The first entry is the one shown and correlated by default: ``cell`` (tanh(c_t)) for an
    LSTM, ``hidden`` (h_t) for a model without a cell state such as a GRU; gates go under names
    like ``input_gate``, ``forget_gate``, ``output_gate``, ``update_gate``, ``reset_gate``. Every
    value lies in [-1, 1] (tanh and sigmoid outputs), so one colour scale serves them all, and the
    states must be the ones forward computes in eval mode. rnnkit calls it in eval mode under
    ``torch.inference_mode()``; ``rnnkit.testing.check_model`` checks it.
    """

    def inspect_states(self, tokens: Any, state: Any = None) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class NodeClassification(ModelKind):
    """Node features and an edge list in, logits for every node out."""

    #: a path of six nodes, each edge in both directions: (2, edges)
    edges: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 1, 1, 2, 2, 3, 3, 4, 4, 5), (1, 0, 2, 1, 3, 2, 4, 3, 5, 4))
    nodes: int = 6

    def tiny_inputs(self, dims: Mapping[str, int]) -> tuple[Any, ...]:
        import torch

        return torch.randn(self.nodes, dims["num_features"]), torch.tensor(self.edges)

    def check_output(self, output: Any, dims: Mapping[str, int], name: str) -> Any:
        logits = _logits(output, name, self.name)
        _check_shape(logits, (self.nodes, dims["num_classes"]), name)
        return logits


@dataclass(frozen=True)
class NodeSequenceClassification(ModelKind):
    """Snapshots of node features on a fixed graph in, logits for every node's next state out."""

    batch: int = 2
    steps: int = 4
    #: a path of six nodes, each edge in both directions: (2, edges)
    edges: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 1, 1, 2, 2, 3, 3, 4, 4, 5), (1, 0, 2, 1, 3, 2, 4, 3, 5, 4))
    nodes: int = 6

    def tiny_inputs(self, dims: Mapping[str, int]) -> tuple[Any, ...]:
        import torch

        x = torch.randn(self.batch, self.steps, self.nodes, dims["num_features"])  # (batch, steps, nodes, features)
        return x, torch.tensor(self.edges)

    def check_output(self, output: Any, dims: Mapping[str, int], name: str) -> Any:
        logits = _logits(output, name, self.name)
        _check_shape(logits, (self.batch, self.nodes, dims["num_classes"]), name)
        return logits


KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        SequenceClassification(
            name="sequence-classification",
            description="a sequence of feature vectors classified from its last step (palindromes)",
            dims=("input_size", "num_classes"),
            signature="model(x: (batch, seq, input_size) float) -> logits (batch, num_classes) of the last step",
            tiny_dims={"input_size": 3, "num_classes": 4},
            default_dims={"input_size": 10, "num_classes": 10},
            default_dims_note="palindromes with input {input_size} and {num_classes} classes",
        ),
        CharLM(
            name="char-lm",
            description="a character language model whose state is carried through generation",
            dims=("vocab_size",),
            signature="model(tokens: (batch, seq) int64, state=None) -> (logits (batch, seq, vocab_size), new state)",
            tiny_dims={"vocab_size": 7},
            default_dims={"vocab_size": 88},
            default_dims_note="character models with the Christie vocabulary ({vocab_size})",
        ),
        NodeClassification(
            name="node-classification",
            description="every node of a graph classified from its features and its neighbours'",
            dims=("num_features", "num_classes"),
            signature=(
                "model(x: (nodes, num_features) float, edge_index: (2, edges) int64) -> logits (nodes, num_classes)"
            ),
            tiny_dims={"num_features": 5, "num_classes": 3},
            default_dims={"num_features": 1433, "num_classes": 7},
            default_dims_note="graph models on Cora ({num_features:,} features, {num_classes} classes)",
        ),
        NodeSequenceClassification(
            name="node-sequence-classification",
            description="every node's next state classified from snapshots of node features on a fixed graph",
            dims=("num_features", "num_classes"),
            signature=(
                "model(x: (batch, steps, nodes, num_features) float, edge_index: (2, edges) int64) "
                "-> logits (batch, nodes, num_classes) for the step after the last"
            ),
            tiny_dims={"num_features": 3, "num_classes": 3},
            default_dims={"num_features": 2, "num_classes": 2},
            default_dims_note="epidemic sequences ({num_features} node states in, {num_classes} out)",
        ),
    )
}
