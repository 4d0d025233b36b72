"""Figures with matplotlib's object API (no pyplot state, no display): headless by construction.

Each figure says on itself what it shows: what a line, a band or an error bar is and over how many
runs, how a metric is defined where the name alone does not say, and the settings of the runs in the
title. A sweep's figure (``sweep_figure``), a run's curves or several runs overlaid (``runs_figure``),
a GCN comparison (``gcn_figure``) and the gradient flow through time of a run (``gradients_figure``) or
of a sweep (``gradient_sweep_figure``) each return a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from rnnkit.checkpoint import META_FILE, read_meta
from rnnkit.errors import CheckpointError, RunError, UsageError
from rnnkit.gcn import RESULTS_FILE as GCN_RESULTS
from rnnkit.gcn import read_results as read_gcn_results
from rnnkit.gradient_flow import GRADIENTS_FILE, flow_ratio, read_gradients, start_and_end
from rnnkit.runner import METRICS_FILE, saved_spec
from rnnkit.stats import CONFIDENCE, Aggregate, aggregate
from rnnkit.sweep import FIGURE_FILE, RESULTS_FILE, read_results, read_sweep_file

#: Marker and line style of the n-th line of a figure, so that lines stay apart where they overlap
#: and in grey print.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
#: What "best accuracy" is (``TrainResult.best_accuracy``), written on every figure that draws it.
BEST_ACCURACY_NOTE = (
    "best accuracy: the best mean accuracy over an early-stop window of fresh training batches "
    "(train.early_stop.window, 50 by default) or the final held-out evaluation, whichever is higher"
)


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    return Figure(figsize=(width, height), layout="constrained")


def _caption(fig: Any, lines: list[str]) -> None:
    """Notes under the axes (what the marks are, definitions), with room made for them."""
    width = max(40, int(fig.get_figwidth() * 72 / 3.9))  # characters of 7-point text across the figure
    lines = [wrapped for line in lines if line for wrapped in textwrap.wrap(line, width, subsequent_indent="  ")]
    if not lines:
        return
    height = fig.get_figheight()
    line_height = 0.15 / height  # 7-point text, in figure fractions
    bottom = 0.015 + line_height * len(lines)
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="0.25", va="bottom", ha="left", linespacing=1.4)


def readable_log_axis(axis: Any, low: float, high: float) -> None:
    """A log axis whose ticks are labelled with plain numbers (0.02, 0.5, 2) at 1-2-5 steps, or at
    every digit when the data span less than a factor of 10; minor ticks unlabelled."""
    axis.axes.set_yscale("log") if axis is axis.axes.yaxis else axis.axes.set_xscale("log")
    narrow = low > 0 and high / low < 10
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0) if narrow else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    two seeds or more. Each line has its own marker and line style; over integer values (lengths)
    the lines are offset a little along x, so that a line hidden under another still shows. What the
    band is, n, and what the metric means are written on the figure; integer keys get integer ticks."""
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
    lines = {k: v for k, v in lines.items() if any(p.n for p in v)}
    # a key of names (model.name) is drawn at positions 0, 1, ... labelled with its values
    categories = (
        [] if all(isinstance(r.get(x), int | float) for r in rows) else list(dict.fromkeys(r.get(x) for r in rows))
    )

    def position(value: Any) -> float:
        return categories.index(value) if categories else value

    xs_all = list(range(len(categories))) if categories else sorted({r.get(x) for r in rows})
    integer_x = bool(xs_all) and all(_is_int(v) for v in xs_all)
    spacing = min((b - a for a, b in zip(xs_all, xs_all[1:], strict=False)), default=1)
    dodge = 0.12 * spacing if integer_x and len(lines) > 1 else 0.0
    accuracy = "accuracy" in metric
    ns: set[int] = set()
    banded_any = False
    for i, (combination, line_points) in enumerate(lines.items()):
        line_points = sorted((p for p in line_points if p.n), key=lambda p: position(p.values[x]))
        offset = (i - (len(lines) - 1) / 2) * dodge
        xs = [position(p.values[x]) + offset for p in line_points]
        means = [p.mean for p in line_points]
        name = ", ".join(f"{k}={v}" if len(others) > 1 else str(v) for k, v in zip(others, combination, strict=True))
        line = ax.plot(
            xs,
            means,
            marker=MARKERS[i % len(MARKERS)],
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            markersize=5 if i % 2 == 0 else 6.5,
            markerfacecolor=None if i % 2 == 0 else "none",  # hollow: what is under it shows through
            linewidth=1.5,
            label=name or metric.replace("_", " "),
            zorder=3 + i,
        )[0]
        banded = [p for p in line_points if p.n > 1]
        ns.update(p.n for p in line_points)
        if banded:
            banded_any = True
            low = [p.mean - p.ci for p in banded]
            high = [p.mean + p.ci for p in banded]
            if accuracy:  # an accuracy lies in [0, 1]; so does every value its interval could cover
                low, high = [max(v, 0.0) for v in low], [min(v, 1.0) for v in high]
            ax.fill_between(
                [position(p.values[x]) + offset for p in banded],
                low,
                high,
                color=line.get_color(),
                alpha=0.15,
                zorder=1,
            )
    if categories:
        ax.set_xticks(xs_all, [str(c) for c in categories])
    elif integer_x:
        if len(xs_all) <= 16:
            ax.xaxis.set_major_locator(FixedLocator(xs_all))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    elif xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
        readable_log_axis(ax.xaxis, min(xs_all), max(xs_all))
    handles, labels = ax.get_legend_handles_labels()
    if accuracy:
        if x == "length":
            chance = ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
            handles, labels = [*handles, chance], [*labels, "chance (0.1)"]
        ax.set_ylim(0, 1.05)
    n_text = f"n = {min(ns)}" if len(ns) <= 1 else f"n = {min(ns)}-{max(ns)}"
    if banded_any:
        confidence = f"{CONFIDENCE:.0%}"
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append(f"{confidence} CI of the mean, {n_text} seeds")
        note = f"line: mean over seeds; band: {confidence} confidence interval of the mean (Student t), {n_text} seeds"
        note += " per point, clipped to [0, 1]" if accuracy else " per point"
    else:
        note = "one seed per point: no band (run the sweep with --seeds N to see the spread between seeds)"
    ax.set_xlabel("palindrome length T" if x == "length" else x)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric.replace('_', ' ')} against {x}")
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best")
    _caption(
        fig,
        [
            note,
            BEST_ACCURACY_NOTE if metric == "best_accuracy" else "",
            f"points of different lines are offset by up to ±{dodge * (len(lines) - 1) / 2:g} along x so that "
            "overlapping lines stay visible"
            if dodge
            else "",
        ],
    )
    return fig


def gcn_figure(summary: dict[str, Any]) -> Any:
    """Test accuracy (mean ± std over the runs, each run a dot; the axis zoomed to the data), time per
    epoch (median over every epoch of every run; each run's median a dot when recorded) and peak memory
    per implementation; device, epochs and n in the title."""
    results = summary["results"]
    names = [r["impl"] for r in results]
    spec = summary.get("spec") or {}
    fig = _figure(11.0, 4.0)
    ax_acc, ax_time, ax_mem = fig.subplots(1, 3)
    colours = [f"C{i}" for i in range(len(names))]
    positions = list(range(len(names)))
    counts = {len(r.get("runs") or []) or spec.get("runs", 1) for r in results}
    n = max(counts) if counts else 1
    n_text = f"n = {n}" if len(counts) <= 1 else f"n = {min(counts)}-{max(counts)}"
    values_all = []
    for i, result in enumerate(results):
        runs = [100 * float(run["test_accuracy"]) for run in result.get("runs") or [] if "test_accuracy" in run]
        mean, std = 100 * result["test_accuracy_mean"], 100 * result["test_accuracy_std"]
        values_all += [*runs, mean - std, mean + std]
        if len(runs) > 1:
            jitter = [0.15 * ((k % 7) - 3) / 3 for k in range(len(runs))]
            ax_acc.scatter([i + j for j in jitter], runs, s=12, color=colours[i], alpha=0.45, zorder=2, linewidths=0)
        ax_acc.errorbar(
            [i],
            [mean],
            yerr=[std] if len(runs) > 1 else None,
            fmt="o",
            color=colours[i],
            markersize=8,
            capsize=6,
            elinewidth=1.5,
            zorder=3,
        )
        top = max([mean + (std if len(runs) > 1 else 0.0), *runs])
        ax_acc.annotate(
            f"{mean:.1f}%" + (f" ± {std:.1f}" if len(runs) > 1 else ""),
            (i, top),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    low, high = min(values_all), max(values_all)
    margin = max(0.5, 0.25 * (high - low))
    ax_acc.set_ylim(max(0.0, low - margin), min(100.0, high + 1.6 * margin))  # room for the labels
    ax_acc.set_xlim(-0.6, len(names) - 0.4)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy at the best validation epoch", fontsize=10)
    acc_handles = [Line2D([], [], marker="o", linestyle="", color="0.3", markersize=7)]
    acc_labels = [f"mean ± std over {n_text} runs" if n > 1 else "one run: no error bar"]
    if n > 1:
        acc_handles.append(Line2D([], [], marker="o", linestyle="", color="0.3", alpha=0.45, markersize=4))
        acc_labels.append("single runs")
    ax_acc.legend(acc_handles, acc_labels, fontsize=7, loc="lower right")

    ax_time.bar(positions, [r["epoch_ms_median"] for r in results], color=colours, alpha=0.85)
    spread = False
    for i, result in enumerate(results):
        per_run = [float(run["epoch_ms_median"]) for run in result.get("runs") or [] if "epoch_ms_median" in run]
        if len(per_run) > 1:
            spread = True
            ax_time.errorbar(
                [i],
                [result["epoch_ms_median"]],
                yerr=[[result["epoch_ms_median"] - min(per_run)], [max(per_run) - result["epoch_ms_median"]]],
                fmt="none",
                ecolor="black",
                capsize=5,
            )
            jitter = [0.15 * ((k % 7) - 3) / 3 for k in range(len(per_run))]
            ax_time.scatter([i + j for j in jitter], per_run, s=10, color="black", alpha=0.5, zorder=3, linewidths=0)
    ax_time.set_ylabel("ms per epoch")
    ax_time.set_title("time per training epoch (median)", fontsize=10)
    ax_mem.bar(positions, [r["peak_memory_mb"] for r in results], color=colours, alpha=0.85)
    ax_mem.set_ylabel("peak memory (MB)")
    ax_mem.set_title("peak memory", fontsize=10)
    for ax in (ax_acc, ax_time, ax_mem):
        ax.set_xticks(positions, names)
        ax.grid(alpha=0.3, axis="y")
    devices = sorted({str(r.get("device", "")) for r in results if r.get("device")})
    epochs = spec.get("epochs")
    parts = [f"{summary['dataset']}: {summary['nodes']:,} nodes"]
    if summary.get("edges"):
        parts[0] += f", {summary['edges']:,} edges"
    if epochs:
        parts.append(f"{epochs} epochs")
    if devices:
        parts.append(", ".join(devices))
    parts.append(f"{n_text} runs per implementation (seeds 0-{n - 1})" if n > 1 else "one run per implementation")
    fig.suptitle(" · ".join(parts))
    time_note = (
        "time: bar the median epoch over all runs, whiskers the range of the runs' medians, dots single runs"
        if spread
        else "time: the median training epoch over every epoch of "
        + (f"the {n_text} runs" if n > 1 else "the run")
        + " (evaluation not included)"
    )
    _caption(
        fig,
        [
            time_note,
            "peak memory: one measurement per implementation, over all its runs in one process "
            "(GPU: allocated by torch; CPU: growth of the process's resident memory)",
        ],
    )
    return fig


def read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RunError(f"{path} line {n} is not valid JSON: {exc.msg}") from exc
                if isinstance(record, dict):
                    records.append(record)
    return records


@dataclass
class RunCurves:
    """One run as its figure needs it: a label, its metrics.jsonl records, its resolved spec and record."""

    label: str
    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, run_dir: Path, label: str | None = None) -> RunCurves:
        """The curves of the run in ``run_dir`` (RunError when it has no readable metrics yet)."""
        run_dir = Path(run_dir)
        records = read_metrics(run_dir / METRICS_FILE)
        if not records:
            raise RunError(f"{run_dir / METRICS_FILE} is empty: nothing to plot yet")
        try:
            record = read_meta(run_dir / META_FILE)
        except CheckpointError:
            record = {}
        return cls(label or run_dir.name, records, saved_spec(run_dir) or {}, record)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_text(config: dict[str, Any], record: dict[str, Any] | None = None) -> str:
    """The key settings of a run, for a title: model and size, task and its main setting, optimiser,
    learning rate and batch; and how it ended (``lstm hidden 128 · palindrome T=20 · rmsprop lr 0.001,
    batch 128 · solved at step 418``)."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    record = record or {}
    parts = []
    model_name = model.get("name") or record.get("model")
    if model_name:
        sizes = [
            f"{label} {_fmt(model[k])}" for k, label in (("hidden_size", "hidden"), ("layers", "layers")) if k in model
        ]
        parts.append(" ".join([str(model_name), *sizes]) if len(sizes) < 2 else f"{model_name} {', '.join(sizes)}")
    task_name = task.get("name") or record.get("task")
    if task_name == "palindrome" and "length" in task:
        parts.append(f"palindrome T={task['length']}")
    elif task_name == "text":
        source = Path(str(task["text"])).name if task.get("text") else task.get("corpus", "")
        parts.append(f"text {source}, windows of {task.get('seq_len', '?')}")
    elif task_name == "graph":
        parts.append(f"graph {task.get('dataset', '')}")
    elif task_name:
        parts.append(str(task_name))
    if train.get("optimizer"):
        optimiser = f"{train['optimizer']} lr {_fmt(train.get('lr', '?'))}"
        if task_name != "graph":  # a graph run trains on the whole graph at every step
            optimiser += f", batch {train.get('batch_size', '?')}"
        parts.append(optimiser)
    status, steps = record.get("status"), record.get("steps")
    if status and steps is not None:
        parts.append(
            f"{status} at step {steps:,}"
            if status in ("solved", "plateau", "diverged")
            else f"{status}, {steps:,} steps"
        )
    return " · ".join(parts)


def _series(records: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    points = [
        (r["step"], float(r[key]) * scale)
        for r in records
        if isinstance(r.get(key), int | float) and isinstance(r.get("step"), int | float) and math.isfinite(r[key])
    ]
    return [p[0] for p in points], [p[1] for p in points]


def runs_figure(runs: list[RunCurves], title: str = "") -> Any:
    """The curves of one run, or of several overlaid (one colour each): training and validation loss
    (log axis), bits per character when a run has them (text), and accuracy; training as lines,
    validation as dashed lines with markers. One run's title gives its model and key settings; with
    several, each run's settings are in the legend."""
    if not runs:
        raise UsageError("no runs to plot")
    has_bpc = any(_series(r.records, "eval_bpc")[0] for r in runs)
    has_accuracy = any(_series(r.records, "accuracy")[0] or _series(r.records, "eval_accuracy")[0] for r in runs)
    panels = ["loss", *(["bpc"] if has_bpc else []), *(["accuracy"] if has_accuracy else [])]
    fig = _figure(4.2 * len(panels) + 0.6, 4.3 if len(runs) == 1 else 4.8)
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True))
    single = len(runs) == 1
    losses: list[float] = []
    validation_drawn = False
    for i, run in enumerate(runs):
        train_colour = "C0" if single else f"C{i % 10}"
        eval_colour = "C3" if single else train_colour
        marker = MARKERS[i % len(MARKERS)]
        for panel, train_key, eval_key, scale in (
            ("loss", "loss", "eval_loss", 1.0),
            ("bpc", "loss", "eval_bpc", 1 / math.log(2)),  # training bpc: the loss in bits
            ("accuracy", "accuracy", "eval_accuracy", 1.0),
        ):
            if panel not in axes:
                continue
            ax = axes[panel]
            if panel == "bpc" and not _series(run.records, "eval_bpc")[0]:
                continue  # a classification run in an overlay with text runs
            steps, values = _series(run.records, train_key, scale)
            if steps:
                ax.plot(steps, values, color=train_colour, linewidth=1.3, label="training" if single else run.label)
                if panel == "loss":
                    losses += values
            steps, values = _series(run.records, eval_key)
            if steps:
                validation_drawn = True
                ax.plot(
                    steps,
                    values,
                    color=eval_colour,
                    linestyle="--",
                    marker=marker,
                    markersize=4 if len(steps) < 60 else 0,
                    linewidth=1.1,
                    label="validation" if single else None,
                )
                if panel == "loss":
                    losses += values
    positive = [v for v in losses if v > 0]
    loss_ax = axes["loss"]
    if positive:
        readable_log_axis(loss_ax.yaxis, min(positive), max(positive))
    loss_ax.set_ylabel("loss (cross-entropy, nats)")
    loss_ax.set_title("loss", fontsize=10)
    if "bpc" in axes:
        axes["bpc"].set_ylabel("bits per character")
        axes["bpc"].set_title("bits per character", fontsize=10)
    if "accuracy" in axes:
        axes["accuracy"].set_ylabel("accuracy")
        axes["accuracy"].set_ylim(0, 1.05)
        axes["accuracy"].set_title("accuracy", fontsize=10)
    for ax in axes.values():
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, steps=[1, 2, 2.5, 5, 10]))
    if single:
        for ax in axes.values():
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        run = runs[0]
        settings = settings_text(run.config, run.record)
        fig.suptitle(f"{title or run.label}\n{settings}" if settings else (title or run.label), fontsize=10)
    else:
        handles = [Line2D([], [], color=f"C{i % 10}", linewidth=2) for i in range(len(runs))]
        labels = [f"{run.label}: {settings_text(run.config, run.record)}".rstrip(": ") for run in runs]
        style = [Line2D([], [], color="0.3", linewidth=1.3)]
        style_labels = ["training (means over log_every steps)"]
        if validation_drawn:
            style.append(Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=4))
            style_labels.append("validation")
        fig.legend(handles + style, labels + style_labels, loc="outside lower center", ncols=1, fontsize=7)
        names = " vs ".join(run.label for run in runs)
        fig.suptitle(title or (names if len(names) <= 120 else f"{len(runs)} runs"), fontsize=10)
    notes = []
    if any(_series(r.records, "accuracy")[0] for r in runs) and any(
        (r.config.get("task") or {}).get("name") == "palindrome" for r in runs
    ):
        notes.append("training accuracy: fresh batches, never seen before")
    if single:
        _caption(fig, notes)
    return fig


def run_figure(
    records: list[dict[str, Any]],
    title: str = "",
    config: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
) -> Any:
    """The curves of one run from its metrics.jsonl ``records`` (see ``runs_figure``)."""
    return runs_figure([RunCurves(title or "run", records, config or {}, record or {})], title)


#: What the gradient-flow figures draw, written on them.
GRADIENT_NOTE = (
    "‖∂L/∂s_t‖: the norm of the gradient of the last step's loss L (the mean cross-entropy over one fixed "
    "batch, the same at every record) against the state s_t after step t, through every later step; s_t is "
    "the state the model carries to the next step (vanilla RNN: h_t; LSTM: the cell c_t)"
)
RATIO_NOTE = (
    "ratio: ‖∂L/∂s_1‖ / ‖∂L/∂s_T‖, how much of the gradient at the last step reaches the first, T = length - 1 "
    "steps (theory: a^(T-1) for an RNN with W_hh = a·I in tanh's linear regime; 1 for an LSTM whose forget "
    "gates are 1)"
)
#: The columns ``gradient_rows`` adds to a sweep's rows: the ratio at initialisation and at the end.
RATIO_COLUMNS = {"gradient_ratio_start": "at initialisation (step 0)", "gradient_ratio_end": "at the end of training"}


def _state_symbol(config: dict[str, Any]) -> str:
    name = (config.get("model") or {}).get("name") if isinstance(config.get("model"), dict) else None
    return {"rnn": "h_t", "lstm": "c_t"}.get(str(name), "s_t")


def _spread(records: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most ``most`` records evenly spread over ``records``, the first and the last always among them."""
    if len(records) <= most:
        return list(records)
    picks = sorted({round(i * (len(records) - 1) / (most - 1)) for i in range(most)})
    return [records[i] for i in picks]


def gradients_figure(
    records: list[dict[str, Any]],
    title: str = "",
    config: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    most: int = 10,
) -> Any:
    """A run's gradient flow through time from its gradients.jsonl ``records``: ‖∂L/∂s_t‖ against the
    sequence step t on a log axis, one curve per recorded training step (at most ``most``, evenly
    spread, the first and last always), coloured from the first record (dark) to the last (light); each
    curve's ratio ‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ in the legend."""
    records = [r for r in records if r.get("norms")]
    if not records:
        raise UsageError("no gradient records to plot")
    config = config or {}
    shown = _spread(records, most)
    fig = _figure(9.5, 4.8)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    last = max(r["step"] for r in shown) or 1
    hidden = 0
    longest = 0
    for i, r in enumerate(shown):
        points = [(t, n) for t, n in enumerate(r["norms"], 1) if math.isfinite(n) and n > 0]
        hidden += len(r["norms"]) - len(points)
        longest = max(longest, len(r["norms"]))
        ratio = flow_ratio(r["norms"])
        when = " (initialisation)" if r["step"] == 0 else " (last record)" if r is records[-1] else ""
        ax.plot(
            [t for t, _ in points],
            [n for _, n in points],
            color=cmap(0.88 * r["step"] / last),  # viridis up to its yellow-green, which still shows on white
            marker=MARKERS[i % len(MARKERS)] if longest <= 60 else None,
            markersize=3.5,
            linewidth=1.4,
            label=f"step {r['step']:,}{when}: ratio {ratio:.2g}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step t of the sequence (1: the first digit read)")
    symbol = _state_symbol(config)
    ax.set_ylabel(f"‖∂L/∂{symbol}‖ (log scale)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=7, title="training step: ratio", title_fontsize=7, loc="outside right upper")
    settings = settings_text(config, record)
    head = title or "gradient flow through time"
    ax.set_title(f"{head}\n{settings}" if settings else head, fontsize=10)  # over the axes: the legend is beside them
    _caption(
        fig,
        [
            GRADIENT_NOTE,
            RATIO_NOTE,
            f"{len(shown)} of {len(records)} records shown, evenly spread" if len(shown) < len(records) else "",
            f"{hidden} norms of 0 or not finite (underflow, divergence) not drawn" if hidden else "",
        ],
    )
    return fig


def gradient_rows(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of a sweep's results.csv with the ratio ‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ of each run at its start
    and at its end (``RATIO_COLUMNS``; None where the run has no such record), read from the run
    directories inside ``sweep_dir``."""
    out = []
    for row in rows:
        run_dir = Path(sweep_dir) / Path(str(row.get("run_dir") or "")).name
        start, end = start_and_end(read_gradients(run_dir)) if row.get("run_dir") else (None, None)
        ratios = [flow_ratio(r["norms"]) if r is not None else None for r in (start, end)]
        out.append({**row, **dict(zip(RATIO_COLUMNS, ratios, strict=True))})
    return out


def gradient_sweep_figure(rows: list[dict[str, Any]], keys: list[str], *, x: str | None = None, title: str = "") -> Any:
    """The ratio ‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ against a swept key (the length) at initialisation and at the end
    of training, side by side on one log axis; one line per combination of the other swept keys (the
    model): the geometric mean over seeds, each run a dot, filled where the run was solved. ``rows``
    come from ``gradient_rows``."""
    x = sweep_axes(rows, keys, x)
    recorded = [r for r in rows if any(r.get(c) is not None for c in RATIO_COLUMNS)]
    if not recorded:
        raise UsageError(
            "no run of this sweep recorded its gradient flow (train.record_gradients: sweeps record it by "
            "default where the model shows its per-step states)"
        )
    others = [k for k in keys if k != x]
    combinations = list(dict.fromkeys(tuple(r.get(k) for k in others) for r in recorded))
    xs_all = sorted({r.get(x) for r in recorded}, key=lambda v: (not isinstance(v, int | float), v))
    numeric = all(isinstance(v, int | float) for v in xs_all)

    def position(value: Any) -> float:
        return value if numeric else xs_all.index(value)

    fig = _figure(11.0, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    dropped = 0
    seeds_per_point: set[int] = set()
    for ax, (column, when) in zip(axes, RATIO_COLUMNS.items(), strict=True):
        for i, combination in enumerate(combinations):
            group = [r for r in recorded if tuple(r.get(k) for k in others) == combination]
            colour = f"C{i % 10}"
            line_x, line_y = [], []
            for value in xs_all:
                ratios = [r for r in group if r.get(x) == value and r.get(column) is not None]
                good = [r for r in ratios if math.isfinite(r[column]) and r[column] > 0]
                dropped += len(ratios) - len(good)
                if not good:
                    continue
                seeds_per_point.add(len(good))
                line_x.append(position(value))
                line_y.append(10 ** statistics.fmean([math.log10(r[column]) for r in good]))
                solved = [r for r in good if r.get("status") == "solved"]
                unsolved = [r for r in good if r.get("status") != "solved"]
                for runs, face in ((solved, colour), (unsolved, "none")):
                    if runs:
                        ax.scatter(
                            [position(value)] * len(runs),
                            [r[column] for r in runs],
                            s=22,
                            facecolors=face,
                            edgecolors=colour,
                            linewidths=1.0,
                            alpha=0.8,
                            zorder=4,
                        )
            name = ", ".join(
                f"{k}={v}" if len(others) > 1 else str(v) for k, v in zip(others, combination, strict=True)
            )
            ax.plot(
                line_x,
                line_y,
                color=colour,
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                linewidth=1.5,
                label=name or "ratio",
                zorder=3,
            )
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(when, fontsize=10)
        ax.set_xlabel("palindrome length T" if x == "length" else x)
        ax.grid(alpha=0.3)
        if not numeric:
            ax.set_xticks(list(range(len(xs_all))), [str(v) for v in xs_all])
        elif len(xs_all) <= 16 and all(_is_int(v) for v in xs_all):
            ax.xaxis.set_major_locator(FixedLocator(xs_all))
    axes[0].set_ylabel("‖∂L/∂s_1‖ / ‖∂L/∂s_T‖ (log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="grey", linestyle=":", linewidth=1),
        Line2D([], [], marker="o", linestyle="", color="0.3", markersize=5),
        Line2D([], [], marker="o", linestyle="", color="0.3", markerfacecolor="none", markersize=5),
    ]
    labels += ["ratio 1: nothing lost on the way back", "a run, solved", "a run, not solved"]
    axes[1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(title or f"gradient flow through time against {x}", fontsize=10)
    n = (
        f"n = {min(seeds_per_point)}"
        if len(seeds_per_point) <= 1
        else f"n = {min(seeds_per_point)}-{max(seeds_per_point)}"
    )
    missing = len(rows) - len(recorded)
    _caption(
        fig,
        [
            f"line: the geometric mean over seeds ({n} per point); dot: one run, filled where it was solved (its "
            "training accuracy reached the early-stop threshold)",
            RATIO_NOTE,
            GRADIENT_NOTE,
            f"{dropped} ratios of 0 or not finite (underflow, divergence) not drawn" if dropped else "",
            f"{missing} runs without gradient records not drawn" if missing else "",
        ],
    )
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


def plot_path(
    path: Path, out: Path | None = None, *, x: str | None = None, metric: str | None = None, gradients: bool = False
) -> Path:
    """Plot a sweep directory (``metric``, default best accuracy, against swept key ``x``), a run
    directory (loss and accuracy curves) or a gcn directory (the implementations side by side); with
    ``gradients``, the gradient flow through time of a run or a sweep instead."""
    path = Path(path)
    if path.is_file() and path.name in (RESULTS_FILE, METRICS_FILE, GCN_RESULTS, GRADIENTS_FILE):
        path = path.parent
    is_sweep = path.is_dir() and (path / RESULTS_FILE).is_file() and not (path / GCN_RESULTS).is_file()
    if (x is not None or metric is not None) and not is_sweep:
        raise UsageError("--x and --metric are for sweep directories (with results.csv)")
    if gradients:
        return _plot_gradients(path, out, is_sweep, x, metric)
    if path.is_dir() and (path / GCN_RESULTS).is_file():
        summary = read_gcn_results(path / GCN_RESULTS)
        return save_figure(gcn_figure(summary), _target(out, path, "comparison.png"))
    if is_sweep:
        rows = read_results(path / RESULTS_FILE)
        keys = list(read_sweep_file(path)["keys"])
        chosen = sweep_axes(rows, keys, x)
        metric = metric or "best_accuracy"
        figure = sweep_figure(
            rows, keys, x=chosen, metric=metric, title=f"{path.name}: {metric.replace('_', ' ')} against {chosen}"
        )
        return save_figure(figure, _target(out, path, figure_name(chosen, metric)))
    if path.is_dir() and (path / METRICS_FILE).is_file():
        return save_figure(runs_figure([RunCurves.read(path)]), _target(out, path, "curves.png"))
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    raise UsageError(
        f"{path} is not a sweep directory (with {RESULTS_FILE}), a run directory (with {METRICS_FILE}) "
        f"or a gcn directory (with {GCN_RESULTS})"
    )


def _plot_gradients(path: Path, out: Path | None, is_sweep: bool, x: str | None, metric: str | None) -> Path:
    """``rnnkit plot PATH --gradients``: a sweep's ratios against the length, or a run's norms against t."""
    if metric is not None:
        raise UsageError("--metric and --gradients draw different figures: give one of them")
    if is_sweep:
        rows = gradient_rows(path, read_results(path / RESULTS_FILE))
        keys = list(read_sweep_file(path)["keys"])
        chosen = sweep_axes(rows, keys, x)
        figure = gradient_sweep_figure(
            rows, keys, x=chosen, title=f"{path.name}: gradient flow through time against {chosen}"
        )
        return save_figure(figure, _target(out, path, f"gradient_ratio_vs_{chosen}.png"))
    if path.is_dir() and (path / METRICS_FILE).is_file():
        records = read_gradients(path)
        if not records:
            raise UsageError(
                f"{path} has no gradient records ({GRADIENTS_FILE}): train it with train.record_gradients=true "
                "(a sequence-classification model that shows its per-step states)"
            )
        try:
            record = read_meta(path / META_FILE)
        except CheckpointError:
            record = {}
        figure = gradients_figure(records, path.name, saved_spec(path) or {}, record)
        return save_figure(figure, _target(out, path, "gradients.png"))
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    raise UsageError(
        f"--gradients is for a run directory (with {METRICS_FILE}) or a sweep directory (with {RESULTS_FILE})"
    )


def plot_paths(
    paths: list[Path],
    out: Path | None = None,
    *,
    x: str | None = None,
    metric: str | None = None,
    gradients: bool = False,
) -> Path:
    """``plot_path`` for one path; for several, their runs overlaid in one figure (each must be a run
    directory), written to ``out``, else beside them: ``<a>_vs_<b>.png`` in their common folder."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("give a sweep, run or gcn directory to plot")
    if len(paths) == 1:
        return plot_path(paths[0], out, x=x, metric=metric, gradients=gradients)
    if gradients:
        raise UsageError("--gradients draws one run or one sweep: give one directory")
    if x is not None or metric is not None:
        raise UsageError("--x and --metric are for one sweep directory, not for runs overlaid")
    runs = []
    for path in paths:
        if path.is_file() and path.name == METRICS_FILE:
            path = path.parent
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if not (path.is_dir() and (path / METRICS_FILE).is_file()):
            raise UsageError(f"{path} is not a run directory (with {METRICS_FILE}); only runs can be overlaid")
        runs.append(path)
    labels = _labels(runs)
    figure = runs_figure([RunCurves.read(path, label) for path, label in zip(runs, labels, strict=True)])
    common = Path(os.path.commonpath([p.absolute() for p in runs]))
    if common in [p.absolute() for p in runs]:
        common = common.parent
    name = "_vs_".join(p.name for p in runs)
    default = f"{name}.png" if len(name) <= 100 else f"overlay_of_{len(runs)}_runs.png"
    return save_figure(figure, _target(out, common, default))


def _labels(paths: list[Path]) -> list[str]:
    """Short labels for runs: their names, with the parent folder added where names repeat."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _target(out: Path | None, path: Path, default: str) -> Path:
    """Where a figure goes: ``out`` (a file, or a folder to put ``default`` in), else ``path/default``."""
    if out is None:
        return path / default
    return Path(out) / default if Path(out).is_dir() else Path(out)
