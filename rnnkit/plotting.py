"""Figures with matplotlib's object API (no pyplot state, no display): headless by construction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnkit.errors import RunError, UsageError
from rnnkit.gcn import RESULTS_FILE as GCN_RESULTS
from rnnkit.gcn import read_results as read_gcn_results
from rnnkit.runner import METRICS_FILE
from rnnkit.sweep import FIGURE_FILE, RESULTS_FILE, read_results, summarize


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def sweep_figure(rows: list[dict[str, Any]], title: str = "") -> Any:
    """Best accuracy vs palindrome length per model, mean +- std over seeds (the report's figure 1)."""
    summary = summarize(rows)
    fig = _figure()
    ax = fig.add_subplot()
    for model, by_length in summary.items():
        lengths = [t for t, s in by_length.items() if s["runs"]]
        if not lengths:
            continue
        means = [by_length[t]["mean"] for t in lengths]
        stds = [by_length[t]["std"] for t in lengths]
        line = ax.plot(lengths, means, marker="o", markersize=3, label=model)[0]
        lo = [m - s for m, s in zip(means, stds, strict=True)]
        hi = [m + s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(lengths, lo, hi, color=line.get_color(), alpha=0.2)
    ax.axhline(0.1, color="grey", linestyle=":", linewidth=1, label="chance (0.1)")
    ax.set_xlabel("palindrome length T")
    ax.set_ylabel("best accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "Predicting the last digit of a palindrome")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def gcn_figure(summary: dict[str, Any]) -> Any:
    """Test accuracy (mean ± std), median epoch time and peak memory per implementation."""
    results = summary["results"]
    names = [r["impl"] for r in results]
    fig = _figure(10.0, 3.6)
    ax_acc, ax_time, ax_mem = fig.subplots(1, 3)
    colours = [f"C{i}" for i in range(len(names))]
    ax_acc.bar(
        names,
        [100 * r["test_accuracy_mean"] for r in results],
        yerr=[100 * r["test_accuracy_std"] for r in results],
        color=colours,
        capsize=4,
    )
    ax_acc.set_ylabel("test accuracy (%)")
    ax_time.bar(names, [r["epoch_ms_median"] for r in results], color=colours)
    ax_time.set_ylabel("ms per epoch (median)")
    ax_mem.bar(names, [r["peak_memory_mb"] for r in results], color=colours)
    ax_mem.set_ylabel("peak memory (MB)")
    for ax in (ax_acc, ax_time, ax_mem):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{summary['dataset']}: {summary['nodes']:,} nodes, {summary['spec']['runs']} runs each")
    return fig


def read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RunError(f"{path} line {n} is not valid JSON: {exc.msg}") from exc
    return records


def run_figure(records: list[dict[str, Any]], title: str = "") -> Any:
    """Training loss and accuracy against step for one run (final evaluation marked)."""
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_accuracy" in r]
    fig = _figure(9.0, 4.0)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss"] for r in train])
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_acc.plot(steps, [r["accuracy"] for r in train], label="training (fresh batches)")
    if evals:
        ax_acc.scatter(
            [r["step"] for r in evals], [r["eval_accuracy"] for r in evals], color="C3", zorder=3, label="evaluation"
        )
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.05)
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig``; the format follows the file extension (png, pdf, svg ...)."""
    path = Path(path)
    if not path.suffix:
        raise UsageError(f"give the figure file an extension that names its format (e.g. {path}.png, .svg, .pdf)")
    fmt = path.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise UsageError(f"cannot write a .{fmt} figure; use one of: {', '.join(sorted(supported))}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=fmt, dpi=150)
    except OSError as exc:
        raise RunError(f"cannot write figure {path}: {exc.strerror or exc}") from exc
    return path


def plot_path(path: Path, out: Path | None = None) -> Path:
    """Plot a sweep directory (accuracy vs length), a run directory (loss and accuracy curves) or a
    gcn directory (the implementations side by side)."""
    path = Path(path)
    if path.is_file() and path.name in (RESULTS_FILE, METRICS_FILE, GCN_RESULTS):
        path = path.parent
    if out is not None and Path(out).is_dir():
        default = FIGURE_FILE if (path / RESULTS_FILE).is_file() else "curves.png"
        out = Path(out) / ("comparison.png" if (path / GCN_RESULTS).is_file() else default)
    if path.is_dir() and (path / GCN_RESULTS).is_file():
        summary = read_gcn_results(path / GCN_RESULTS)
        return save_figure(gcn_figure(summary), out or path / "comparison.png")
    if path.is_dir() and (path / RESULTS_FILE).is_file():
        rows = read_results(path / RESULTS_FILE)
        return save_figure(sweep_figure(rows, title=f"Palindromes: {path.name}"), out or path / FIGURE_FILE)
    if path.is_dir() and (path / METRICS_FILE).is_file():
        records = read_metrics(path / METRICS_FILE)
        if not records:
            raise RunError(f"{path / METRICS_FILE} is empty: nothing to plot yet")
        return save_figure(run_figure(records, title=path.name), out or path / "curves.png")
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    raise UsageError(
        f"{path} is not a sweep directory (with {RESULTS_FILE}), a run directory (with {METRICS_FILE}) "
        f"or a gcn directory (with {GCN_RESULTS})"
    )
