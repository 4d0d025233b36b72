"""Graph convolutional network written densely from its equation (Kipf & Welling, 2017).

    Â = D̃^-1/2 (A + I) D̃^-1/2          D̃_ii = Σ_j (A + I)_ij
    H^(k+1) = σ(Â H^(k) W^(k) + b^(k))  σ = ReLU between layers, none after the last

Â is built once per graph as a dense N×N tensor from the edge list (self-loops added, duplicate edges
counted, messages flowing source -> target as in torch-geometric), so memory grows as N²: 4N² bytes
for Â alone. Each layer keeps torch-geometric ``GCNConv``'s parameter layout (``lin.weight`` of shape
(out, in) and ``bias``), so weights copy between ``gcn-dense`` and ``gcn-pyg`` as they are.

Shapes:
    x: (nodes, features); edge_index: (2, edges) int64 -> logits: (nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.registry import ModelDef


@dataclass
class GCNConfig:
    """Depth, width and dropout of a GCN (features and classes come from the graph)."""

    hidden_size: int = field(default=16, metadata={"gt": 0})
    layers: int = field(default=2, metadata={"gt": 0})
    dropout: float = field(default=0.5, metadata={"ge": 0, "lt": 1})


def dense_adjacency_bytes(num_nodes: int) -> int:
    """Bytes to budget for Â: the N×N float32 matrix (built in place) and as much again for the
    products and gradients around it."""
    return 2 * 4 * num_nodes * num_nodes


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Â = D^-1/2 (A + I) D^-1/2 as a dense (nodes, nodes) tensor; row i aggregates into node i."""
    a = torch.zeros(num_nodes, num_nodes, device=edge_index.device, dtype=dtype)  # (nodes, nodes)
    ones = torch.ones(edge_index.shape[1], device=edge_index.device, dtype=dtype)
    a.index_put_((edge_index[1], edge_index[0]), ones, accumulate=True)  # a[target, source]
    a.fill_diagonal_(1.0)  # self-loops: every node keeps its own features
    d = a.sum(dim=1).pow(-0.5)  # (nodes,)
    return a.mul_(d[:, None]).mul_(d[None, :])  # in place: one N×N tensor at a time


def gcn_layer_sizes(num_features: int, num_classes: int, config: GCNConfig) -> list[tuple[int, int]]:
    sizes = [num_features] + [config.hidden_size] * (config.layers - 1) + [num_classes]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def run_layers(
    convs: nn.ModuleList, x: torch.Tensor, graph: torch.Tensor, dropout: float, training: bool
) -> torch.Tensor:
    """Kipf & Welling's stack: dropout before every layer, ReLU between layers, logits from the last.
    ``graph`` is what each layer takes besides the features (Â for the dense layers, edge_index for
    GCNConv)."""
    for k, conv in enumerate(convs):
        x = F.dropout(x, dropout, training)
        x = conv(x, graph)  # (nodes, width)
        if k < len(convs) - 1:
            x = F.relu(x)
    return x  # (nodes, classes)


class DenseGCNLayer(nn.Module):
    """One layer Â H W + b, with GCNConv's parameter names (``lin.weight`` (out, in), ``bias``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.lin.weight)  # glorot, as GCNConv

    def forward(self, x: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        return a_hat @ self.lin(x) + self.bias  # (nodes, out)


class DenseGCN(nn.Module):
    """A stack of dense GCN layers with ReLU and dropout between them (dropout also on the input)."""

    def __init__(self, num_features: int, num_classes: int, config: GCNConfig) -> None:
        super().__init__()
        self.dropout = config.dropout
        self.convs = nn.ModuleList(DenseGCNLayer(i, o) for i, o in gcn_layer_sizes(num_features, num_classes, config))
        self._cached: tuple[tuple, torch.Tensor] | None = None

    def adjacency(self, edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype) -> torch.Tensor:
        """Â for this graph, built on first use and kept while the same edge tensor comes back."""
        key = (edge_index.data_ptr(), tuple(edge_index.shape), num_nodes, edge_index.device, dtype)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, normalized_adjacency(edge_index, num_nodes, dtype))
        return self._cached[1]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        a_hat = self.adjacency(edge_index, x.shape[0], x.dtype)  # (nodes, nodes)
        return run_layers(self.convs, x, a_hat, self.dropout, self.training)  # (nodes, classes)


def build(config: GCNConfig, *, num_features: int, num_classes: int) -> DenseGCN:
    return DenseGCN(num_features, num_classes, config)


def count_parameters(config: GCNConfig, *, num_features: int, num_classes: int) -> int:
    return sum(i * o + o for i, o in gcn_layer_sizes(num_features, num_classes, config))


MODEL = ModelDef(
    name="gcn-dense",
    description="GCN from its equation with a dense normalised adjacency (no torch-geometric)",
    kinds=("node-classification",),
    config=GCNConfig,
    build=build,
    count_parameters=count_parameters,
    memory_bytes=dense_adjacency_bytes,
)
