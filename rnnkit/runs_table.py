"""The rows of ``rnnkit runs``: every run directory under a folder (sweeps and comparisons included),
one row each, and the details of one run (its record, provenance and resolved spec).

A run directory is one with a ``config.yaml`` beside a ``meta.json``, a checkpoint, a ``metrics.jsonl``
or a lock file (see ``rnnkit.runner``); the search goes down into sweep and comparison folders but not
into a run. A run whose files cannot be read is a row with status ``unreadable`` and the reason, never
an error; a run recorded ``running`` that no process owns any more (killed) is ``stopped``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rnnkit.checkpoint import CHECKPOINT_LINK, META_FILE, read_meta
from rnnkit.errors import CheckpointError, UsageError
from rnnkit.rundir import CONFIG_FILE, LOCK_FILE, METRICS_FILE, is_locked, read_jsonl
from rnnkit.runner import saved_spec

#: The main metric of each task: (its name, the key of the run's final metrics). Text runs are judged
#: by bits per character on the validation text, graph runs by the test accuracy at the best validation
#: epoch, the rest by accuracy on held-out data.
MAIN_METRICS = {
    "palindrome": ("accuracy", "accuracy"),
    "text": ("bpc", "bpc"),
    "graph": ("test_accuracy_at_best_val", "test_accuracy_at_best_val"),
}
#: The columns ``--sort`` accepts (``time`` is training seconds, ``started`` the first start).
SORT_KEYS = ("name", "model", "task", "status", "metric", "steps", "time", "started")
#: Folders never searched: checkpoint storage and the files of other tools.
SKIPPED_FOLDERS = frozenset({".checkpoints", "wandb", "__pycache__", ".git"})
#: How deep below the folder runs are looked for (a sweep's runs are at depth 1 of the sweep).
MAX_DEPTH = 8


@dataclass
class RunRow:
    """One line of ``rnnkit runs``."""

    name: str  # the path relative to the folder listed
    path: str
    model: str | None
    task: str | None
    status: str
    metric: str | None  # the main metric's name (``accuracy``, ``bpc``, ``test_accuracy_at_best_val``)
    value: float | None  # its value: the final evaluation's, else the latest evaluation's
    steps: int | None
    seconds: float | None  # training time
    started: str | None  # when the run first started (ISO 8601, UTC), when recorded
    error: str = ""  # why the row is unreadable, or the error of a failed run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run: a config.yaml beside a meta.json, a checkpoint, metrics.jsonl or
    the lock of the process that claimed it."""
    return (path / CONFIG_FILE).is_file() and any(
        (path / name).exists() for name in (META_FILE, CHECKPOINT_LINK, METRICS_FILE, LOCK_FILE)
    )


def find_runs(folder: Path) -> list[Path]:
    """Every run directory at or below ``folder`` (a run's own subfolders are not searched)."""
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"{folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of runs")
    if is_run_dir(folder):
        return [folder]
    found = []
    base_depth = len(folder.parts)
    for root, dirs, _ in os.walk(folder, onerror=lambda exc: None):
        here = Path(root)
        if here != folder and is_run_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        if len(here.parts) - base_depth >= MAX_DEPTH:
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS and not d.startswith("."))
    return sorted(found)


def main_metric(task: str | None, record: dict[str, Any], run_dir: Path) -> tuple[str, float | None]:
    """The main metric of a run (see ``MAIN_METRICS``): its name and value, from the final evaluation
    or, for a run that has not finished, the latest evaluation in metrics.jsonl (None if none yet)."""
    name, key = MAIN_METRICS.get(task or "", ("accuracy", "accuracy"))
    final = record.get("final_metrics")
    if isinstance(final, dict) and _number(final.get(key)) is not None:
        return name, _number(final.get(key))
    records, _ = read_jsonl(run_dir / METRICS_FILE)
    for logged in reversed(records):
        value = _number(logged.get(f"eval_{key}"))
        if value is not None:
            return name, value
    return name, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def run_row(run_dir: Path, folder: Path | None = None) -> RunRow:
    """The row of one run directory; ``unreadable`` (with the reason) when its files cannot be read."""
    run_dir = Path(run_dir)
    name = str(run_dir.relative_to(folder)) if folder is not None and run_dir != folder else run_dir.name
    config = saved_spec(run_dir)
    config_model = (config or {}).get("model") if isinstance((config or {}).get("model"), dict) else {}
    config_task = (config or {}).get("task") if isinstance((config or {}).get("task"), dict) else {}
    model, task = config_model.get("name"), config_task.get("name")
    try:
        record = read_meta(run_dir / META_FILE)
    except CheckpointError as exc:
        reason = "no meta.json" if not (run_dir / META_FILE).exists() else str(exc)
        return RunRow(name, str(run_dir), model, task, "unreadable", None, None, None, None, None, reason)
    if config is None:
        return RunRow(
            name, str(run_dir), model, task, "unreadable", None, None, None, None, None, f"unreadable {CONFIG_FILE}"
        )
    model = str(record.get("model") or model or "") or None
    task = str(record.get("task") or task or "") or None
    status = str(record.get("status") or "unreadable")
    if status == "running" and not is_locked(run_dir):
        status = "stopped"  # killed: no process owns it; `rnnkit train --resume` continues it
    metric, value = main_metric(task, record, run_dir)
    provenance = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    steps = record.get("steps")
    return RunRow(
        name,
        str(run_dir),
        model,
        task,
        status,
        metric,
        value,
        steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
        _number(record.get("seconds")),
        provenance.get("started_at") if isinstance(provenance.get("started_at"), str) else None,
        str(record.get("error") or ""),
    )


def list_runs(folder: Path, sort: str = "name", reverse: bool = False) -> list[RunRow]:
    """One row per run at or below ``folder``, sorted by ``sort`` (one of ``SORT_KEYS``); rows without
    the value sort last."""
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: sort by one of {', '.join(SORT_KEYS)}")
    folder = Path(folder)
    rows = [run_row(path, folder) for path in find_runs(folder)]
    attribute = {"metric": "value", "time": "seconds"}.get(sort, sort)
    present = [r for r in rows if getattr(r, attribute) is not None]
    missing = [r for r in rows if getattr(r, attribute) is None]
    present.sort(key=lambda r: (getattr(r, attribute), r.name), reverse=reverse)
    return present + missing


#: Keys of a run's record that ``run_details`` leaves out of ``record`` (shown elsewhere, or too long).
_DETAIL_SKIP = ("spec", "provenance", "vocabulary")


def run_details(run_dir: Path) -> dict[str, Any]:
    """What ``rnnkit runs RUN`` shows: the row, the record (meta.json without the spec, provenance and
    vocabulary), the provenance and the resolved spec (config.yaml)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} does not exist" if not run_dir.exists() else f"{run_dir} is not a run directory")
    row = run_row(run_dir)
    try:
        record = read_meta(run_dir / META_FILE)
    except CheckpointError:
        record = {}
    provenance = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    summary = {k: v for k, v in record.items() if k not in _DETAIL_SKIP}
    if isinstance(record.get("vocabulary"), list):
        summary["vocabulary_size"] = len(record["vocabulary"])
    return {"run": row.to_dict(), "record": summary, "provenance": provenance, "config": saved_spec(run_dir)}


def format_seconds(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``2h03m``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


#: How the table names the main metrics (JSON keeps their full names).
METRIC_LABELS = {"test_accuracy_at_best_val": "test acc"}


def format_metric(row: RunRow) -> str:
    """``accuracy 0.998``, ``bpc 1.932``, ``test acc 0.815`` (at the best validation epoch); empty when
    there is none."""
    if row.value is None:
        return ""
    return f"{METRIC_LABELS.get(row.metric or '', row.metric)} {row.value:.3f}"
