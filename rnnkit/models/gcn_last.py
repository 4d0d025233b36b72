"""gcn-last: a GCN that sees only the last snapshot of a sequence (a baseline for GCRN).

Kipf and Welling's GCN (``gcn-pyg``: GCNConv layers, ReLU between them) applied to the last step's
node features alone:

    H^(0) = x_T        H^(l+1) = σ(Â H^(l) W^(l) + b^(l))        logits = H^(layers)

It sees every node's neighbourhood (``layers`` hops) as it is now but nothing of how it got there:
not how long a node or its neighbours have been infected.

Shapes:
    x: (batch, steps, nodes, features); edge_index: (2, edges) int64 -> logits: (batch, nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.models.gcn_dense import GCNConfig
from rnnkit.models.gcn_dense import count_parameters as gcn_parameters
from rnnkit.models.gcn_pyg import PygGCN, PygGCNConfig
from rnnkit.registry import ModelDef


@dataclass
class GCNLastConfig(GCNConfig):
    """The GCN's depth, width and dropout, with defaults for small epidemic graphs."""

    hidden_size: int = field(default=32, metadata={"gt": 0, "le": 100_000})
    layers: int = field(default=2, metadata={"gt": 0, "le": 64})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})


class GCNLast(nn.Module):
    """``gcn-pyg``'s network on the last snapshot; the batch rides along the node axis of GCNConv."""

    def __init__(self, num_features: int, num_classes: int, config: GCNLastConfig) -> None:
        super().__init__()
        values = {"hidden_size": config.hidden_size, "layers": config.layers, "dropout": config.dropout}
        self.gcn = PygGCN(num_features, num_classes, PygGCNConfig(cached=False, **values))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.gcn(x[:, -1], edge_index)  # (batch, nodes, features) -> (batch, nodes, classes)


def build(config: GCNLastConfig, *, num_features: int, num_classes: int) -> GCNLast:
    return GCNLast(num_features, num_classes, config)


def count_parameters(config: GCNLastConfig, *, num_features: int, num_classes: int) -> int:
    """The GCN's: a weight and a bias per layer."""
    return gcn_parameters(config, num_features=num_features, num_classes=num_classes)


MODEL = ModelDef(
    name="gcn-last",
    description="Baseline for gcrn: a GCN on the last snapshot only",
    kinds=("node-sequence-classification",),
    config=GCNLastConfig,
    build=build,
    count_parameters=count_parameters,
)
