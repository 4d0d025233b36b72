"""Progress on stderr: rich progress bars, and the report of a training run (first line, samples).

The bars are off when stderr is not a terminal or when switched off (``--no-progress``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rnnkit.rundir import is_locked, latest_record
from rnnkit.spec import RunSpec
from rnnkit.training import Callback, StepStats

stderr_console = Console(stderr=True)


def progress_enabled(requested: bool = True) -> bool:
    return requested and stderr_console.is_terminal


class TrainingProgress(Callback):
    """A training callback: one bar with loss, accuracy and steps/s, updated every step."""

    def __init__(
        self,
        total_steps: int,
        description: str,
        enabled: bool = True,
        start: int = 0,
        units: tuple[str, int] | None = None,
    ) -> None:
        self.enabled = progress_enabled(enabled)
        self.start = start
        self.unit, self.per_step = units or ("steps", 1)
        self.progress: Progress | None = None
        self.total = total_steps
        self.description = description
        self.task_id: Any = None

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  {task.fields[rate]:,.0f} "
                    + self.unit
                    + "/s"
                ),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr_console,
                transient=False,
            )
            self.progress.start()
            self.task_id = self.progress.add_task(
                self.description, total=self.total, completed=self.start, loss=float("nan"), acc=0.0, rate=0.0
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
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr_console,
            )
            self.task_id = self.progress.add_task(description, total=total)

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
            shown = "\n".join(["", *lines[:8], *([f"... and {len(lines) - 8} more"] if len(lines) > 8 else [])])
            if self.progress is not None:
                self.progress.update(self.task_id, description=f"runs{shown}")
