"""GraphSAGE (Hamilton et al., 2017) on torch-geometric's ``SAGEConv``, as an rnnkit plugin.

    h_i' = W_1 h_i + W_2 mean_{j in N(i)} h_j + b

Layers, dropout and ReLU as in rnnkit's GCNs, so ``rnnkit gcn --impl dense,pyg,graphsage`` compares
like with like. torch-geometric is imported when a model is built, not when the plugin is listed.

Shapes:
    x: (nodes, features); edge_index: (2, edges) int64 -> logits: (nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.models.gcn_dense import gcn_layer_sizes, run_layers
from rnnkit.registry import ModelDef


@dataclass
class GraphSAGEConfig:
    hidden_size: int = field(default=16, metadata={"gt": 0})
    layers: int = field(default=2, metadata={"gt": 0})
    dropout: float = field(default=0.5, metadata={"ge": 0, "lt": 1})


class GraphSAGE(nn.Module):
    def __init__(self, num_features: int, num_classes: int, config: GraphSAGEConfig) -> None:
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.dropout = config.dropout
        self.convs = nn.ModuleList(SAGEConv(i, o) for i, o in gcn_layer_sizes(num_features, num_classes, config))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return run_layers(self.convs, x, edge_index, self.dropout, self.training)  # (nodes, classes)


def build(config: GraphSAGEConfig, *, num_features: int, num_classes: int) -> GraphSAGE:
    return GraphSAGE(num_features, num_classes, config)


def count_parameters(config: GraphSAGEConfig, *, num_features: int, num_classes: int) -> int:
    """Each SAGEConv: a neighbour weight with bias and a root weight without: 2·in·out + out."""
    return sum(2 * i * o + o for i, o in gcn_layer_sizes(num_features, num_classes, config))


MODEL = ModelDef(
    name="graphsage",
    description="GraphSAGE on torch_geometric.nn.SAGEConv (plugin rnnkit-graphsage)",
    kinds=("node-classification",),
    config=GraphSAGEConfig,
    build=build,
    count_parameters=count_parameters,
)
