"""GCRN: an LSTM whose input and recurrent products are graph convolutions (Seo et al., 2018, model 2).

Seo, Defferrard, Vandergheynst and Bresson, "Structured Sequence Modeling with Graph Convolutional
Recurrent Networks" (ICONIP 2018), model 2: the convolutional LSTM with every matrix product replaced
by a graph convolution *G, so each node's cell sees its neighbourhood at every step:

    i_t = σ(W_xi *G x_t + W_hi *G h_{t-1} + w_ci ⊙ c_{t-1} + b_i)
    f_t = σ(W_xf *G x_t + W_hf *G h_{t-1} + w_cf ⊙ c_{t-1} + b_f)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_xc *G x_t + W_hc *G h_{t-1} + b_c)
    o_t = σ(W_xo *G x_t + W_ho *G h_{t-1} + w_co ⊙ c_t + b_o)
    h_t = o_t ⊙ tanh(c_t)                                  h_0 = c_0 = 0
    logits = W_p h_T + b_p                                  (every node's next state)

The paper's *G is a Chebyshev filter of order K, a polynomial Σ_{j<=K} θ_j T_j(L̃) of the graph's
Laplacian whose T_0 = I term keeps a node's own signal apart from its neighbours'. Here it is built
on torch-geometric's ``GCNConv`` (Kipf and Welling's renormalised Â = D̃^-1/2 (A + I) D̃^-1/2) applied
``hops`` = k times, every power kept, which spans the polynomials of order k in Â:

    z^(0) = z_t = [x_t, h_{t-1}]        z^(j) = Â z^(j-1) W_j   (GCNConv, j = 1 ... k)
    [z_i, z_f, z_c, z_o] = W_g [z^(0), z^(1), ..., z^(k)] + b   = Σ_j Â^j z_t W_j' + b

One GCNConv alone would blend a node with its neighbours (Â has no separate identity term), so a
node could not tell its own state from a neighbour's; z^(0) is the T_0 term. Because *G is linear,
the x and h products of all four gates are one filter of the concatenation z_t. Each GCNConv keeps
z's width (features + hidden) and W_g widens to the four gates afterwards (torch.nn.LSTM's order i,
f, c, o), so the messages along the edges are features + hidden wide rather than 4 hidden: what a
step costs is mostly that message passing. The gate biases b sit in W_g (the forget gate's starts at
``forget_bias``); the peephole weights w_c are one per channel, shared by all nodes, so one model runs
on a graph of any size. A node's logits depend on the nodes within k x steps hops of it and on no
other (tests/test_gcrn.py checks both sides).

Shapes:
    x: (batch, steps, nodes, features); edge_index: (2, edges) int64 -> logits: (batch, nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.registry import ModelDef


@dataclass
class GCRNConfig:
    """Width, graph-convolution hops per step, and the forget gate's starting bias."""

    hidden_size: int = field(default=32, metadata={"gt": 0, "le": 100_000})
    hops: int = field(default=1, metadata={"ge": 1, "le": 64})  # k: graph convolutions per step
    forget_bias: float = 1.0


class GCRN(nn.Module):
    """Seo et al.'s graph convolutional LSTM (model 2) on GCNConv, with a linear read-out of h_T."""

    def __init__(self, num_features: int, num_classes: int, config: GCRNConfig) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv  # torch-geometric only once a graph model is built

        hidden = config.hidden_size
        width = num_features + hidden
        self.hidden_size = hidden
        self.convs = nn.ModuleList(GCNConv(width, width, bias=False) for _ in range(config.hops))  # W_1 ... W_k
        self.gates = nn.Linear((config.hops + 1) * width, 4 * hidden)  # W_g and b: (i, f, c, o)
        self.peephole = nn.Parameter(torch.empty(3, hidden))  # w_ci, w_cf, w_co
        self.head = nn.Linear(hidden, num_classes)
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden : 2 * hidden].fill_(config.forget_bias)
            nn.init.uniform_(self.peephole, -(hidden**-0.5), hidden**-0.5)

    def graph_conv(self, z: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The gates' pre-activations from z_t = [x_t, h_{t-1}]: (batch, nodes, features + hidden) ->
        (batch, nodes, 4 hidden)."""
        powers = [z]  # z^(0), z^(1), ...: (batch, nodes, features + hidden) each
        for conv in self.convs:
            powers.append(conv(powers[-1], edge_index))  # one hop; GCNConv propagates along the node axis (-2)
        return self.gates(torch.cat(powers, dim=-1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        batch, _, nodes, _ = x.shape  # (batch, steps, nodes, features)
        hidden = self.hidden_size
        h = x.new_zeros(batch, nodes, hidden)  # (batch, nodes, hidden)
        c = x.new_zeros(batch, nodes, hidden)
        w_ci, w_cf, w_co = self.peephole.unbind(0)  # (hidden,) each
        for x_t in x.unbind(1):  # (batch, nodes, features)
            gates = self.graph_conv(torch.cat([x_t, h], dim=-1), edge_index)  # (batch, nodes, 4 hidden)
            z_i, z_f, z_c, z_o = gates.split(hidden, dim=-1)
            i = torch.sigmoid(z_i + w_ci * c)
            f = torch.sigmoid(z_f + w_cf * c)
            c = f * c + i * torch.tanh(z_c)
            o = torch.sigmoid(z_o + w_co * c)
            h = o * torch.tanh(c)
        return self.head(h)  # (batch, nodes, classes)


def build(config: GCRNConfig, *, num_features: int, num_classes: int) -> GCRN:
    return GCRN(num_features, num_classes, config)


def count_parameters(config: GCRNConfig, *, num_features: int, num_classes: int) -> int:
    """k (f + h)² for the convolutions, ((k + 1)(f + h) + 1) 4h for the gates, 3h peepholes, (h + 1) c read-out."""
    h, k = config.hidden_size, config.hops
    width = num_features + h
    return k * width * width + ((k + 1) * width + 1) * 4 * h + 3 * h + num_classes * (h + 1)


MODEL = ModelDef(
    name="gcrn",
    description="Graph convolutional LSTM (Seo et al. 2018, model 2) on GCNConv, hops per step",
    kinds=("node-sequence-classification",),
    config=GCRNConfig,
    build=build,
    count_parameters=count_parameters,
)
