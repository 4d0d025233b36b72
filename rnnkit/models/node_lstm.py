"""node-lstm: one LSTM run on every node's own sequence, blind to the graph (a baseline for GCRN).

Each node's feature sequence goes through the same torch.nn.LSTM on its own, as if the graph had no
edges; the last hidden state gives the node's logits:

    (h_t, c_t) = LSTM(x_t, h_{t-1}, c_{t-1})      per node, weights shared by all nodes
    logits = W_p h_T + b_p

It sees how long a node has been in its state but never its neighbours, so it can learn when a
node recovers but not when it gets infected. ``edge_index`` is taken, to keep the call of its model
kind, and ignored.

Shapes:
    x: (batch, steps, nodes, features); edge_index: (2, edges), unused -> logits: (batch, nodes, classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.registry import ModelDef


@dataclass
class NodeLSTMConfig:
    """The LSTM's width (features and classes come from the task)."""

    hidden_size: int = field(default=32, metadata={"gt": 0, "le": 100_000})


class NodeLSTM(nn.Module):
    """torch.nn.LSTM over each node's sequence, then a linear read-out of its last hidden state."""

    def __init__(self, num_features: int, num_classes: int, config: NodeLSTMConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(num_features, config.hidden_size, batch_first=True)
        self.head = nn.Linear(config.hidden_size, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        batch, steps, nodes, features = x.shape
        per_node = x.permute(0, 2, 1, 3).reshape(batch * nodes, steps, features)  # (batch nodes, steps, features)
        _, (h, _) = self.lstm(per_node)  # h: (1, batch nodes, hidden)
        return self.head(h[-1]).view(batch, nodes, -1)  # (batch, nodes, classes)


def build(config: NodeLSTMConfig, *, num_features: int, num_classes: int) -> NodeLSTM:
    return NodeLSTM(num_features, num_classes, config)


def count_parameters(config: NodeLSTMConfig, *, num_features: int, num_classes: int) -> int:
    """4h (f + h + 2) for torch.nn.LSTM (two bias vectors), h c + c for the head."""
    h = config.hidden_size
    return 4 * h * (num_features + h + 2) + num_classes * (h + 1)


MODEL = ModelDef(
    name="node-lstm",
    description="Baseline for gcrn: an LSTM on each node's own sequence, ignoring the graph",
    kinds=("node-sequence-classification",),
    config=NodeLSTMConfig,
    build=build,
    count_parameters=count_parameters,
)
