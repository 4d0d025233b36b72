"""The same GCN on torch-geometric's ``GCNConv`` (sparse message passing), with the parameter layout
of ``gcn-dense``. ``cached=True`` computes the normalised adjacency once (transductive training on
one graph, as in Kipf & Welling).

Shapes:
    x: (nodes, features); edge_index: (2, edges) int64 -> logits: (nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnkit.models.gcn_dense import GCNConfig, count_parameters, gcn_layer_sizes, run_layers
from rnnkit.registry import ModelDef


@dataclass
class PygGCNConfig(GCNConfig):
    """GCNConfig plus whether GCNConv caches the normalised adjacency."""

    cached: bool = True


class PygGCN(nn.Module):
    def __init__(self, num_features: int, num_classes: int, config: PygGCNConfig) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.dropout = config.dropout
        self.convs = nn.ModuleList(
            GCNConv(i, o, cached=config.cached) for i, o in gcn_layer_sizes(num_features, num_classes, config)
        )

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return run_layers(self.convs, x, edge_index, self.dropout, self.training)  # (nodes, classes)


def build(config: PygGCNConfig, *, num_features: int, num_classes: int) -> PygGCN:
    return PygGCN(num_features, num_classes, config)


MODEL = ModelDef(
    name="gcn-pyg",
    description="The same GCN on torch_geometric.nn.GCNConv",
    kinds=("node-classification",),
    config=PygGCNConfig,
    build=build,
    count_parameters=count_parameters,
)
