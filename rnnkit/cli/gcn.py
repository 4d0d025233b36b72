"""`rnnkit gcn --dataset cora --impl dense,pyg`: compare GCN implementations on one graph, as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import (
    err_console,
    examples_epilog,
    handle_errors,
    out_console,
    print_json,
    print_table,
    progress_option,
    report_plugin_failures,
    tensorboard_option,
    wandb_option,
)
from rnnkit.data.datasets import DATASETS

GCN_EXAMPLES = examples_epilog(
    "rnnkit gcn --dataset karate --runs 3",
    "rnnkit gcn --dataset cora --runs 10 --data-dir ../shared/data --dropout 0.6 --lr 0.005",
    "rnnkit gcn examples/gcn-cora.yaml --impl dense,pyg --epochs 100 --json > cora.json",
)
GRAPH = "Graph"
MODEL = "Model and training"
RUNNING = "Running"
OUTPUT = "Output"


@handle_errors
def gcn(
    spec: Path = typer.Argument(
        None, help="Optional YAML spec (e.g. examples/gcn-cora.yaml); options override it.", show_default=False
    ),
    dataset: str = typer.Option(
        None,
        help=f"{', '.join(DATASETS[:-1])} or {DATASETS[-1]} \\[default: cora].",
        show_default=False,
        rich_help_panel=GRAPH,
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        help="Where Planetoid raw files are looked for "
        "(DIR/planetoid/Cora/raw/...; else $RNNKIT_DATA_DIR, else downloaded).",
        show_default=False,
        rich_help_panel=GRAPH,
    ),
    nodes: int = typer.Option(
        None, help="Synthetic graph: nodes \\[default: 1000].", show_default=False, rich_help_panel=GRAPH
    ),
    degree: float = typer.Option(
        None, help="Synthetic graph: average degree \\[default: 10].", show_default=False, rich_help_panel=GRAPH
    ),
    classes: int = typer.Option(
        None, help="Synthetic graph: classes \\[default: 4].", show_default=False, rich_help_panel=GRAPH
    ),
    impl: str = typer.Option(
        None,
        help="Comma-separated implementations: dense, pyg or any registered graph model \\[default: dense,pyg].",
        show_default=False,
        rich_help_panel=MODEL,
    ),
    layers: int = typer.Option(
        None, help="GCN layers, at most 64 \\[default: 2].", show_default=False, rich_help_panel=MODEL
    ),
    hidden: int = typer.Option(None, help="Hidden units \\[default: 16].", show_default=False, rich_help_panel=MODEL),
    dropout: float = typer.Option(
        None,
        help="Dropout on each layer's input, 0 to under 1 \\[default: 0.5].",
        show_default=False,
        rich_help_panel=MODEL,
    ),
    lr: float = typer.Option(
        None, "--lr", help="Adam's learning rate \\[default: 0.01].", show_default=False, rich_help_panel=MODEL
    ),
    weight_decay: float = typer.Option(
        None,
        "--weight-decay",
        help="Adam's weight decay (L2) \\[default: 5e-4].",
        show_default=False,
        rich_help_panel=MODEL,
    ),
    epochs: int = typer.Option(
        None, help="Epochs per run, at most 1,000,000 \\[default: 200].", show_default=False, rich_help_panel=MODEL
    ),
    runs: int = typer.Option(
        None,
        help="Runs (seeds) per implementation, at most 1,000 \\[default: 10].",
        show_default=False,
        rich_help_panel=MODEL,
    ),
    device: str = typer.Option(
        None, help="auto, cpu or cuda \\[default: auto].", show_default=False, rich_help_panel=RUNNING
    ),
    max_memory_gb: float = typer.Option(
        None,
        "--max-memory-gb",
        "--max-dense-gb",
        help="Memory budget in GB: an implementation whose estimate (graph, parameters, activations, dense "
        "adjacency) is over it is refused before it runs \\[default: half of the available memory].",
        show_default=False,
        rich_help_panel=RUNNING,
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        max=1024,
        help="CPU threads for torch \\[default: torch's, one per core].",
        show_default=False,
        rich_help_panel=RUNNING,
    ),
    out: Path = typer.Option(
        None, help="Output directory \\[default: runs/gcn-<dataset>].", show_default=False, rich_help_panel=OUTPUT
    ),
    progress: bool = progress_option(OUTPUT),
    tensorboard: bool = tensorboard_option(OUTPUT),
    wandb: bool = wandb_option(OUTPUT),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the comparison (what results.json holds, and its path) as one JSON line instead of the table.",
        rich_help_panel=OUTPUT,
    ),
) -> None:
    """Train GCN implementations on one graph and compare accuracy, speed and memory side by side.

    Every run is a normal run directory under --out (dense-s0, pyg-s0, ...): plot it, resume it,
    sample its metrics like any run of `rnnkit train`."""
    from rnnkit.gcn import check_comparison, compare, load_gcn_spec
    from rnnkit.progress import CountProgress

    options = {
        "dataset": dataset,
        "impl": impl,
        "layers": layers,
        "hidden": hidden,
        "epochs": epochs,
        "runs": runs,
        "device": device,
        "data_dir": str(data_dir) if data_dir else None,
        "out": str(out) if out else None,
        "nodes": nodes,
        "degree": degree,
        "classes": classes,
        "max_memory_gb": max_memory_gb,
        "dropout": dropout,
        "lr": lr,
        "weight_decay": weight_decay,
        "tensorboard": tensorboard or None,
        "wandb": wandb or None,
    }
    resolved = load_gcn_spec(spec, {k: v for k, v in options.items() if v is not None})
    graph = check_comparison(resolved)
    report_plugin_failures()
    impls = resolved.impls()
    err_console.print(
        f"gcn: {resolved.dataset}, {', '.join(impls)}, {resolved.runs} runs x {resolved.epochs} "
        f"epochs -> {resolved.out_dir()}"
    )
    with CountProgress(len(impls), "implementations", enabled=progress) as bar:

        def on_result(result: dict[str, Any]) -> None:
            bar.advance()
            bar.log(
                f"{result['impl']:>10}: test accuracy {result['test_accuracy_mean']:.4f}, "
                f"{result['epoch_ms_median']:.1f} ms/epoch"
            )

        summary = compare(resolved, threads=threads, on_result=on_result, graph=graph)
    results = resolved.out_dir() / "results.json"
    if as_json:
        print_json({**summary, "results_file": str(results)})
        return
    print_table(results_table(summary))
    out_console.print(f"results: {results}", markup=False)


def results_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(
        title=f"{summary['dataset']}: {summary['nodes']:,} nodes, {summary['edges']:,} edges, "
        f"{summary['classes']} classes ({summary['spec']['runs']} runs each)"
    )
    for column in ("impl", "test accuracy", "ms / epoch", "total s", "peak memory MB", "parameters"):
        table.add_column(column, justify="left" if column == "impl" else "right")
    for r in summary["results"]:
        table.add_row(
            r["impl"],
            f"{100 * r['test_accuracy_mean']:.1f} ± {100 * r['test_accuracy_std']:.1f}%",
            f"{r['epoch_ms_median']:.2f}",
            f"{r['total_seconds']:.1f}",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['parameters']:,}",
        )
    return table
