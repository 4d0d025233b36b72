"""One training run from a resolved spec to a finished run directory.

runs/<name>/config.yaml        the resolved spec (enough to rebuild the model)
runs/<name>/metrics.jsonl      one JSON object per logged step, then the final evaluation
runs/<name>/model.safetensors  final weights
runs/<name>/meta.json          model, task, status, step and metrics of the run
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import IO, Any

from rnnkit import __version__
from rnnkit.checkpoint import META_FILE, atomic_write_text, read_meta, save_checkpoint
from rnnkit.errors import RunError
from rnnkit.spec import RunSpec

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the weights so far and the run's status were saved in ``run_dir``."""

    def __init__(self, run_dir: Path, step: int, meta: dict[str, Any] | None = None) -> None:
        super().__init__(f"interrupted at step {step}; weights so far saved in {run_dir}")
        self.run_dir = run_dir
        self.step = step
        self.meta = meta or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_dir, self.step, self.meta))


class MetricsWriter:
    """Appends each logged record to ``metrics.jsonl``, flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.file: IO[str] = open(path, "a", encoding="utf-8")

    def on_step(self, step: int, loss: float, accuracy: float, steps_per_s: float) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def resolve_device(requested: str) -> Any:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available here (use --device cpu)")
    return torch.device(requested)


def prepare_run_dir(path: Path) -> Path:
    """Create ``path`` (and parents), with a clear error when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise RunError(f"run directory {path} is not writable")
    return path


def unique_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``... if a run of that name already exists there."""
    base = Path(out_dir) / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


def run_status(run_dir: Path) -> str | None:
    """The recorded status of a run directory, or None if it never finished writing one."""
    meta = Path(run_dir) / META_FILE
    if not meta.is_file():
        return None
    try:
        return read_meta(meta).get("status")
    except RunError:
        return None


def train_run(spec: RunSpec, run_dir: Path, *, progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir``; returns the run's result (status, steps, accuracies, seconds).

    On Ctrl-C the weights reached so far are saved with status ``interrupted`` and RunInterrupted
    is raised.
    """
    import torch

    from rnnkit.progress import TrainingProgress
    from rnnkit.registry import get_model
    from rnnkit.tasks import task_types
    from rnnkit.training import Trainer

    if threads:
        torch.set_num_threads(threads)
    run_dir = prepare_run_dir(run_dir)
    device = resolve_device(spec.device)
    task_type = task_types()[spec.task_name]
    model_def = get_model(spec.model_name, task_type.model_task)
    torch.manual_seed(spec.seed)
    task = task_type.factory(spec.task, device, spec.seed)
    model = model_def.build(spec.model, **task.dims).to(device)

    atomic_write_text(run_dir / CONFIG_FILE, spec.to_yaml())
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    (run_dir / META_FILE).unlink(missing_ok=True)
    metrics = MetricsWriter(run_dir / METRICS_FILE)
    try:
        with TrainingProgress(spec.train.max_steps, spec.name, enabled=progress) as bar:
            trainer = Trainer(model, task, spec.train, callbacks=[metrics, bar])
            result = trainer.run()
    finally:
        metrics.close()
    meta = {
        "rnnkit_version": __version__,
        "model": spec.model_name,
        "model_task": task_type.model_task,
        "task": spec.task_name,
        "model_config": dataclasses.asdict(spec.model),
        "task_dims": task.dims,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        **result.to_dict(),
    }
    save_checkpoint(run_dir, model.state_dict(), meta)
    if result.status == "interrupted":
        raise RunInterrupted(run_dir, result.steps, meta)
    return meta
