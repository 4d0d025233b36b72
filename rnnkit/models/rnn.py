"""Vanilla RNN written from its equations, for sequence classification from the last hidden state.

    h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h)
    p_t = W_ph h_t + b_p

Only p_T (the last step) is returned: the palindrome task scores the final prediction. The input
projection W_hx x_t + b_h is computed for all steps in one matmul; each step then costs one
hidden-state matmul. Steps are taken with ``unbind`` (not ``x[:, t]`` slicing) so the backward pass
stays linear in the sequence length. ``step_states`` also returns every h_t, the tensors the next steps
are computed from, so the gradient flow through time can be measured against them
(``rnnkit.kinds.StepStates``, ``rnnkit.gradient_flow``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.registry import ModelDef


@dataclass
class RNNConfig:
    """Hyperparameters of the vanilla RNN (input size and classes come from the task)."""

    hidden_size: int = field(default=128, metadata={"gt": 0})


class VanillaRNN(nn.Module):
    """Elman RNN with explicit parameters and a linear read-out of the last hidden state.

    Shapes:
        x: (batch, seq, input_size) -> logits: (batch, num_classes)
    """

    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.W_hx = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.empty(hidden_size))
        self.W_ph = nn.Parameter(torch.empty(num_classes, hidden_size))
        self.b_p = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(h), 1/sqrt(h)) like torch.nn.RNN; read-out like torch.nn.Linear."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.W_hx, self.W_hh, self.b_h, self.W_ph, self.b_p):
            nn.init.uniform_(p, -bound, bound)

    def hidden_states(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Run the recurrence and return the last hidden state, (batch, hidden)."""
        last = h
        for last in self._steps(x, h):  # noqa: B007 (only the last state is wanted)
            pass
        return last if last is not None else x.new_zeros(x.shape[0], self.hidden_size)

    def _steps(self, x: torch.Tensor, h: torch.Tensor | None) -> Iterator[torch.Tensor]:
        """h_1 ... h_T, each (batch, hidden), from x (batch, seq, input) and h_0 (zeros if None)."""
        batch = x.shape[0]
        if h is None:
            h = x.new_zeros(batch, self.hidden_size)  # (batch, hidden)
        x_proj = torch.addmm(self.b_h, x.flatten(0, 1), self.W_hx.t())  # (batch*seq, hidden)
        W_hh_t = self.W_hh.t()
        for x_t in x_proj.view(batch, -1, self.hidden_size).unbind(1):  # each (batch, hidden)
            h = torch.tanh(torch.addmm(x_t, h, W_hh_t))
            yield h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(x)  # (batch, hidden)
        return torch.addmm(self.b_p, h, self.W_ph.t())  # (batch, num_classes)

    def step_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and every hidden state [h_1 ... h_T], each (batch, hidden): the tensors each next
        step is computed from (``rnnkit.kinds.StepStates``, for the gradient flow)."""
        states = list(self._steps(x, None))
        h = states[-1] if states else x.new_zeros(x.shape[0], self.hidden_size)  # (batch, hidden)
        return torch.addmm(self.b_p, h, self.W_ph.t()), states  # (batch, num_classes), T x (batch, hidden)


def build(config: RNNConfig, *, input_size: int, num_classes: int) -> VanillaRNN:
    return VanillaRNN(input_size, config.hidden_size, num_classes)


def count_parameters(config: RNNConfig, *, input_size: int, num_classes: int) -> int:
    """h(i + h + 1) + d(h + 1)."""
    h = config.hidden_size
    return h * (input_size + h + 1) + num_classes * (h + 1)


MODEL = ModelDef(
    name="rnn",
    description="Vanilla (Elman) RNN from its equations",
    kinds=("sequence-classification",),
    config=RNNConfig,
    build=build,
    count_parameters=count_parameters,
)
