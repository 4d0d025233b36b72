"""Several GCN implementations on one graph, compared side by side: the front end of ``rnnkit gcn``.

Each implementation (a registered ``node-classification`` model: ``dense`` means ``gcn-dense``, ``pyg``
means ``gcn-pyg``, any other name is looked up as ``gcn-<name>`` then as given) trains ``runs`` times
with seeds 0..runs-1. Every run is a normal run of the graph task (``rnnkit.data.graph_task``) by the
shared Trainer, in its own run directory ``<out>/<impl>-s<seed>`` (config, metrics.jsonl, checkpoint,
resumable, plottable), with Kipf & Welling's setup by default: full batch, Adam, 200 epochs, the test
accuracy at the epoch of the best validation accuracy. Time per epoch is the median training-step
time; peak memory is measured in a fresh worker process per implementation (the process's peak RSS
growth on CPU, ``torch.cuda.max_memory_allocated`` on a GPU). An implementation whose estimated memory
(graph, parameters, activations, dense adjacency) is over the budget is refused before anything is
built; a synthetic graph is checked before it is generated. The table's numbers go to ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit.checkpoint import write_json
from rnnkit.config import ConfigBuilder
from rnnkit.data.graph_task import GraphConfig, GraphTask, MemoryEstimate, estimate_memory
from rnnkit.data.graphs import Graph, load_graph
from rnnkit.device import resolve_device
from rnnkit.errors import ModelNotFoundError, RunError, UsageError
from rnnkit.memory import free_device_memory, gb
from rnnkit.registry import default_registry, get_model
from rnnkit.rundir import claim_new_run_dir, prepare_run_dir
from rnnkit.runner import train_run
from rnnkit.spec import RunSpec, load_yaml, resolve_spec
from rnnkit.training import Callback, StepStats, Trainer

RESULTS_FILE = "results.json"
ALIASES = {"dense": "gcn-dense", "pyg": "gcn-pyg"}


@dataclass
class GCNSpec(GraphConfig):
    """A GCN comparison: the graph (the graph task's fields), the implementations, the model and the
    training budget.

    Upper bounds are far beyond any meaningful comparison; what fits in memory is checked separately
    (``check_memory``) against ``max_memory_gb``.
    """

    impl: str | list[str] = "dense,pyg"
    layers: int = field(default=2, metadata={"gt": 0, "le": 64})  # deeper GCNs over-smooth long before 64
    hidden: int = field(default=16, metadata={"gt": 0, "le": 1_000_000})
    dropout: float = field(default=0.5, metadata={"ge": 0, "lt": 1})
    epochs: int = field(default=200, metadata={"gt": 0, "le": 1_000_000})
    runs: int = field(default=10, metadata={"gt": 0, "le": 1_000})  # seeds per implementation
    lr: float = field(default=0.01, metadata={"gt": 0})
    weight_decay: float = field(default=5e-4, metadata={"ge": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: str = ""  # default: runs/gcn-<dataset>
    max_memory_gb: float = field(default=0.0, metadata={"ge": 0})  # 0: half of the available memory
    max_dense_gb: float = field(default=0.0, metadata={"ge": 0})  # the former name of max_memory_gb
    tensorboard: bool = False  # each run's log.tensorboard: event files in its run directory
    wandb: bool = False  # each run's log.wandb: one Weights & Biases run per run

    def impls(self) -> list[str]:
        names = self.impl.split(",") if isinstance(self.impl, str) else list(self.impl)
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UsageError("no implementation given: use e.g. --impl dense,pyg")
        return list(dict.fromkeys(names))

    def out_dir(self) -> Path:
        return Path(self.out or f"runs/gcn-{self.dataset}")


#: How a run spec (``rnnkit train``'s) maps onto a comparison: section, key -> comparison field.
_FROM_RUN_SPEC = {
    ("model", "layers"): "layers",
    ("model", "hidden_size"): "hidden",
    ("model", "dropout"): "dropout",
    ("train", "max_steps"): "epochs",
    ("train", "lr"): "lr",
    ("train", "weight_decay"): "weight_decay",
    ("log", "tensorboard"): "tensorboard",
    ("log", "wandb"): "wandb",
}


def load_gcn_spec(path: str | Path | None, overrides: dict[str, Any]) -> GCNSpec:
    """A GCNSpec from an optional YAML file with ``overrides`` (options given on the command line) on top.

    The file is a comparison spec (flat: ``dataset``, ``impl``, ``runs`` ...) or a run spec of the graph
    task (``task:``, ``model:``, ``train:`` as for ``rnnkit train``), whose graph, model size and
    training budget the comparison takes (its model name is left: the comparison trains ``impl``)."""
    data, lines = load_yaml(path) if path is not None else ({}, {})
    if isinstance(data.get("task"), dict):
        resolved = resolve_spec(data, lines=lines, source=str(path))
        if resolved.task_name != GraphTask.name:
            raise UsageError(f"{path} is a run spec of the {resolved.task_name} task; rnnkit gcn compares graph models")
        given = resolved.to_dict()
        data = {**dataclasses.asdict(resolved.task), "device": resolved.device}
        data.update(
            {
                field_: given[section][key]
                for (section, key), field_ in _FROM_RUN_SPEC.items()
                if key in given.get(section, {})
            }
        )
        lines = {}
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return ConfigBuilder(lines, str(path) if path else None, set(overrides)).build(GCNSpec, data, "")


def model_name(impl: str) -> str:
    """The registered model an --impl name means: dense, pyg, gcn-<name> or the name itself."""
    if impl in ALIASES:
        return ALIASES[impl]
    entries = default_registry().entries
    return f"gcn-{impl}" if f"gcn-{impl}" in entries and impl not in entries else impl


def model_values(model_def: Any, spec: GCNSpec) -> dict[str, Any]:
    """The model's settings from the spec's layers, dropout and hidden size (for the fields it has)."""
    fields = model_def.config_fields()
    values = {k: getattr(spec, k) for k in ("layers", "dropout") if k in fields}
    if "hidden_size" in fields:
        values["hidden_size"] = spec.hidden
    return values


def graph_config(spec: GCNSpec) -> GraphConfig:
    """The graph task's part of the comparison spec."""
    return GraphConfig(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(GraphConfig)})


def run_spec(spec: GCNSpec, impl: str, seed: int, out_dir: Path) -> RunSpec:
    """The run that trains ``impl`` with ``seed``: the graph task, the comparison's model size, Adam at
    its learning rate and weight decay for ``epochs`` steps (one step is one epoch)."""
    model_def = get_model(model_name(impl), GraphTask.kind)
    data = {
        "name": f"{impl}-s{seed}",
        "seed": seed,
        "device": spec.device,
        "out_dir": str(out_dir),
        "task": {"name": GraphTask.name, **dataclasses.asdict(graph_config(spec))},
        "model": {"name": model_def.name, **model_values(model_def, spec)},
        "train": {"lr": spec.lr, "weight_decay": spec.weight_decay, "max_steps": spec.epochs},
    }
    if spec.max_memory_gb or spec.max_dense_gb:
        data["train"]["max_memory_gb"] = spec.max_memory_gb or spec.max_dense_gb
    if spec.tensorboard or spec.wandb:
        data["log"] = {"tensorboard": spec.tensorboard, "wandb": spec.wandb}
    return resolve_spec(data)


def _advice(spec: GCNSpec, estimate: MemoryEstimate) -> str:
    """What to change, by the part of the estimate that dominates."""
    largest = estimate.largest()
    if largest == "adjacency":
        return "use --impl pyg for a graph this size"
    if largest == "graph":
        return "lower --nodes or --degree" if spec.dataset == "synthetic" else "use a smaller dataset"
    if largest == "parameters":
        return "lower --hidden or --layers"
    return (
        "lower --nodes, --degree, --hidden or --layers" if spec.dataset == "synthetic" else "lower --hidden or --layers"
    )


def budget_bytes(spec: GCNSpec, budget_gb: float | None = None) -> float:
    """The memory budget: ``budget_gb``, else the spec's max_memory_gb (or max_dense_gb), else half the
    free memory of the device the comparison runs on."""
    chosen = budget_gb or spec.max_memory_gb or spec.max_dense_gb
    return chosen * 1e9 if chosen else free_device_memory(resolve_device(spec.device)) / 2


def impl_estimate(spec: GCNSpec, impl: str, *, nodes: int, edges: int, features: int, classes: int) -> MemoryEstimate:
    """The memory ``impl`` needs on a graph of this size with the spec's model settings."""
    model_def = get_model(model_name(impl), GraphTask.kind)
    config = model_def.make_config(model_values(model_def, spec))
    return estimate_memory(model_def, config, nodes=nodes, edges=edges, features=features, classes=classes)


def check_memory(
    spec: GCNSpec,
    num_nodes: int,
    budget_gb: float | None = None,
    *,
    num_edges: int | None = None,
    num_features: int | None = None,
    num_classes: int | None = None,
) -> None:
    """Refuse an implementation whose estimated memory for this graph (``estimate_memory``) is over the
    budget (default: half the free memory of the device it will run on). Sizes not given are those of
    the synthetic graph the spec describes."""
    edges = num_edges if num_edges is not None else spec.synthetic_edges()
    features = num_features if num_features is not None else spec.features
    classes = num_classes if num_classes is not None else spec.classes
    budget = budget_bytes(spec, budget_gb)
    for impl in spec.impls():
        estimate = impl_estimate(spec, impl, nodes=num_nodes, edges=edges, features=features, classes=classes)
        if estimate.total > budget:
            over = f"over the memory budget of {gb(budget)} (--max-memory-gb; default: half the available memory)"
            raise UsageError(f"--impl {impl} {estimate.describe(num_nodes, edges)}, {over}; {_advice(spec, estimate)}")


def _graph(spec: GCNSpec) -> Graph:
    c = graph_config(spec)
    return load_graph(
        c.dataset,
        data_dir=c.data_dir or None,
        nodes=c.nodes,
        degree=c.degree,
        classes=c.classes,
        features=c.features,
        seed=c.graph_seed,
    )


class EpochTimer(Callback):
    """Collects each training step's time and the step of the best validation accuracy."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.best_val, self.best_epoch = -1.0, 0

    def on_step(self, stats: StepStats) -> None:
        self.seconds.append(stats.seconds)

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if metrics["accuracy"] > self.best_val:
            self.best_val, self.best_epoch = metrics["accuracy"], trainer.step


def train_once(spec: GCNSpec, impl: str, seed: int, out_dir: Path) -> dict[str, Any]:
    """One run of ``impl`` with ``seed`` in a new run directory under ``out_dir``: its test accuracy at
    the best validation epoch, and its epoch times."""
    run = run_spec(spec, impl, seed, out_dir)
    timer = EpochTimer()
    meta = train_run(run, claim_new_run_dir(out_dir, run.name), callbacks=[timer])
    final = meta["final_metrics"]
    return {
        "seed": seed,
        "test_accuracy": final["test_accuracy_at_best_val"],
        "val_accuracy": final["best_val_accuracy"],
        "best_epoch": timer.best_epoch,
        "epoch_seconds": timer.seconds,
        "epoch_ms_median": 1e3 * statistics.median(timer.seconds),
        "parameters": meta["parameters"],
        "run_dir": meta["run_dir"],
    }


def _warm_up(model_def: Any, config: Any, graph: Graph, device: torch.device) -> None:
    model = model_def.build(config, num_features=graph.num_features, num_classes=graph.num_classes).to(device)
    x = torch.zeros(2, graph.num_features, device=device)
    edge_index = torch.tensor([[0, 1], [1, 0]], device=device)
    model(x, edge_index).sum().backward()


def run_impl(spec_dict: dict[str, Any], impl: str, threads: int | None = None) -> dict[str, Any]:
    """Every run of one implementation, in this process; with its memory peak."""
    if threads:
        torch.set_num_threads(threads)
    spec = GCNSpec(**spec_dict)
    device = resolve_device(spec.device)
    model_def = get_model(model_name(impl), GraphTask.kind)
    config = model_def.make_config(model_values(model_def, spec))
    graph = _graph(spec)
    _warm_up(model_def, config, graph, device)  # one-time costs (imports, kernels) are not the model's memory
    del graph
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    runs = [train_once(spec, impl, seed, spec.out_dir()) for seed in range(spec.runs)]
    total = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    accs = [r["test_accuracy"] for r in runs]
    epoch_times = [t for r in runs for t in r["epoch_seconds"]]
    return {
        "impl": impl,
        "model": model_def.name,
        "config": asdict(config),
        "test_accuracy_mean": statistics.fmean(accs),
        "test_accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "epoch_ms_median": 1e3 * statistics.median(epoch_times),
        "first_epoch_ms": 1e3 * statistics.fmean(r["epoch_seconds"][0] for r in runs),
        "total_seconds": total,
        "peak_memory_mb": peak / 1e6,
        "parameters": runs[0]["parameters"],
        "device": str(device),
        "runs": [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in runs],
    }


def _run_isolated(spec_dict: dict[str, Any], impl: str, threads: int | None) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_impl, spec_dict, impl, threads).result()


def check_comparison(spec: GCNSpec) -> Graph:
    """Check names, task support, device, data and memory budget before any run; returns the graph."""
    for impl in spec.impls():
        try:
            get_model(model_name(impl), GraphTask.kind)
        except ModelNotFoundError:
            if any(f.name == model_name(impl) for f in default_registry().failures):
                raise  # registered but broken: the registry's message says why
            graph_models = [e.name for e in default_registry().load_all() if GraphTask.kind in e.model.kinds]  # type: ignore[union-attr]
            raise ModelNotFoundError(
                f"unknown implementation '{impl}'. Graph models: dense (gcn-dense), pyg (gcn-pyg)"
                + "".join(f", {m}" for m in graph_models if m not in ALIASES.values())
            ) from None
    resolve_device(spec.device)
    if spec.dataset == "synthetic":  # its size is known before it is generated
        check_memory(spec, spec.nodes)
    graph = _graph(spec)
    check_memory(
        spec,
        graph.num_nodes,
        num_edges=int(graph.edge_index.shape[1]),
        num_features=graph.num_features,
        num_classes=graph.num_classes,
    )
    prepare_run_dir(spec.out_dir())
    return graph


def compare(
    spec: GCNSpec,
    *,
    isolate: bool = True,
    threads: int | None = None,
    on_result: Any = None,
    graph: Graph | None = None,
) -> dict[str, Any]:
    """Train every implementation of ``spec`` and write ``results.json``; returns its content.

    Everything is checked (see ``check_comparison``) before the first run. Each run gets a new run
    directory under the output directory (``dense-s0``, or ``dense-s0-2`` when a comparison ran there
    before: runs are never overwritten); ``results.json`` describes the latest comparison.
    """
    graph = graph if graph is not None else check_comparison(spec)
    nodes, edges = graph.num_nodes, int(graph.edge_index.shape[1])
    results = []
    for impl in spec.impls():
        try:
            result = (_run_isolated if isolate else run_impl)(asdict(spec), impl, threads)
        except (MemoryError, RuntimeError, BrokenProcessPool) as exc:
            text = str(exc).lower()
            if not isinstance(exc, (MemoryError, BrokenProcessPool)) and "alloc" not in text and "memory" not in text:
                raise
            estimate = impl_estimate(
                spec, impl, nodes=nodes, edges=edges, features=graph.num_features, classes=graph.num_classes
            )
            raise RunError(
                f"--impl {impl} ran out of memory on {nodes:,} nodes ({type(exc).__name__}; "
                f"estimated {gb(estimate.total)}); {_advice(spec, estimate)}"
            ) from exc
        results.append(result)
        if on_result:
            on_result(result)
    summary = {
        "dataset": spec.dataset,
        "nodes": nodes,
        "edges": edges,
        "features": graph.num_features,
        "classes": graph.num_classes,
        "spec": asdict(spec),
        "results": results,
    }
    write_json(spec.out_dir() / RESULTS_FILE, summary)
    return summary


def read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["results"][0]["impl"]  # noqa: B018 - shape check
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RunError(f"{path} is not a readable GCN results file ({exc})") from exc
    return data
