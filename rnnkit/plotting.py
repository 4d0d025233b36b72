"""Figures with matplotlib's object API (no pyplot state, no display): headless by construction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit.errors import RunError, UsageError
from rnnkit.gcn import RESULTS_FILE as GCN_RESULTS
from rnnkit.gcn import read_results as read_gcn_results
from rnnkit.runner import METRICS_FILE
from rnnkit.stats import Aggregate, aggregate
from rnnkit.sweep import FIGURE_FILE, RESULTS_FILE, read_results, read_sweep_file


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    return Figure(figsize=(width, height), layout="constrained")


def sweep_axes(rows: list[dict[str, Any]], keys: list[str], x: str | None = None) -> str:
    """The swept key a sweep figure puts on the x axis: ``x``, else ``length``, else the first key
    with more than one numeric value, else the first key."""
    if x is not None:
        if x not in keys:
            raise UsageError(f"--x {x}: not a swept key of this sweep (swept: {', '.join(keys)})")
        return x
    if "length" in keys:
        return "length"
    for key in keys:
        values = {r.get(key) for r in rows}
        if len(values) > 1 and all(isinstance(v, int | float) for v in values):
            return key
    return keys[0]


def figure_name(x: str, metric: str) -> str:
    """The default file name of a sweep figure (``accuracy_vs_length.png`` for the palindrome study)."""
    return FIGURE_FILE if (x, metric) == ("length", "best_accuracy") else f"{metric}_vs_{x}.png"


def sweep_figure(
    rows: list[dict[str, Any]],
    keys: list[str],
    *,
    x: str | None = None,
    metric: str = "best_accuracy",
    title: str = "",
) -> Any:
    """``metric`` against one swept key, one line per combination of the other swept keys: the mean
    over seeds, and a band of the 95% confidence interval of that mean (Student t) where a point has
    two seeds or more. What the band is, and n, are written on the figure."""
    x = sweep_axes(rows, keys, x)
    if not any(isinstance(r.get(metric), int | float) for r in rows):
        known = sorted({k for r in rows for k, v in r.items() if isinstance(v, float)})
        raise UsageError(f"--metric {metric}: no run has it (numeric columns: {', '.join(known) or 'none yet'})")
    others = [k for k in keys if k != x]
    fig = _figure()
    ax = fig.add_subplot()
    points = aggregate(rows, [*others, x], metric)
    lines: dict[tuple, list[Aggregate]] = {}
    for point in points:
        lines.setdefault(tuple(point.values[k] for k in others), []).append(point)
    ns = set()
    for combination, line_points in lines.items():
        line_points = sorted((p for p in line_points if p.n), key=lambda p: p.values[x])
        if not line_points:
            continue
        xs = [p.values[x] for p in line_points]
        means = [p.mean for p in line_points]
        name = ", ".join(f"{k}={v}" if len(others) > 1 else str(v) for k, v in zip(others, combination, strict=True))
        line = ax.plot(xs, means, marker="o", markersize=3, label=name or metric)[0]
        banded = [p for p in line_points if p.n > 1]
        ns.update(p.n for p in line_points)
        if banded:
            ax.fill_between(
                [p.values[x] for p in banded],
                [p.mean - p.ci for p in banded],
                [p.mean + p.ci for p in banded],
                color=line.get_color(),
                alpha=0.2,
            )
    if max(ns, default=1) > 1:
        n_text = f"n = {min(ns)}" if len(ns) == 1 else f"n = {min(ns)}-{max(ns)}"
        note = f"line: mean over seeds; band: 95% CI of the mean (Student t), {n_text} seeds per point"
    else:
        note = "one seed per point: no band (run with --seeds N for the uncertainty)"
    ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="0.3", va="bottom")
    xs_all = [r.get(x) for r in rows if isinstance(r.get(x), int | float)]
    if xs_all and all(isinstance(v, int) for v in xs_all):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
        ax.set_xscale("log")
    if "accuracy" in metric:
        if x == "length":
            ax.axhline(0.1, color="grey", linestyle=":", linewidth=1, label="chance (0.1)")
        ax.set_ylim(0, 1.05)
    ax.set_xlabel("palindrome length T" if x == "length" else x)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric} against {x}")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
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


def plot_path(path: Path, out: Path | None = None, *, x: str | None = None, metric: str | None = None) -> Path:
    """Plot a sweep directory (``metric``, default best accuracy, against swept key ``x``), a run
    directory (loss and accuracy curves) or a gcn directory (the implementations side by side)."""
    path = Path(path)
    if path.is_file() and path.name in (RESULTS_FILE, METRICS_FILE, GCN_RESULTS):
        path = path.parent
    is_sweep = path.is_dir() and (path / RESULTS_FILE).is_file() and not (path / GCN_RESULTS).is_file()
    if (x is not None or metric is not None) and not is_sweep:
        raise UsageError("--x and --metric are for sweep directories (with results.csv)")
    if path.is_dir() and (path / GCN_RESULTS).is_file():
        summary = read_gcn_results(path / GCN_RESULTS)
        return save_figure(gcn_figure(summary), _target(out, path, "comparison.png"))
    if is_sweep:
        rows = read_results(path / RESULTS_FILE)
        keys = list(read_sweep_file(path)["keys"])
        chosen = sweep_axes(rows, keys, x)
        metric = metric or "best_accuracy"
        figure = sweep_figure(rows, keys, x=chosen, metric=metric, title=f"{path.name}: {metric} against {chosen}")
        return save_figure(figure, _target(out, path, figure_name(chosen, metric)))
    if path.is_dir() and (path / METRICS_FILE).is_file():
        records = read_metrics(path / METRICS_FILE)
        if not records:
            raise RunError(f"{path / METRICS_FILE} is empty: nothing to plot yet")
        return save_figure(run_figure(records, title=path.name), _target(out, path, "curves.png"))
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    raise UsageError(
        f"{path} is not a sweep directory (with {RESULTS_FILE}), a run directory (with {METRICS_FILE}) "
        f"or a gcn directory (with {GCN_RESULTS})"
    )


def _target(out: Path | None, path: Path, default: str) -> Path:
    """Where a figure goes: ``out`` (a file, or a folder to put ``default`` in), else ``path/default``."""
    if out is None:
        return path / default
    return Path(out) / default if Path(out).is_dir() else Path(out)
