"""Rich progress bars on stderr; silent when stderr is not a terminal or when switched off."""

from __future__ import annotations

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

stderr_console = Console(stderr=True)


def progress_enabled(requested: bool = True) -> bool:
    return requested and stderr_console.is_terminal


class TrainingProgress:
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

    def on_step(self, step: int, loss: float, accuracy: float, steps_per_s: float) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task_id, completed=step, loss=loss, acc=accuracy, rate=steps_per_s * self.per_step
            )


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
