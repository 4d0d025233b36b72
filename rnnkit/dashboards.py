"""Dashboards beside metrics.jsonl: TensorBoard event files and Weights & Biases, as training callbacks.

A spec turns them on in its ``log:`` section (``log.tensorboard: true``, ``log.wandb: true``); both
are optional extras, imported when a run asks for them (``pip install "rnnkit[tensorboard]"``,
``"rnnkit[wandb]"``), with a one-line error naming the extra when one is missing.

What is logged, at the training step it belongs to: every record of metrics.jsonl (``train/loss``,
``train/accuracy``, ``train/lr``, ``train/grad_norm``; ``eval/loss``, ``eval/accuracy`` and the task's
own validation metrics, such as ``eval/bpc`` for text) and each training sample of a text model as
text (``samples``).

TensorBoard's event files go into the run directory itself, so ``tensorboard --logdir runs/x`` shows
one run and ``tensorboard --logdir SWEEP`` every run of a sweep side by side. A resumed run opens a new
event file that purges what the old ones logged after the checkpoint it resumed from (TensorBoard's
``purge_step``), as metrics.jsonl drops those records: the curves continue without a duplicated or
dangling stretch. A new run in a directory that kept the event files of an attempt that failed
before its first checkpoint removes them first.

W&B runs take the rnnkit run's id, so a resumed run continues the same W&B run (W&B itself ignores
steps it has already seen). Its files go to ``$WANDB_DIR`` if set, else into the run directory;
``WANDB_MODE=offline`` keeps everything on disk (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import html
import math
import os
import warnings
from pathlib import Path
from typing import Any

from rnnkit.config import clip, one_line
from rnnkit.errors import RnnkitWarning, RunError, UsageError
from rnnkit.spec import RunSpec
from rnnkit.training import Callback

TENSORBOARD_MISSING = 'log.tensorboard needs TensorBoard: pip install "rnnkit[tensorboard]"'
WANDB_MISSING = 'log.wandb needs Weights & Biases: pip install "rnnkit[wandb]"'
#: TensorBoard's event files (``events.out.tfevents.<time>.<host>.<pid>.<n>``).
EVENTS_GLOB = "events.out.tfevents.*"
#: Seconds between flushes of TensorBoard's event file (a kill loses at most this much of the board;
#: resume purges past its checkpoint anyway).
FLUSH_SECS = 10
#: Keys of a metrics.jsonl record that are not metrics: where and when it was logged, and how many
#: characters a text evaluation read.
NOT_METRICS = frozenset({"step", "elapsed", "eval_chars"})


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(TENSORBOARD_MISSING) from None
    return SummaryWriter


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise UsageError(WANDB_MISSING) from None
    return wandb


def check_dashboards(spec: RunSpec) -> None:
    """Raise UsageError, before anything is written, when a dashboard the spec asks for is not installed."""
    if spec.log.tensorboard:
        _summary_writer()
    if spec.log.wandb:
        _wandb()


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as dashboard scalars: ``eval_x`` -> ``eval/x``, the others ->
    ``train/x``; ``NOT_METRICS``, non-numbers and non-finite values are left out."""
    values = {}
    for key, value in record.items():
        if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        tag = f"eval/{key.removeprefix('eval_')}" if key.startswith("eval_") else f"train/{key}"
        values[tag] = float(value)
    return values


class TensorBoardLogger(Callback):
    """Writes every logged record and training sample to TensorBoard event files in ``log_dir``.

    ``step`` is the step the run starts from: a resumed run purges the events logged after it."""

    def __init__(self, log_dir: Path, step: int = 0) -> None:
        self.log_dir = Path(log_dir)
        self.step = step
        self.writer: Any = None

    def on_start(self, spec: RunSpec, run_dir: Path, resumed: bool) -> None:
        summary_writer = _summary_writer()
        if not resumed:  # what an attempt that never reached a checkpoint logged
            for stale in self.log_dir.glob(EVENTS_GLOB):
                stale.unlink(missing_ok=True)
        first_board = not any(self.log_dir.glob(EVENTS_GLOB))  # also: a board added to a resumed run
        # TensorBoard drops, from earlier files, every event at or after purge_step: the steps past
        # the checkpoint, which this process trains again
        purge = self.step + 1 if resumed else None
        self.writer = summary_writer(str(self.log_dir), purge_step=purge, flush_secs=FLUSH_SECS)
        if first_board:
            self.writer.add_text("spec", _code_block(spec.to_yaml()), 0)

    def on_log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)

    def on_sample(self, step: int, text: str) -> None:
        self.writer.add_text("samples", _code_block(text), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _code_block(text: str) -> str:
    """``text`` as a Markdown code block (TensorBoard renders text as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) or "    "


class WandbLogger(Callback):
    """Logs every record and training sample to a Weights & Biases run whose id is the rnnkit run's."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.run: Any = None
        self._wandb: Any = None

    def on_start(self, spec: RunSpec, run_dir: Path, resumed: bool) -> None:
        wandb = self._wandb = _wandb()
        try:
            self.run = wandb.init(
                project=spec.log.wandb_project,
                name=spec.name,
                id=self.run_id,
                resume="allow",
                config=spec.to_dict(),
                dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
                settings=wandb.Settings(console="off", silent=True, disable_git=True, save_code=False),
            )
        except Exception as exc:  # wandb's own errors (no API key, no network ...): one line
            raise RunError(
                f"Weights & Biases did not start: {clip(one_line(str(exc)), 300) or type(exc).__name__} "
                "(WANDB_MODE=offline logs to disk only)"
            ) from exc

    def on_log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        if values:
            self.run.log(values, step=int(record.get("step", 0)))

    def on_sample(self, step: int, text: str) -> None:
        self.run.log({"samples": self._wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def open_dashboards(spec: RunSpec, run_dir: Path, resumed: bool, *, step: int, run_id: str) -> list[Any]:
    """The dashboard callbacks ``spec.log`` asks for, started, for the run in ``run_dir`` at ``step``
    (``resumed``: continuing it). Each has ``close()``, for when the run ends however it ends; if one
    fails to start, those already started are closed."""
    dashboards: list[Any] = []
    if spec.log.tensorboard:
        dashboards.append(TensorBoardLogger(run_dir, step))
    if spec.log.wandb:
        dashboards.append(WandbLogger(run_id))
    started: list[Any] = []
    try:
        for dashboard in dashboards:
            dashboard.on_start(spec, run_dir, resumed)
            started.append(dashboard)
    except BaseException:
        close_dashboards(started)
        raise
    return dashboards


def close_dashboards(dashboards: list[Any]) -> None:
    """Close each dashboard (flush TensorBoard's file, finish the W&B run). A dashboard that fails to
    close is a warning, not an error: the run itself is saved whatever a dashboard does."""
    for dashboard in dashboards:
        try:
            dashboard.close()
        except Exception as exc:  # noqa: BLE001 - the run's own files are already safe
            warnings.warn(
                f"{type(dashboard).__name__} could not close: {clip(one_line(str(exc)), 300) or type(exc).__name__}",
                RnnkitWarning,
                stacklevel=2,
            )
