"""Node classification on one graph, full batch: the task behind ``rnnkit train`` for graph models and
behind every run of ``rnnkit gcn``; and the memory a graph model needs, estimated before it is built.

Every training step is one epoch: the model sees the whole graph and the loss is the cross-entropy
on the training nodes. An evaluation scores the validation and test nodes with dropout off and keeps
the test accuracy at the best validation accuracy so far (Kipf & Welling's protocol: the run reports
``test_accuracy_at_best_val``). The graph itself is fixed by ``graph_seed`` (synthetic graphs), not
by the run's seed, so seeds vary only the model's initialisation and dropout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rnnkit.data.datasets import Dataset
from rnnkit.data.graphs import load_graph
from rnnkit.errors import UsageError
from rnnkit.memory import BYTES_PER_PARAMETER, gb, memory_budget
from rnnkit.task import EvalBudget, Task


@dataclass
class GraphConfig:
    """The graph task: which graph, and the size of a synthetic one."""

    dataset: Dataset = "cora"
    data_dir: str = ""  # where Planetoid raw files are looked for (else $RNNKIT_DATA_DIR, else downloaded)
    nodes: int = field(default=1000, metadata={"gt": 0, "le": 1_000_000_000})  # synthetic graphs
    degree: float = field(default=10.0, metadata={"gt": 0, "le": 100_000})
    classes: int = field(default=4, metadata={"ge": 2, "le": 1_000})  # the generator loops over classes
    features: int = field(default=32, metadata={"gt": 0, "le": 1_000_000})
    graph_seed: int = field(default=0, metadata={"ge": 0, "lt": 2**63})  # what torch.manual_seed takes

    def synthetic_edges(self) -> int:
        """Edges (both directions) of the synthetic graph this config describes, before it exists."""
        return 2 * int(self.nodes * self.degree / 2)


def graph_bytes(nodes: int, edges: int, features: int) -> int:
    """A graph in memory: features (float32), edge_index (2 x int64 per edge), labels and three masks."""
    return 4 * nodes * features + 16 * edges + 8 * nodes + 3 * nodes


@dataclass
class MemoryEstimate:
    """Bytes one graph model needs to train on one graph, by part."""

    graph: float  # the graph twice: where it is built and where it trains (covers generation)
    parameters: float  # weights, gradients and Adam's two moments
    activations: float  # per layer: node-sized tensors, and edge-sized messages for message passing
    adjacency: float  # what the model declares itself (``memory_bytes``: gcn-dense's N x N matrix)

    PARTS: ClassVar[tuple[str, ...]] = ("graph", "parameters", "activations", "adjacency")

    @property
    def total(self) -> float:
        return self.graph + self.parameters + self.activations + self.adjacency

    def largest(self) -> str:
        return max(self.PARTS, key=lambda part: getattr(self, part))

    def describe(self, nodes: int, edges: int) -> str:
        """ "needs about ..." with the part that dominates, for an error message."""
        if self.largest() == "adjacency":
            return (
                f"needs about {gb(self.adjacency)} for a dense {nodes:,}x{nodes:,} adjacency "
                f"({gb(self.total)} in all with the graph, parameters and activations)"
            )
        return (
            f"needs about {gb(self.total)} on {nodes:,} nodes and {edges:,} edges (graph {gb(self.graph)}, "
            f"parameters {gb(self.parameters)}, activations {gb(self.activations)})"
        )


def estimate_memory(
    model_def: Any, config: Any, *, nodes: int, edges: int, features: int, classes: int
) -> MemoryEstimate:
    """The memory ``model_def`` with ``config`` needs to train on a graph of this size (nothing allocated).

    Activations, per layer of width in -> out, over the forward and backward passes: the dropped-out
    input, its mask, the transformed, aggregated and activated outputs (nodes x (in + 3 out) floats),
    and for models that declare no ``memory_bytes`` (message passing, like GCNConv) the messages along
    every edge and self-loop ((edges + nodes) x out floats, gathered and weighted); twice that for the
    gradients. Depth and width come from the config's ``layers`` and ``hidden_size`` (a model without
    them is counted as two layers of 16). Parameters from the model's formula (or a build on the meta
    device)."""
    try:
        parameters = int(model_def.parameter_count(config, num_features=features, num_classes=classes))
    except Exception:  # noqa: BLE001 - an estimate must never be what fails a run
        parameters = 0
    values = dataclasses.asdict(config)
    hidden, layers = int(values.get("hidden_size", 16)), int(values.get("layers", 2))
    sizes = [features] + [hidden] * (layers - 1) + [classes]
    activations = 0
    for width_in, width_out in zip(sizes[:-1], sizes[1:], strict=True):
        activations += 4 * nodes * (width_in + 3 * width_out) + nodes * width_in
        if model_def.memory_bytes is None:
            activations += 2 * 4 * (edges + nodes) * width_out
    adjacency = model_def.memory_bytes(nodes) if model_def.memory_bytes is not None else 0
    return MemoryEstimate(
        graph=2 * graph_bytes(nodes, edges, features),
        parameters=BYTES_PER_PARAMETER * parameters,
        activations=2 * activations,
        adjacency=adjacency,
    )


class GraphTask(Task):
    """Full-batch node classification: train on the training nodes, pick by validation, report test."""

    name = "graph"
    kind = "node-classification"
    config_type = GraphConfig
    #: Kipf & Welling's setup: Adam, 200 epochs, every one evaluated; no clipping, no early stop on
    #: the training accuracy (it reaches 1.0 long before the validation accuracy peaks).
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adam",
        "lr": 0.01,
        "weight_decay": 5e-4,
        "batch_size": 1,
        "max_steps": 200,
        "max_norm": 0.0,
        "eval_every": 1,
        "log_every": 10,
        "early_stop": {"threshold": 0.0},
        "plateau": {"patience": 0},
    }

    def __init__(self, config: GraphConfig, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        if config.dataset == "synthetic":  # its size is known before it is generated
            need = 2 * graph_bytes(config.nodes, config.synthetic_edges(), config.features)
            budget = memory_budget(None, device)
            if need > budget:
                raise UsageError(
                    f"a synthetic graph of {config.nodes:,} nodes needs about {gb(need)} to generate, over "
                    f"half the available memory ({gb(budget)}); lower task.nodes, task.degree or task.features"
                )
        self.graph = load_graph(
            config.dataset,
            data_dir=config.data_dir or None,
            nodes=config.nodes,
            degree=config.degree,
            classes=config.classes,
            features=config.features,
            seed=config.graph_seed,
        ).to(device)
        self.train_labels = self.graph.y[self.graph.train_mask]  # (train nodes,): the same every step
        self.best_val = -1.0
        self.test_at_best = 0.0

    @property
    def dims(self) -> dict[str, int]:
        return {"num_features": self.graph.num_features, "num_classes": self.graph.num_classes}

    def meta(self) -> dict[str, Any]:
        """The graph's size, saved with every checkpoint."""
        g = self.graph
        return {"nodes": g.num_nodes, "edges": int(g.edge_index.shape[1]), "classes": g.num_classes}

    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole training set, whatever ``batch_size``: (train mask (nodes,), its labels (train,))."""
        return self.graph.train_mask, self.train_labels

    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the nodes of mask ``x`` from one forward pass over the whole graph."""
        logits = model(self.graph.x, self.graph.edge_index)[x]  # (masked nodes, classes)
        return F.cross_entropy(logits, y), (logits.argmax(dim=1) == y).sum()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        """Validation loss and accuracy, test accuracy, and the test accuracy at the best validation."""
        g = self.graph
        was_training = model.training
        model.eval()
        logits = model(g.x, g.edge_index)  # (nodes, classes)
        model.train(was_training)
        pred = logits.argmax(dim=1)  # (nodes,)
        val = (pred[g.val_mask] == g.y[g.val_mask]).float().mean().item()
        test = (pred[g.test_mask] == g.y[g.test_mask]).float().mean().item()
        if val > self.best_val:
            self.best_val, self.test_at_best = val, test
        return {
            "loss": F.cross_entropy(logits[g.val_mask], g.y[g.val_mask]).item(),
            "accuracy": val,
            "test_accuracy": test,
            "best_val_accuracy": self.best_val,
            "test_accuracy_at_best_val": self.test_at_best,
        }

    def state_dict(self) -> dict[str, Any]:
        """No random generator of its own (dropout draws from torch's): the best validation so far."""
        return {"best_val": self.best_val, "test_at_best": self.test_at_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_val = float(state["best_val"])
        self.test_at_best = float(state["test_at_best"])

    def check_memory(self, model_def: Any, model_config: Any, batch_size: int, budget_bytes: float | None) -> int:
        """Refuse a model whose estimate for this graph (``estimate_memory``) is over the budget."""
        g = self.graph
        edges = int(g.edge_index.shape[1])
        estimate = estimate_memory(
            model_def, model_config, nodes=g.num_nodes, edges=edges, features=g.num_features, classes=g.num_classes
        )
        budget = budget_bytes if budget_bytes else memory_budget(None, self.device)
        if estimate.total > budget:
            raise UsageError(
                f"model {model_def.name} {estimate.describe(g.num_nodes, edges)}, over the memory budget of "
                f"{gb(budget)} (train.max_memory_gb; default: half the available memory)"
            )
        return int(estimate.total)
