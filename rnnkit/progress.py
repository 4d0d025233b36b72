"""Progress on stderr: rich progress bars, and the report of a training run (first line, samples).

The bars are off when stderr is not a terminal or when switched off (``--no-progress``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from rnnkit.rundir import is_locked, latest_record
from rnnkit.spec import RunSpec
from rnnkit.training import Callback, StepStats

stderr_console = Console(stderr=True)


def progress_enabled(requested: bool = True) -> bool:
    return requested and stderr_console.is_terminal


class LabelledElapsed(ProgressColumn):
    """The time since the bar started, labelled: ``elapsed 0:01:02``."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        shown = "-:--:--" if elapsed is None else str(timedelta(seconds=max(0, int(elapsed))))
        return Text(f"elapsed {shown}", style="progress.elapsed")


class LabelledRemaining(ProgressColumn):
    """The time left to the step budget at the current speed, labelled: ``left 0:03:10``. When the run
    may stop before its budget (early stop, plateau: the task field ``stops_early``), the time is an
    upper bound and shown as ``left ≤0:03:10``."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        remaining = task.time_remaining
        shown = "-:--:--" if remaining is None else str(timedelta(seconds=max(0, int(remaining))))
        bound = "≤" if task.fields.get("stops_early", True) and not task.finished else ""
        return Text(f"left {bound}{shown}", style="progress.remaining")


def may_stop_early(cfg: Any) -> bool:
    """Whether a run under TrainConfig ``cfg`` may end before ``max_steps`` (early stop or plateau on)."""
    return bool(cfg.early_stop.threshold > 0 or cfg.plateau.patience > 0)


def evaluation_text(metrics: dict[str, float]) -> str:
    """The latest validation figures as the bar shows them: loss, then bits per character where the task
    has them (text), else accuracy."""
    shown = f"val loss {metrics['loss']:.4f}" if "loss" in metrics else "val"
    if "bpc" in metrics:
        shown += f" bpc {metrics['bpc']:.3f}"
    elif "accuracy" in metrics:
        shown += f" acc {metrics['accuracy']:.3f}"
    return shown


class _BarWithLines(Progress):
    """A progress bar with lines of text below it, so that the bar's own line stays short enough for an
    80-column terminal: ``lines_of(task)`` gives each task's lines (the training figures; the runs of a
    sweep in flight)."""

    def __init__(self, *columns: Any, lines_of: Callable[[Task], list[str]], **kwargs: Any) -> None:
        super().__init__(*columns, expand=False, **kwargs)
        self.lines_of = lines_of

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            for line in self.lines_of(task):
                yield Text(line, style="progress.data.speed", no_wrap=True, overflow="ellipsis")


def _training_figures(unit: str) -> Callable[[Task], list[str]]:
    """The line below a training bar: training loss and accuracy, the latest validation, the speed."""

    def lines(task: Task) -> list[str]:
        fields = task.fields
        line = f"  loss {fields['loss']:.4f}  acc {fields['acc']:.3f}"
        if fields.get("val"):
            line += f"  ·  {fields['val']}"
        return [f"{line}  ·  {fields['rate']:,.0f} {unit}/s"]

    return lines


def _field_lines(task: Task) -> list[str]:
    return list(task.fields.get("lines", ()))


class TrainingProgress(Callback):
    """A training callback: one bar with the training loss, accuracy and speed, updated every step, the
    validation loss (and bpc) once evaluated, and the time elapsed and left, labelled.

    ``stops_early``: whether the run may stop before ``total_steps`` (early stop or plateau on: then
    the time left is shown as an upper bound, ``≤``; ``may_stop_early`` tells it from a TrainConfig)."""

    def __init__(
        self,
        total_steps: int,
        description: str,
        enabled: bool = True,
        start: int = 0,
        units: tuple[str, int] | None = None,
        stops_early: bool = True,
    ) -> None:
        self.enabled = progress_enabled(enabled)
        self.start = start
        self.unit, self.per_step = units or ("steps", 1)
        self.progress: Progress | None = None
        self.total = total_steps
        self.description = description
        self.stops_early = stops_early
        self.task_id: Any = None

    @property
    def console(self) -> Console:
        """The console the bar draws on: print through it (``console.print``) to write a line above the bar."""
        return self.progress.console if self.progress is not None else stderr_console

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self.progress = _BarWithLines(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=40),
                MofNCompleteColumn(),
                LabelledElapsed(),
                LabelledRemaining(),
                console=stderr_console,
                transient=False,
                lines_of=_training_figures(self.unit),
            )
            self.progress.start()
            self.task_id = self.progress.add_task(
                self.description,
                total=self.total,
                completed=self.start,
                loss=float("nan"),
                acc=0.0,
                rate=0.0,
                val="",
                stops_early=self.stops_early,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_step(self, stats: StepStats) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task_id,
                completed=stats.step,
                loss=stats.loss,
                acc=stats.accuracy,
                rate=stats.steps_per_s * self.per_step,
            )

    def on_eval(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, val=evaluation_text(metrics))


class TrainingReport(Callback):
    """A training callback for the terminal: the run's first line, and each training sample on stderr
    as ``Step 08K/40K: text`` (the format of Karpathy's char-rnn samples)."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_start(self, spec: RunSpec, run_dir: Path, resumed: bool) -> None:
        verb = "resuming" if resumed else "training"
        stderr_console.print(f"{verb} [bold]{spec.model_name}[/] on {spec.task_name} -> {run_dir}", soft_wrap=True)

    def on_sample(self, step: int, text: str) -> None:
        shown = text.replace("\n", "\\n")
        if self.max_steps >= 1000:
            where = f"Step {step // 1000:02d}K/{self.max_steps // 1000}K"
        else:
            where = f"Step {step}/{self.max_steps}"
        stderr_console.print(f"{where}: {shown}", markup=False, highlight=False)


class CountProgress:
    """A plain count bar (sweeps: runs done of runs planned)."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.progress: Progress | None = None
        if progress_enabled(enabled):
            self.progress = _BarWithLines(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=40),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                LabelledElapsed(),
                LabelledRemaining(),
                console=stderr_console,
                lines_of=_field_lines,
            )
            self.task_id = self.progress.add_task(description, total=total, stops_early=False)

    def __enter__(self) -> CountProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id, n)

    def log(self, message: str) -> None:
        """A line on stderr (above the bar while it shows)."""
        stderr_console.print(message, markup=False, highlight=False, soft_wrap=True)


class SweepProgress(CountProgress):
    """The sweep's bar: runs finished of planned, with an ETA, and below it every run in flight (its
    run directory is locked, by this process or any other sharing it) with its step and latest
    metric, refreshed every ``every`` seconds from the runs' metrics.jsonl."""

    def __init__(self, total: int, run_dirs: list[Path], enabled: bool = True, every: float = 1.0) -> None:
        super().__init__(total, "runs", enabled)
        self.run_dirs = run_dirs
        self.every = every
        self.done: set[Path] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SweepProgress:
        super().__enter__()
        if self.progress is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.every)
        if self.progress is not None:
            self.progress.update(self.task_id, lines=[])  # nothing is in flight any more
        super().__exit__(*exc)

    def finished(self, run_dir: Path) -> None:
        self.done.add(Path(run_dir))

    def in_flight(self) -> list[str]:
        """One line per run in flight: its name, step and latest metric."""
        lines = []
        for run_dir in self.run_dirs:
            if run_dir in self.done or not is_locked(run_dir):
                continue
            record = latest_record(run_dir) or {}
            metric = next(
                (
                    f"{k} {record[k]:.3f}"
                    for k in ("eval_accuracy", "accuracy", "loss")
                    if isinstance(record.get(k), float)
                ),
                "starting",
            )
            lines.append(f"{run_dir.name}: step {record.get('step', 0)}, {metric}")
        return lines

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            lines = self.in_flight()
            shown = [f"  {line}" for line in lines[:8]] + (
                [f"  ... and {len(lines) - 8} more"] if len(lines) > 8 else []
            )
            if self.progress is not None:
                self.progress.update(self.task_id, lines=shown)
