"""Character language model: embedding -> stacked LSTM -> linear head over the vocabulary.

Two backends, one weight layout. ``backend="torch"`` runs torch.nn.LSTM (oneDNN on CPU, cuDNN on GPU);
``backend="scratch"`` runs rnnkit's own LSTM (the equations of ``rnnkit.models.lstm``) on parameters
with torch.nn.LSTM's names and shapes (``rnn.weight_ih_l0`` (4h, in), ``rnn.weight_hh_l0`` (4h, h),
``rnn.bias_ih_l0`` and ``rnn.bias_hh_l0`` (4h), gates i, f, g, o), so a checkpoint written with either
backend loads into the other. Within the scratch backend, ``scratch_impl="fused"`` (the default) runs
each layer as one ``LSTMFunction`` (all time steps, a hand-derived backward pass, time-major buffers:
``rnnkit.models.lstm_function``) and ``scratch_impl="autograd"`` runs ``lstm_cell`` in a Python loop
through autograd, the readable reference; both compute the same function (dropout masks between layers
are drawn in each one's own layout, so they differ).

Shapes:
    tokens: (batch, seq) int64; state: (h, c), each (layers, batch, hidden)
    -> logits: (batch, seq, vocab), new state

``CharLSTM.stepper()`` is the fast one-step function for generation (``rnnkit.sampling.Steppable``):
ids (batch,) and the same (h, c) -> logits (batch, vocab) and the next (h, c).
``CharLSTM.inspect_states()`` gives every step's cell state tanh(c_t), hidden state and gates, for
``rnnkit inspect`` (``rnnkit.kinds.StateInspectable``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.models.lstm import lstm_cell
from rnnkit.models.lstm_function import lstm_sequence
from rnnkit.registry import ModelDef

State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class CharLSTMConfig:
    """Sizes of the character LSTM and which LSTM implementation runs it."""

    embedding_size: int = field(default=64, metadata={"gt": 0})
    hidden_size: int = field(default=128, metadata={"gt": 0})
    layers: int = field(default=2, metadata={"gt": 0})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    backend: Literal["torch", "scratch"] = "torch"
    scratch_impl: Literal["fused", "autograd"] = "fused"


class ScratchLSTMStack(nn.Module):
    """Stacked LSTM from its equations, with torch.nn.LSTM's parameter names, shapes and init."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0, impl: str = "fused"
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.impl = impl
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, layer_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():  # the same order and draws as torch.nn.LSTM.reset_parameters
            nn.init.uniform_(p, -bound, bound)

    def forward(
        self, x: torch.Tensor, state: State | None = None, *, time_major: bool = False
    ) -> tuple[torch.Tensor, State]:
        """x (batch, seq, in), or (seq, batch, in) with ``time_major`` -> the last layer's hidden states
        in the same layout as x, and the last (h, c), each (layers, batch, hidden)."""
        if self.impl == "fused":
            return self._fused(x, state, time_major)
        if time_major:
            out, state = self.forward(x.transpose(0, 1), state)
            return out.transpose(0, 1), state
        batch, seq, _ = x.shape
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            state = (zeros, zeros)
        h_out, c_out = [], []
        layer_input = x  # (batch, seq, in)
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")
            x_proj = torch.addmm(bias, layer_input.flatten(0, 1), w_ih.t())  # (batch*seq, 4h)
            h, c = state[0][k], state[1][k]  # (batch, hidden)
            w_hh_t = w_hh.t()
            outputs = []
            for x_t in x_proj.view(batch, seq, -1).unbind(1):  # (batch, 4h)
                h, c = lstm_cell(x_t, h, c, w_hh_t)
                outputs.append(h)
            layer_input = torch.stack(outputs, dim=1)  # (batch, seq, hidden)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            h_out.append(h)
            c_out.append(c)
        return layer_input, (torch.stack(h_out), torch.stack(c_out))

    def _fused(self, x: torch.Tensor, state: State | None, time_major: bool) -> tuple[torch.Tensor, State]:
        """The layers as ``LSTMFunction``s over time-major buffers (``rnnkit.models.lstm_function``)."""
        layer_input = x if time_major else x.transpose(0, 1)  # (seq, batch, in)
        seq, batch, _ = layer_input.shape
        h_out, c_out = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")  # (4h,)
            # w_ih.t().contiguous(): autograd then computes the weight's gradient as x^T dx_proj, which
            # is several times faster than dx_proj^T x when the input is narrow.
            x_proj = torch.addmm(bias, layer_input.reshape(seq * batch, -1), w_ih.t().contiguous())  # (seq*batch, 4h)
            layer_state = None if state is None else (state[0][k], state[1][k])  # each (batch, hidden)
            layer_input, (h, c) = lstm_sequence(x_proj.view(seq, batch, -1), w_hh, layer_state)  # (seq, batch, h)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            h_out.append(h)
            c_out.append(c)
        out = layer_input if time_major else layer_input.transpose(0, 1)
        return out, (torch.stack(h_out), torch.stack(c_out))


class CharLSTM(nn.Module):
    """Embedding, LSTM layers and a linear read-out of next-character logits."""

    def __init__(self, vocab_size: int, config: CharLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.embedding_size)
        dropout = config.dropout if config.layers > 1 else 0.0
        if config.backend == "torch":
            self.rnn: nn.Module = nn.LSTM(
                config.embedding_size, config.hidden_size, config.layers, batch_first=True, dropout=dropout
            )
        else:
            self.rnn = ScratchLSTMStack(
                config.embedding_size, config.hidden_size, config.layers, dropout, config.scratch_impl
            )
        self.head = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if isinstance(self.rnn, ScratchLSTMStack) and self.rnn.impl == "fused":
            # Time-major from the embedding on: tokens.t() costs nothing, the embedding comes out
            # (seq, batch, embedding) as the fused layers want it, and only the last hidden states are
            # transposed back (one copy, in the head's matmul) so that the logits are (batch, seq, vocab).
            x = self.embed(tokens.t())  # (seq, batch, embedding)
            out, state = self.rnn(x, state, time_major=True)  # (seq, batch, hidden)
            return self.head(out.transpose(0, 1)), state  # (batch, seq, vocab)
        x = self.embed(tokens)  # (batch, seq, embedding)
        out, state = self.rnn(x, state)  # (batch, seq, hidden)
        return self.head(out), state  # (batch, seq, vocab)

    def stepper(self) -> Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]:
        """A function for generation: ``step(ids (batch,), (h, c)) -> (logits (batch, vocab), (h, c))``.

        The state is the one ``forward`` takes and returns, (h, c) each (layers, batch, hidden); each
        step returns a new one and changes none in place (``rnnkit.sampling.Steppable``). One step of
        the same equations as ``forward``, with the per-call overhead cut away: the first layer's input
        projection of every character is precomputed as a (vocab, 4h) table, each layer is one
        ``addmm`` per input and a few fused elementwise ops. Both backends share the weights, so this
        serves both. For inference (no gradients); build a new one after the weights change.
        """
        layers, hidden = self.config.layers, self.config.hidden_size
        with torch.no_grad():
            # tanh(x) = 2 sigmoid(2x) - 1: the g gate's weights and bias are doubled (exactly), so one
            # sigmoid over all 4h pre-activations serves the four gates.
            scale = torch.ones(4 * hidden, device=self.head.weight.device, dtype=self.head.weight.dtype)
            scale[2 * hidden : 3 * hidden] = 2.0  # (4h,)
            w_ih = [getattr(self.rnn, f"weight_ih_l{k}").t() * scale for k in range(layers)]  # (in, 4h)
            w_hh = [getattr(self.rnn, f"weight_hh_l{k}").t() * scale for k in range(layers)]  # (h, 4h)
            bias = [
                (getattr(self.rnn, f"bias_ih_l{k}") + getattr(self.rnn, f"bias_hh_l{k}")) * scale for k in range(layers)
            ]
            table = torch.addmm(bias[0], self.embed.weight, w_ih[0])  # (vocab, 4h)
            head_w, head_b = self.head.weight.t().contiguous(), self.head.bias.detach()  # (h, vocab), (vocab,)
        # The last state returned with its per-layer h and c (each (batch, hidden)), so that carrying it
        # on needs no unbinding (states are never changed in place, so they stay equal); one tuple,
        # replaced whole, so that a concurrent step sees a consistent one.
        last: tuple = (None, (), ())

        def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            nonlocal last
            cached = last
            if state is cached[0]:
                hs, cs = cached[1], cached[2]
            else:
                hs, cs = state[0].unbind(0), state[1].unbind(0)  # each layers x (batch, hidden)
            x_proj = torch.index_select(table, 0, ids)  # (batch, 4h)
            h_out, c_out = [], []
            for k in range(layers):
                if k:
                    x_proj = torch.addmm(bias[k], h_out[k - 1], w_ih[k])  # (batch, 4h)
                gates = torch.addmm(x_proj, hs[k], w_hh[k])  # (batch, 4h): i, f, 2g, o
                i, f, s, o = gates.sigmoid_().chunk(4, 1)  # each (batch, hidden); s = sigmoid(2g)
                c = (cs[k] * f).sub_(i).addcmul_(i, s, value=2.0)  # f c + i (2s - 1) = f c + i tanh(g)
                h = torch.tanh(c).mul_(o)  # (batch, hidden)
                h_out.append(h)
                c_out.append(c)
            new = (torch.stack(h_out), torch.stack(c_out))  # each (layers, batch, hidden)
            last = (new, h_out, c_out)
            return torch.addmm(head_b, h_out[-1], head_w), new  # (batch, vocab)

        return step

    def inspect_states(self, tokens: torch.Tensor, state: State | None = None) -> dict[str, torch.Tensor]:
        """Every step's states, for looking at what the units respond to (``rnnkit.kinds.StateInspectable``).

        tokens (batch, seq) and an optional (h, c) that forward returned -> ``cell`` tanh(c_t),
        ``hidden`` h_t, ``input_gate`` i_t, ``forget_gate`` f_t and ``output_gate`` o_t, each
        (seq, batch, layers, hidden), step t after reading tokens[:, t]. The equations of
        ``rnnkit.models.lstm`` on the weights both backends share (torch.nn.LSTM does not give its
        gates), one step at a time, without dropout: the model as it is evaluated and sampled.
        """
        layers, hidden = self.config.layers, self.config.hidden_size
        batch, seq = tokens.shape
        if state is None:
            zeros = self.head.weight.new_zeros(layers, batch, hidden)
            state = (zeros, zeros)
        names = ("cell", "hidden", "input_gate", "forget_gate", "output_gate")
        # written step by step into place: no list of small tensors per step and unit
        traced = {name: self.head.weight.new_empty(seq, batch, layers, hidden) for name in names}
        layer_input = self.embed(tokens.t())  # (seq, batch, embedding)
        for k in range(layers):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")
            bias = getattr(self.rnn, f"bias_ih_l{k}") + getattr(self.rnn, f"bias_hh_l{k}")  # (4h,)
            x_proj = torch.addmm(bias, layer_input.reshape(seq * batch, -1), w_ih.t()).view(seq, batch, -1)
            h, c = state[0][k], state[1][k]  # (batch, hidden)
            for t, x_t in enumerate(x_proj.unbind(0)):  # (batch, 4h): i, f, g, o
                i, f, g, o = torch.addmm(x_t, h, w_hh.t()).chunk(4, 1)  # each (batch, hidden)
                i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                c = f * c + i * g
                squashed = c.tanh()
                h = o * squashed
                for name, value in zip(names, (squashed, h, i, f, o), strict=True):
                    traced[name][t, :, k] = value
            layer_input = traced["hidden"][:, :, k].clone()  # (seq, batch, hidden); later writes leave it be
        return traced  # each (seq, batch, layers, hidden)


def build(config: CharLSTMConfig, *, vocab_size: int) -> CharLSTM:
    return CharLSTM(vocab_size, config)


def count_parameters(config: CharLSTMConfig, *, vocab_size: int) -> int:
    """V*e + sum over layers of 4h(in + h + 2) + V(h + 1)  (torch.nn.LSTM keeps two biases)."""
    h, e = config.hidden_size, config.embedding_size
    lstm = sum(4 * h * ((e if k == 0 else h) + h + 2) for k in range(config.layers))
    return vocab_size * e + lstm + vocab_size * (h + 1)


MODEL = ModelDef(
    name="charlstm",
    description="Character LSTM language model (backend torch or scratch, one weight layout)",
    kinds=("char-lm",),
    config=CharLSTMConfig,
    build=build,
    count_parameters=count_parameters,
)
