"""A GRU written from its equations, as an rnnkit plugin (entry points ``gru`` and ``chargru``).

    r = sigmoid(W_xr x_t + b_xr + W_hr h_{t-1} + b_hr)          reset gate
    z = sigmoid(W_xz x_t + b_xz + W_hz h_{t-1} + b_hz)          update gate
    n = tanh(W_xn x_t + b_xn + r * (W_hn h_{t-1} + b_hn))       candidate
    h_t = (1 - z) * n + z * h_{t-1}

The three gates are stacked (r, z, n) in one input matmul for all steps and one hidden matmul per
step, in torch.nn.GRU's layout (weights copy across). ``gru`` reads the last hidden state out for
sequence classification (the palindrome task); ``chargru`` is a character language model
(embedding -> GRU layers -> head) whose state h (layers, batch, hidden) is carried through
generation, with a fast one-step function for it (``CharGRU.stepper``) and its states step by step
for ``rnnkit inspect`` (``CharGRU.inspect_states``: a GRU has no cell state, so the hidden state h_t
comes first, then the gates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.registry import ModelDef


def gru_cell(x_proj_t: torch.Tensor, h: torch.Tensor, W_h_t: torch.Tensor, b_h: torch.Tensor) -> torch.Tensor:
    """One GRU step from the precomputed input projection (batch, 3h); returns h_t (batch, hidden)."""
    hidden = h.shape[1]
    h_proj = torch.addmm(b_h, h, W_h_t)  # (batch, 3h)
    rz = torch.sigmoid(x_proj_t[:, : 2 * hidden] + h_proj[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = torch.tanh(x_proj_t[:, 2 * hidden :] + r * h_proj[:, 2 * hidden :])
    return n + z * (h - n)


class GRULayer(nn.Module):
    """One GRU layer with explicit parameters: W_x (3h, in), b_x, W_h (3h, h), b_h."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.W_x = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.b_x = nn.Parameter(torch.empty(3 * hidden_size))
        self.W_h = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, seq, in) -> outputs (batch, seq, hidden), last h (batch, hidden)."""
        batch, seq, _ = x.shape
        if h is None:
            h = x.new_zeros(batch, self.hidden_size)
        x_proj = torch.addmm(self.b_x, x.flatten(0, 1), self.W_x.t())  # (batch*seq, 3h)
        W_h_t = self.W_h.t()
        outputs = []
        for x_t in x_proj.view(batch, seq, -1).unbind(1):  # (batch, 3h)
            h = gru_cell(x_t, h, W_h_t, self.b_h)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h

    def trace(self, x: torch.Tensor, h: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x: (batch, seq, in) -> h_t and the gates z, r and candidate n of every step, each (seq, batch,
        hidden): the equations of ``gru_cell`` with the gates kept."""
        batch, seq, _ = x.shape
        if h is None:
            h = x.new_zeros(batch, self.hidden_size)
        x_proj = torch.addmm(self.b_x, x.flatten(0, 1), self.W_x.t()).view(batch, seq, -1)  # (batch, seq, 3h)
        steps: dict[str, list[torch.Tensor]] = {"hidden": [], "update_gate": [], "reset_gate": [], "candidate": []}
        for x_t in x_proj.unbind(1):  # (batch, 3h)
            h_proj = torch.addmm(self.b_h, h, self.W_h.t())  # (batch, 3h)
            r, z = torch.sigmoid(x_t[:, : 2 * self.hidden_size] + h_proj[:, : 2 * self.hidden_size]).chunk(2, 1)
            n = torch.tanh(x_t[:, 2 * self.hidden_size :] + r * h_proj[:, 2 * self.hidden_size :])
            h = n + z * (h - n)
            for name, value in zip(steps, (h, z, r, n), strict=True):
                steps[name].append(value)
        return {name: torch.stack(values) for name, values in steps.items()}


# -- sequence classification (palindromes) --------------------------------------------------------


@dataclass
class GRUConfig:
    hidden_size: int = field(default=128, metadata={"gt": 0})


class GRUClassifier(nn.Module):
    """x: (batch, seq, input_size) -> logits of the last step (batch, num_classes)."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.gru = GRULayer(input_size, hidden_size)
        self.W_ph = nn.Parameter(torch.empty(num_classes, hidden_size))
        self.b_p = nn.Parameter(torch.empty(num_classes))
        bound = 1.0 / math.sqrt(hidden_size)
        nn.init.uniform_(self.W_ph, -bound, bound)
        nn.init.uniform_(self.b_p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)  # (batch, hidden)
        return torch.addmm(self.b_p, h, self.W_ph.t())  # (batch, num_classes)


def build_gru(config: GRUConfig, *, input_size: int, num_classes: int) -> GRUClassifier:
    return GRUClassifier(input_size, config.hidden_size, num_classes)


def count_gru(config: GRUConfig, *, input_size: int, num_classes: int) -> int:
    """3h(i + h + 2) + d(h + 1): three gates with two biases each, and the read-out."""
    h = config.hidden_size
    return 3 * h * (input_size + h + 2) + num_classes * (h + 1)


GRU_MODEL = ModelDef(
    name="gru",
    description="GRU from its equations (plugin rnnkit-gru)",
    kinds=("sequence-classification",),
    config=GRUConfig,
    build=build_gru,
    count_parameters=count_gru,
)


# -- character language model ---------------------------------------------------------------------


@dataclass
class CharGRUConfig:
    embedding_size: int = field(default=64, metadata={"gt": 0})
    hidden_size: int = field(default=128, metadata={"gt": 0})
    layers: int = field(default=2, metadata={"gt": 0})


class CharGRU(nn.Module):
    """tokens (batch, seq), state h (layers, batch, hidden) -> logits (batch, seq, vocab), new state."""

    def __init__(self, vocab_size: int, config: CharGRUConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.embedding_size)
        sizes = [config.embedding_size] + [config.hidden_size] * config.layers
        self.layers = nn.ModuleList(GRULayer(i, config.hidden_size) for i in sizes[:-1])
        self.head = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(tokens)  # (batch, seq, embedding)
        last = []
        for k, layer in enumerate(self.layers):
            x, h = layer(x, None if state is None else state[k])  # (batch, seq, hidden)
            last.append(h)
        return self.head(x), torch.stack(last)  # (batch, seq, vocab), (layers, batch, hidden)

    def stepper(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """A function for generation (rnnkit's optional stepper contract, see rnnkit.sampling.Steppable):
        ``step(ids (batch,), h (layers, batch, hidden)) -> (logits (batch, vocab), new h)``, the state
        being the one ``forward`` takes and returns. The same cells as ``forward``, without the
        embedding lookup, the stacking over time and the module calls: the first layer's input
        projection of every character is precomputed as a (vocab, 3h) table. Build a new one after
        the weights change.
        """
        with torch.no_grad():
            first = self.layers[0]
            table = torch.addmm(first.b_x, self.embed.weight, first.W_x.t())  # (vocab, 3h)
            w_x = [layer.W_x.detach().t() for layer in self.layers]  # (in, 3h)
            b_x = [layer.b_x.detach() for layer in self.layers]  # (3h,)
            w_h = [layer.W_h.detach().t().contiguous() for layer in self.layers]  # (h, 3h)
            b_h = [layer.b_h.detach() for layer in self.layers]  # (3h,)
            head_w, head_b = self.head.weight.detach().t().contiguous(), self.head.bias.detach()  # (h, vocab)

        def step(ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x_proj = torch.index_select(table, 0, ids)  # (batch, 3h)
            hs: list[torch.Tensor] = []
            for k, h in enumerate(state.unbind(0)):  # h: (batch, hidden)
                if k:
                    x_proj = torch.addmm(b_x[k], hs[-1], w_x[k])  # (batch, 3h)
                hs.append(gru_cell(x_proj, h, w_h[k], b_h[k]))
            return torch.addmm(head_b, hs[-1], head_w), torch.stack(hs)  # (batch, vocab), (layers, batch, hidden)

        return step

    def inspect_states(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every step's states for ``rnnkit inspect`` (``rnnkit.kinds.StateInspectable``): tokens (batch,
        seq) and an optional h (layers, batch, hidden) that forward returned -> ``hidden`` h_t (first:
        a GRU has no cell state), ``update_gate`` z_t, ``reset_gate`` r_t and ``candidate`` n_t, each
        (seq, batch, layers, hidden), step t after reading tokens[:, t]."""
        x = self.embed(tokens)  # (batch, seq, embedding)
        traced: list[dict[str, torch.Tensor]] = []
        for k, layer in enumerate(self.layers):
            traced.append(layer.trace(x, None if state is None else state[k]))  # each (seq, batch, hidden)
            x = traced[-1]["hidden"].transpose(0, 1)  # (batch, seq, hidden)
        return {name: torch.stack([t[name] for t in traced], dim=2) for name in traced[0]}


def build_chargru(config: CharGRUConfig, *, vocab_size: int) -> CharGRU:
    return CharGRU(vocab_size, config)


def count_chargru(config: CharGRUConfig, *, vocab_size: int) -> int:
    h, e = config.hidden_size, config.embedding_size
    layers = sum(3 * h * ((e if k == 0 else h) + h + 2) for k in range(config.layers))
    return vocab_size * e + layers + vocab_size * (h + 1)


CHARGRU_MODEL = ModelDef(
    name="chargru",
    description="Character language model with a from-scratch GRU core (plugin rnnkit-gru)",
    kinds=("char-lm",),
    config=CharGRUConfig,
    build=build_chargru,
    count_parameters=count_chargru,
)
