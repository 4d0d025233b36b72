"""Epidemics on a fixed graph as sequences of node states: the task behind GCRN and its baselines.

Each sequence is one run of a discrete-time epidemic on one graph (a seeded stochastic block model,
Cora's citation graph, or any graph of ``rnnkit.data.graphs``). Every node is susceptible (S),
infected (I) or, with ``immune_steps`` > 0, recovered (R); a node carries its age, the steps it has
been in its state (1 on the step it entered it). From step t to t + 1:

    contagious_j(t) = [state_j(t) = I  and  age_j(t) <= contagious_steps]
    P(S -> I)       = 1 - (1 - infection) ** (number of contagious neighbours j of i)
    I -> S or R     exactly when age_i(t) = infectious_steps    (S: an SIS process, immune_steps = 0)
    R -> S          exactly when age_i(t) = immune_steps        (immunity wanes; SIR: longer than a sequence)

So whether a node is infected next depends on its neighbours' states *and* on how long they have been
infected (only the recently infected are contagious), and whether it recovers on how long it has been
infected itself: neither a snapshot of the graph nor a node's own history tells its next state, both
together do. At step 0 a fraction ``initial_infected`` of the nodes is infected, with ages drawn
uniformly from 1..infectious_steps.

A sample is ``snapshots`` = T observed steps, every node's state one-hot, and the target is every
node's state at the next step: x (T, nodes, states) float, y (nodes,) int64 (0 S, 1 I, 2 R), with two
states (S, I) for SIS and three otherwise. The snapshots are steps 0 ... T - 1, or, with
``target_step``, the T steps before it (so histories of different lengths end on one target). The
sequences are made once, up front, from ``data_seed`` (not the run's seed, so every model and seed of
a comparison sees the same data), and split by sequence: training batches draw from the training
sequences only, and every evaluation scores all the validation and test sequences. Each split has its
own generator, so changing the number of training sequences leaves the validation and test sequences
as they were. The size (nodes x (T + 1) x sequences node states, one byte each) is checked before
anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.data.datasets import Dataset
from rnnkit.data.graphs import load_graph, stochastic_block_model
from rnnkit.errors import UsageError
from rnnkit.memory import gb, memory_budget
from rnnkit.task import EvalBudget, Task

#: The node states, in the order of the one-hot features and of the classes.
STATES = ("S", "I", "R")
SUSCEPTIBLE, INFECTED, RECOVERED = 0, 1, 2
#: The most node states (int8, one byte each) the task holds: 200 MB, far beyond a run of minutes.
MAX_NODE_STATES = 200_000_000
#: Sequences simulated together: the per-edge work of one step stays under ~SIM_CHUNK_ELEMENTS floats.
SIM_CHUNK_ELEMENTS = 4_000_000
SPLITS = ("train", "val", "test")


@dataclass
class EpidemicConfig:
    """The graph, the epidemic and how many sequences of it each split holds.

    The defaults make a task on which a small run learns in seconds on a CPU: an SIS epidemic on 200
    nodes in 4 communities (average degree 4), 8 snapshots, an infection lasting 3 steps of which
    only the first is contagious, and 512 / 128 / 256 training / validation / test sequences.
    """

    dataset: Dataset = "synthetic"
    data_dir: str = ""  # where Planetoid raw files are looked for (else $RNNKIT_DATA_DIR, else downloaded)
    nodes: int = field(default=200, metadata={"ge": 8, "le": 10_000_000})  # synthetic graphs
    degree: float = field(default=4.0, metadata={"gt": 0, "le": 1_000})
    blocks: int = field(default=4, metadata={"ge": 2, "le": 1_000})  # communities of the synthetic graph
    graph_seed: int = field(default=0, metadata={"ge": 0, "lt": 2**63})
    snapshots: int = field(default=8, metadata={"ge": 1, "le": 1_000})  # observed steps T per sequence
    # the step whose states are the target, the snapshots being the T steps before it; 0: T, so the
    # snapshots are steps 0 ... T - 1. Fixing it compares histories of different lengths on one target.
    target_step: int = field(default=0, metadata={"ge": 0, "le": 10_000})
    infection: float = field(default=0.8, metadata={"gt": 0, "le": 1})  # per contagious neighbour and step
    infectious_steps: int = field(default=3, metadata={"ge": 1, "le": 1_000})
    contagious_steps: int = field(default=1, metadata={"ge": 1, "le": 1_000})  # at most infectious_steps
    immune_steps: int = field(default=0, metadata={"ge": 0, "le": 1_000_000})  # 0: SIS, no R state
    initial_infected: float = field(default=0.1, metadata={"gt": 0, "le": 1})
    train_sequences: int = field(default=512, metadata={"ge": 1, "le": 10_000_000})
    val_sequences: int = field(default=128, metadata={"ge": 1, "le": 10_000_000})
    test_sequences: int = field(default=256, metadata={"ge": 1, "le": 10_000_000})
    data_seed: int = field(default=0, metadata={"ge": 0, "lt": 2**63})

    def sequences(self) -> int:
        """Sequences of all three splits."""
        return self.train_sequences + self.val_sequences + self.test_sequences

    def warmup(self) -> int:
        """Steps simulated before the first snapshot."""
        return self.target_step - self.snapshots if self.target_step else 0

    def states(self) -> int:
        """Node states in play: S and I (SIS), or S, I and R."""
        return 2 if self.immune_steps == 0 else 3


def split_generator(data_seed: int, split: int) -> torch.Generator:
    """The generator of one split: seeded from (data_seed, split) through numpy's SeedSequence, so the
    splits' streams are independent and each depends on nothing but its own seed."""
    seed = int(np.random.SeedSequence([data_seed, split]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def simulate_epidemic(
    edge_index: torch.Tensor,
    num_nodes: int,
    sequences: int,
    steps: int,
    *,
    infection: float,
    infectious_steps: int,
    contagious_steps: int,
    immune_steps: int,
    initial_infected: float,
    generator: torch.Generator,
    warmup: int = 0,
) -> torch.Tensor:
    """``sequences`` runs of the process of the module docstring: the snapshots of steps ``warmup`` to
    ``warmup + steps`` (the steps before are simulated, not kept).

    ``edge_index`` (2, edges) lists every edge in both directions, each once. Returns the node states
    (sequences, steps + 1, nodes) int8 (0 S, 1 I, 2 R). Runs on the CPU, ``SIM_CHUNK_ELEMENTS`` at a
    time; the result depends only on the arguments (the generator's state included)."""
    src, dst = edge_index[0].cpu(), edge_index[1].cpu()  # (edges,): j -> i, a contact of i with j
    out = torch.empty(sequences, steps + 1, num_nodes, dtype=torch.int8)
    chunk = max(1, SIM_CHUNK_ELEMENTS // max(len(src) + num_nodes, 1))
    escape = torch.tensor(1.0 - infection, dtype=torch.float64)  # chance of no infection per contact
    after_infection = RECOVERED if immune_steps > 0 else SUSCEPTIBLE
    for start in range(0, sequences, chunk):
        n = min(chunk, sequences - start)
        infected = torch.rand(n, num_nodes, generator=generator) < initial_infected  # (n, nodes)
        state = torch.where(infected, INFECTED, SUSCEPTIBLE).to(torch.int8)  # (n, nodes)
        ages = torch.randint(1, infectious_steps + 1, (n, num_nodes), generator=generator)
        age = torch.where(infected, ages, 0)  # (n, nodes) int64: steps in the current state; 0 for S
        if warmup == 0:
            out[start : start + n, 0] = state
        for t in range(1, warmup + steps + 1):
            contagious = ((state == INFECTED) & (age <= contagious_steps)).double()  # (n, nodes)
            contacts = torch.zeros(n, num_nodes, dtype=torch.float64)
            contacts.index_add_(1, dst, contagious[:, src])  # (n, nodes): contagious neighbours
            p_infect = 1.0 - escape.pow(contacts)  # (n, nodes)
            draw = torch.rand(n, num_nodes, generator=generator, dtype=torch.float64)
            newly = (state == SUSCEPTIBLE) & (draw < p_infect)
            recover = (state == INFECTED) & (age >= infectious_steps)
            lose = (state == RECOVERED) & (age >= immune_steps)  # immunity wanes
            changed = newly | recover | lose
            state = state.clone()
            state[newly] = INFECTED
            state[recover] = after_infection
            state[lose] = SUSCEPTIBLE
            age = torch.where(changed, (state != SUSCEPTIBLE).long(), torch.where(state != SUSCEPTIBLE, age + 1, 0))
            if t >= warmup:
                out[start : start + n, t - warmup] = state
    return out


def _undirected_once(edge_index: torch.Tensor) -> torch.Tensor:
    """Every edge in both directions, each listed once, without self-loops: (2, edges) int64."""
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)  # (2, 2 edges)
    both = both[:, both[0] != both[1]]
    return torch.unique(both, dim=1)


class EpidemicTask(Task):
    """Every node's next state from T snapshots of an epidemic; held-out sequences score it."""

    name = "epidemic"
    kind = "node-sequence-classification"
    config_type = EpidemicConfig
    #: Adam on batches of 8 sequences, evaluated every 50 steps; no early stop on the training
    #: accuracy (an epidemic is random: no model reaches 0.995 on it) and no plateau rule.
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 8,
        "max_steps": 300,
        "max_norm": 1.0,
        "eval_every": 50,
        "log_every": 10,
        "early_stop": {"threshold": 0.0},
        "plateau": {"patience": 0},
    }

    def __init__(self, config: EpidemicConfig, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        if config.contagious_steps > config.infectious_steps:
            raise UsageError(
                f"task.contagious_steps ({config.contagious_steps}) must be at most task.infectious_steps "
                f"({config.infectious_steps}): a node is contagious only while it is infected"
            )
        if config.target_step and config.target_step < config.snapshots:
            raise UsageError(
                f"task.target_step ({config.target_step}) must be at least task.snapshots ({config.snapshots}): "
                "the snapshots are the steps before the target (0: the target is step task.snapshots)"
            )
        budget = memory_budget(None, device)
        if config.dataset == "synthetic":  # its size is known before it is generated
            self._check_size(config.nodes, 2 * int(config.nodes * config.degree / 2), budget)
            graph = stochastic_block_model(config.nodes, config.degree, config.blocks, 1, config.graph_seed)
        else:
            graph = load_graph(config.dataset, data_dir=config.data_dir or None)
        self.graph_name = graph.name
        self.num_nodes = graph.num_nodes
        edge_index = _undirected_once(graph.edge_index)  # (2, edges)
        self._check_size(self.num_nodes, int(edge_index.shape[1]), budget)
        splits = (config.train_sequences, config.val_sequences, config.test_sequences)
        self.states = {
            name: simulate_epidemic(
                edge_index,
                self.num_nodes,
                count,
                config.snapshots,
                infection=config.infection,
                infectious_steps=config.infectious_steps,
                contagious_steps=config.contagious_steps,
                immune_steps=config.immune_steps,
                initial_infected=config.initial_infected,
                generator=split_generator(config.data_seed, index),
                warmup=config.warmup(),
            ).to(device)  # (sequences, T + 1, nodes) int8
            for index, (name, count) in enumerate(zip(SPLITS, splits, strict=True))
        }
        self.edge_index = edge_index.to(device)
        self.generator = torch.Generator().manual_seed(seed)

    def _check_size(self, nodes: int, edges: int, budget: float) -> None:
        """Refuse sequences over ``MAX_NODE_STATES`` node states, or states and graph over ``budget``."""
        c = self.config
        states = c.sequences() * (c.snapshots + 1) * nodes
        need = states + 16 * edges + 8 * nodes  # int8 states; edge_index twice (int64), while it is built
        lower = "lower task.train_sequences, task.val_sequences, task.test_sequences, task.snapshots or the graph"
        if states > MAX_NODE_STATES:
            raise UsageError(
                f"{c.sequences():,} sequences of {c.snapshots + 1} snapshots of {nodes:,} nodes are {states:,} node "
                f"states, over the {MAX_NODE_STATES:,} the epidemic task holds; {lower}"
            )
        if need > budget:
            raise UsageError(
                f"the epidemic sequences need about {gb(need)}, over half the available memory ({gb(budget)}); {lower}"
            )

    @property
    def dims(self) -> dict[str, int]:
        """One-hot node states in, the next state's class out."""
        return {"num_features": self.config.states(), "num_classes": self.config.states()}

    def meta(self) -> dict[str, Any]:
        """The graph's and the splits' sizes, saved with every checkpoint."""
        return {
            "graph": self.graph_name,
            "nodes": self.num_nodes,
            "edges": int(self.edge_index.shape[1]),
            "states": list(STATES[: self.config.states()]),
            **{f"{name}_sequences": int(states.shape[0]) for name, states in self.states.items()},
        }

    def units_per_step(self, batch_size: int) -> tuple[str, int] | None:
        """Progress counts sequences."""
        return "sequences", batch_size

    def encode(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences (batch, T + 1, nodes) int8 -> x (batch, T, nodes, states) one-hot float and
        y (batch, nodes) int64, the state after the last observed one."""
        x = F.one_hot(states[:, :-1].long(), self.config.states()).float()  # (batch, T, nodes, states)
        return x, states[:, -1].long()

    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` training sequences drawn with replacement."""
        train = self.states["train"]
        index = torch.randint(0, train.shape[0], (batch_size,), generator=self.generator).to(train.device)
        return self.encode(train[index])

    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over every node of every sequence, and the number of nodes predicted right."""
        logits = model(x, self.edge_index)  # (batch, nodes, classes)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return loss, (logits.argmax(dim=-1) == y).sum()

    @torch.no_grad()
    def score(self, model: torch.nn.Module, split: str, batch_size: int) -> tuple[float, float]:
        """Mean loss and accuracy over every node of every sequence of ``split``, ``batch_size`` at a time."""
        states = self.states[split]
        total_loss, correct, count = 0.0, 0, 0
        for start in range(0, states.shape[0], batch_size):
            x, y = self.encode(states[start : start + batch_size])
            loss, right = self.loss_and_correct(model, x, y)
            total_loss += loss.item() * y.numel()
            correct += int(right)
            count += y.numel()
        return total_loss / count, correct / count

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        """Loss and accuracy on every validation sequence, and on every test sequence."""
        was_training = model.training
        model.eval()
        try:
            loss, accuracy = self.score(model, "val", budget.batch_size)
            test_loss, test_accuracy = self.score(model, "test", budget.batch_size)
        finally:
            model.train(was_training)
        return {"loss": loss, "accuracy": accuracy, "test_loss": test_loss, "test_accuracy": test_accuracy}

    def state_dict(self) -> dict[str, Any]:
        """The training batches' generator (the sequences themselves are remade from data_seed)."""
        return {"train": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["train"])
