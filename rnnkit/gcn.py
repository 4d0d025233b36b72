"""Node classification with several GCN implementations on one graph, compared side by side.

Each implementation (a registered ``node-classification`` model: ``dense`` means ``gcn-dense``, ``pyg``
means ``gcn-pyg``, any other name is looked up as ``gcn-<name>`` then as given) trains ``runs`` times
with seeds 0..runs-1, full batch, Adam, for ``epochs`` epochs (Kipf & Welling's setup by default). A run
scores the test accuracy at the epoch of its best validation accuracy. Time per epoch is the median
training-step time; peak memory is measured in a fresh worker process per implementation (the
process's peak RSS growth on CPU, ``torch.cuda.max_memory_allocated`` on a GPU). An implementation
whose estimated memory (graph, parameters, activations, dense adjacency) is over the budget is refused
before anything is built; a synthetic graph is checked before it is generated.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from rnnkit.config import ConfigBuilder
from rnnkit.errors import ModelNotFoundError, RunError, UsageError
from rnnkit.memory import BYTES_PER_PARAMETER, free_device_memory, gb
from rnnkit.memory import available_memory_bytes as available_memory_bytes  # moved; kept importable here
from rnnkit.registry import default_registry, get_model
from rnnkit.spec import load_yaml

TASK = "node-classification"
RESULTS_FILE = "results.json"
ALIASES = {"dense": "gcn-dense", "pyg": "gcn-pyg"}


@dataclass
class GCNSpec:
    """A GCN comparison: the graph, the implementations, the model and the training budget.

    Upper bounds are far beyond any meaningful comparison; what fits in memory is checked separately
    (``check_memory``) against ``max_memory_gb``.
    """

    dataset: Literal["karate", "cora", "citeseer", "pubmed", "synthetic"] = "cora"
    impl: str | list[str] = "dense,pyg"
    layers: int = field(default=2, metadata={"gt": 0, "le": 64})  # deeper GCNs over-smooth long before 64
    hidden: int = field(default=16, metadata={"gt": 0, "le": 1_000_000})
    dropout: float = field(default=0.5, metadata={"ge": 0, "lt": 1})
    epochs: int = field(default=200, metadata={"gt": 0, "le": 1_000_000})
    runs: int = field(default=10, metadata={"gt": 0, "le": 1_000})  # seeds per implementation
    lr: float = field(default=0.01, metadata={"gt": 0})
    weight_decay: float = field(default=5e-4, metadata={"ge": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_dir: str = ""
    out: str = ""  # default: runs/gcn-<dataset>
    nodes: int = field(default=1000, metadata={"gt": 0, "le": 1_000_000_000})  # synthetic graphs
    degree: float = field(default=10.0, metadata={"gt": 0, "le": 100_000})
    classes: int = field(default=4, metadata={"ge": 2, "le": 1_000})  # the generator loops over classes
    features: int = field(default=32, metadata={"gt": 0, "le": 1_000_000})
    graph_seed: int = field(default=0, metadata={"ge": 0, "lt": 2**63})  # what torch.manual_seed takes
    max_memory_gb: float = field(default=0.0, metadata={"ge": 0})  # 0: half of the available memory
    max_dense_gb: float = field(default=0.0, metadata={"ge": 0})  # the former name of max_memory_gb

    def impls(self) -> list[str]:
        names = self.impl.split(",") if isinstance(self.impl, str) else list(self.impl)
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UsageError("no implementation given: use e.g. --impl dense,pyg")
        return list(dict.fromkeys(names))

    def out_dir(self) -> Path:
        return Path(self.out or f"runs/gcn-{self.dataset}")


def load_gcn_spec(path: str | Path | None, overrides: dict[str, Any]) -> GCNSpec:
    """A GCNSpec from an optional YAML file with ``overrides`` (options given on the command line) on top."""
    data, lines = load_yaml(path) if path is not None else ({}, {})
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return ConfigBuilder(lines, str(path) if path else None, set(overrides)).build(GCNSpec, data, "")


def model_name(impl: str) -> str:
    """The registered model an --impl name means: dense, pyg, gcn-<name> or the name itself."""
    if impl in ALIASES:
        return ALIASES[impl]
    entries = default_registry().entries
    return f"gcn-{impl}" if f"gcn-{impl}" in entries and impl not in entries else impl


def _free_memory(device: str) -> float:
    from rnnkit.runner import resolve_device

    return free_device_memory(resolve_device(device))


def model_config(model_def: Any, spec: GCNSpec) -> Any:
    """The model's config from the spec's layers, dropout and hidden size (for the fields it has)."""
    fields = model_def.config_fields()
    values = {k: getattr(spec, k) for k in ("layers", "dropout") if k in fields}
    if "hidden_size" in fields:
        values["hidden_size"] = spec.hidden
    return model_def.make_config(values)


def graph_bytes(nodes: int, edges: int, features: int) -> int:
    """A graph in memory: features (float32), edge_index (2 x int64 per edge), labels and three masks."""
    return 4 * nodes * features + 16 * edges + 8 * nodes + 3 * nodes


@dataclass
class MemoryEstimate:
    """Bytes one implementation needs for one graph, by part."""

    graph: float  # the graph twice: in this process and in the worker that trains (covers generation)
    parameters: float  # weights, gradients and Adam's two moments
    activations: float  # per layer: node-sized tensors, and edge-sized messages for message passing
    adjacency: float  # what the model declares itself (``memory_bytes``: gcn-dense's N x N matrix)

    @property
    def total(self) -> float:
        return self.graph + self.parameters + self.activations + self.adjacency


def estimate_memory(spec: GCNSpec, impl: str, *, nodes: int, edges: int, features: int, classes: int) -> MemoryEstimate:
    """The memory ``impl`` needs to train on a graph of this size (no tensor is allocated).

    Activations, per layer of width in -> out, over the forward and backward passes: the dropped-out
    input, its mask, the transformed, aggregated and activated outputs (nodes x (in + 3 out) floats),
    and for models that declare no ``memory_bytes`` (message passing, like GCNConv) the messages along
    every edge and self-loop ((edges + nodes) x out floats, gathered and weighted); twice that for the
    gradients. Parameters from the model's formula (or a build on the meta device)."""
    model_def = get_model(model_name(impl), TASK)
    config = model_config(model_def, spec)
    try:
        parameters = int(model_def.parameter_count(config, num_features=features, num_classes=classes))
    except Exception:  # noqa: BLE001 - an estimate must never be what fails a comparison
        parameters = 0
    sizes = [features] + [spec.hidden] * (spec.layers - 1) + [classes]
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


def _advice(spec: GCNSpec, estimate: MemoryEstimate) -> str:
    """What to change, by the part of the estimate that dominates."""
    largest = max(("graph", "parameters", "activations", "adjacency"), key=lambda k: getattr(estimate, k))
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
    return chosen * 1e9 if chosen else _free_memory(spec.device) / 2


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
    edges = num_edges if num_edges is not None else 2 * int(num_nodes * spec.degree / 2)
    features = num_features if num_features is not None else spec.features
    classes = num_classes if num_classes is not None else spec.classes
    budget = budget_bytes(spec, budget_gb)
    for impl in spec.impls():
        estimate = estimate_memory(spec, impl, nodes=num_nodes, edges=edges, features=features, classes=classes)
        if estimate.total <= budget:
            continue
        over = f"over the memory budget of {gb(budget)} (--max-memory-gb; default: half the available memory)"
        if estimate.adjacency >= max(estimate.graph, estimate.parameters, estimate.activations):
            what = (
                f"needs about {gb(estimate.adjacency)} for a dense {num_nodes:,}x{num_nodes:,} adjacency "
                f"({gb(estimate.total)} in all with the graph, parameters and activations)"
            )
        else:
            what = (
                f"needs about {gb(estimate.total)} on {num_nodes:,} nodes and {edges:,} edges (graph "
                f"{gb(estimate.graph)}, parameters {gb(estimate.parameters)}, activations {gb(estimate.activations)})"
            )
        raise UsageError(f"--impl {impl} {what}, {over}; {_advice(spec, estimate)}")


def _graph(spec: GCNSpec) -> Any:
    from rnnkit.data.graphs import load_graph

    return load_graph(
        spec.dataset,
        data_dir=spec.data_dir or None,
        nodes=spec.nodes,
        degree=spec.degree,
        classes=spec.classes,
        features=spec.features,
        seed=spec.graph_seed,
    )


def train_once(model_def: Any, config: Any, graph: Any, spec: GCNSpec, seed: int, device: Any) -> dict[str, Any]:
    """One training run: test accuracy at the best validation epoch, and the epoch times."""
    import torch
    import torch.nn.functional as F

    from rnnkit.spec import TrainConfig
    from rnnkit.training import make_optimizer

    torch.manual_seed(seed)
    model = model_def.build(config, num_features=graph.num_features, num_classes=graph.num_classes).to(device)
    optimizer = make_optimizer(
        model.parameters(), TrainConfig(optimizer="adam", lr=spec.lr, weight_decay=spec.weight_decay)
    )
    x, edge_index, y = graph.x, graph.edge_index, graph.y
    best_val, test_at_best, best_epoch = -1.0, 0.0, 0
    times = []
    for epoch in range(1, spec.epochs + 1):
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        logits = model(x, edge_index)  # (nodes, classes)
        loss = F.cross_entropy(logits[graph.train_mask], y[graph.train_mask])
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            pred = model(x, edge_index).argmax(dim=1)  # (nodes,)
        val = (pred[graph.val_mask] == y[graph.val_mask]).float().mean().item()
        if val > best_val:
            test = (pred[graph.test_mask] == y[graph.test_mask]).float().mean().item()
            best_val, test_at_best, best_epoch = val, test, epoch
    return {
        "seed": seed,
        "test_accuracy": test_at_best,
        "val_accuracy": best_val,
        "best_epoch": best_epoch,
        "epoch_seconds": times,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _warm_up(model_def: Any, config: Any, graph: Any, device: Any) -> None:
    import torch

    model = model_def.build(config, num_features=graph.num_features, num_classes=graph.num_classes).to(device)
    x = torch.zeros(2, graph.num_features, device=device)
    edge_index = torch.tensor([[0, 1], [1, 0]], device=device)
    model(x, edge_index).sum().backward()


def run_impl(spec_dict: dict[str, Any], impl: str, threads: int | None = None) -> dict[str, Any]:
    """Every run of one implementation, in this process; with its memory peak."""
    import torch

    from rnnkit.runner import resolve_device

    if threads:
        torch.set_num_threads(threads)
    spec = GCNSpec(**spec_dict)
    device = resolve_device(spec.device)
    graph = _graph(spec).to(device)
    model_def = get_model(model_name(impl), TASK)
    config = model_config(model_def, spec)
    _warm_up(model_def, config, graph, device)  # one-time costs (imports, kernels) are not the model's memory
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    runs = [train_once(model_def, config, graph, spec, seed, device) for seed in range(spec.runs)]
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
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_impl, spec_dict, impl, threads).result()


def check_comparison(spec: GCNSpec) -> Any:
    """Check names, task support, device, data and memory budget before any run; returns the graph."""
    from rnnkit.rundir import prepare_run_dir
    from rnnkit.runner import resolve_device

    for impl in spec.impls():
        try:
            get_model(model_name(impl), TASK)
        except ModelNotFoundError:
            if any(f.name == model_name(impl) for f in default_registry().failures):
                raise  # registered but broken: the registry's message says why
            graph_models = [e.name for e in default_registry().load_all() if TASK in e.model.tasks]  # type: ignore[union-attr]
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
    spec: GCNSpec, *, isolate: bool = True, threads: int | None = None, on_result: Any = None, graph: Any = None
) -> dict[str, Any]:
    """Train every implementation of ``spec`` and write ``results.json``; returns its content.

    Everything is checked (see ``check_comparison``) before the first run.
    """
    from rnnkit.checkpoint import write_json

    graph = graph if graph is not None else check_comparison(spec)
    out = spec.out_dir()
    results = []
    for impl in spec.impls():
        try:
            result = (_run_isolated if isolate else run_impl)(asdict(spec), impl, threads)
        except (MemoryError, RuntimeError, BrokenProcessPool) as exc:
            text = str(exc).lower()
            if not isinstance(exc, (MemoryError, BrokenProcessPool)) and "alloc" not in text and "memory" not in text:
                raise
            estimate = estimate_memory(
                spec,
                impl,
                nodes=graph.num_nodes,
                edges=int(graph.edge_index.shape[1]),
                features=graph.num_features,
                classes=graph.num_classes,
            )
            raise RunError(
                f"--impl {impl} ran out of memory on {graph.num_nodes:,} nodes ({type(exc).__name__}; "
                f"estimated {gb(estimate.total)}); {_advice(spec, estimate)}"
            ) from exc
        results.append(result)
        if on_result:
            on_result(result)
    summary = {
        "dataset": spec.dataset,
        "nodes": graph.num_nodes,
        "edges": int(graph.edge_index.shape[1]),
        "features": graph.num_features,
        "classes": graph.num_classes,
        "spec": asdict(spec),
        "results": results,
    }
    write_json(out / RESULTS_FILE, summary)
    return summary


def read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["results"][0]["impl"]  # noqa: B018 - shape check
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RunError(f"{path} is not a readable GCN results file ({exc})") from exc
    return data
