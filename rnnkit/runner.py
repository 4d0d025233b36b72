"""One training run from a resolved spec to a finished run directory.

runs/<name>/config.yaml        the resolved spec (enough to rebuild the model)
runs/<name>/metrics.jsonl      one JSON object per logged step, then the final evaluation
runs/<name>/model.safetensors  latest weights (every checkpoint_every steps, on Ctrl-C, at the end)
runs/<name>/meta.json          model, task, status, step and metrics of those weights (and vocabulary)
runs/<name>/state.pt           trainer state of those weights, for --resume
runs/<name>/best/              weights and meta.json of the best validation loss so far
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import IO, Any

from rnnkit import __version__
from rnnkit.checkpoint import (
    META_FILE,
    atomic_write_bytes,
    atomic_write_text,
    finite_json,
    save_checkpoint,
)
from rnnkit.errors import CheckpointError, RunError, UsageError
from rnnkit.spec import RunSpec

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.pt"  # optimiser, schedule, RNG and loop counters; loaded with weights_only=True
BEST_DIR = "best"

#: How a finished run ended. ``solved``: early stop reached; ``plateau``: stopped without progress;
#: ``max_steps``: ran its full budget; ``diverged``: the loss became NaN or infinite. A run stopped by
#: Ctrl-C is ``interrupted``, which is not finished: a sweep runs it again.
FINISHED_STATUSES = ("solved", "plateau", "max_steps", "diverged")


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

    def on_log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def resolve_device(requested: str) -> Any:
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"device must be one of auto, cpu, cuda, got '{requested}'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available here (use --device cpu)")
    return torch.device(requested)


def prepare_run_dir(path: Path) -> Path:
    """Create ``path`` (and parents), with a clear error when it cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"cannot create run directory {path}: a file of that name is in the way")
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


class Checkpointer:
    """Training callback: the latest checkpoint every ``checkpoint_every`` steps (weights, meta and the
    trainer state for resume) and, after each evaluation that improves the validation loss, the best
    weights in ``best/``."""

    def __init__(self, run_dir: Path, model: Any, base_meta: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.model = model
        self.base_meta = base_meta

    def meta(self, trainer: Any, status: str, **extra: Any) -> dict[str, Any]:
        return {**self.base_meta, "status": status, "steps": trainer.step, "seconds": trainer.seconds_so_far(), **extra}

    def save(self, trainer: Any, meta: dict[str, Any], directory: Path | None = None) -> None:
        import torch

        directory = directory or self.run_dir
        if directory == self.run_dir:  # the state first: a weights file never points past its state
            buffer = io.BytesIO()
            torch.save(trainer.state_dict(), buffer)
            atomic_write_bytes(directory / STATE_FILE, buffer.getvalue())
        save_checkpoint(directory, self.model.state_dict(), meta)

    def on_checkpoint(self, trainer: Any) -> None:
        self.save(trainer, self.meta(trainer, "running", best_accuracy=trainer.best_accuracy))

    def on_eval(self, trainer: Any, metrics: dict[str, float]) -> None:
        if metrics["loss"] < trainer.best_eval_loss:
            best = prepare_run_dir(self.run_dir / BEST_DIR)
            eval_metrics = {f"eval_{k}": v for k, v in metrics.items()}
            self.save(trainer, self.meta(trainer, "best", **eval_metrics), best)


def train_run(
    spec: RunSpec,
    run_dir: Path,
    *,
    progress: bool = False,
    threads: int | None = None,
    resume: bool = False,
    callbacks: list[Any] = (),
) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir``; returns the run's metadata (status, steps, accuracies, seconds).

    With ``resume``, the model and trainer state saved in ``run_dir`` are restored and training
    continues to ``spec.train.max_steps`` exactly as if it had never stopped. On Ctrl-C the weights
    and trainer state so far are saved with status ``interrupted`` and RunInterrupted is raised.
    """
    import torch

    from rnnkit.checkpoint import load_checkpoint
    from rnnkit.progress import TrainingProgress
    from rnnkit.registry import get_model
    from rnnkit.tasks import task_types
    from rnnkit.training import Trainer

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(spec.device)
    task_type = task_types()[spec.task_name]
    model_def = get_model(spec.model_name, task_type.model_task)
    torch.manual_seed(spec.seed)
    task = task_type.factory(spec.task, device, spec.seed)  # loads data: fails before anything is written
    model = model_def.build(spec.model, **task.dims).to(device)
    run_dir = prepare_run_dir(run_dir)
    base_meta = {
        "rnnkit_version": __version__,
        "model": spec.model_name,
        "model_task": task_type.model_task,
        "task": spec.task_name,
        "model_config": dataclasses.asdict(spec.model),
        "task_dims": task.dims,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "spec": spec.to_dict(),
        **(task.meta() if hasattr(task, "meta") else {}),
    }
    checkpointer = Checkpointer(run_dir, model, base_meta)
    trainer = Trainer(model, task, spec.train)
    if resume:
        state_path = run_dir / STATE_FILE
        if not state_path.is_file():
            raise RunError(f"cannot resume {run_dir}: it has no {STATE_FILE} (was it trained by this version?)")
        weights, saved = load_checkpoint(run_dir, device=str(device))
        if "vocabulary" in base_meta and saved.get("vocabulary") != base_meta["vocabulary"]:
            raise RunError(
                f"cannot resume {run_dir}: the corpus now gives another vocabulary than the one it "
                "was trained on (was task.text or the corpus changed?)"
            )
        load_weights(model, weights, f"cannot resume {run_dir}")
        try:  # RNG states are CPU tensors: load on the CPU; the optimiser moves its state to the parameters
            trainer.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise RunError(f"cannot resume {run_dir}: its trainer state does not match the spec ({exc})") from exc
        if trainer.step != saved.get("steps"):
            raise RunError(
                f"cannot resume {run_dir}: weights (step {saved.get('steps')}) and trainer state "
                f"(step {trainer.step}) disagree"
            )
        if saved.get("status") in FINISHED_STATUSES and trainer.step >= spec.train.max_steps:
            raise RunError(
                f"{run_dir} already finished at step {trainer.step} ({saved['status']}); "
                f"resume with a larger train.max_steps to train on"
            )
        if trainer.step > spec.train.max_steps:
            raise RunError(
                f"cannot resume {run_dir} at step {trainer.step} with train.max_steps="
                f"{spec.train.max_steps}: it is past that already"
            )
        _truncate_metrics(run_dir / METRICS_FILE, trainer.step)
    else:
        for stale in (METRICS_FILE, META_FILE, STATE_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, spec.to_yaml())
    for cb in callbacks:
        getattr(cb, "on_start", lambda *a: None)(spec, run_dir, resume)
    metrics = MetricsWriter(run_dir / METRICS_FILE)
    try:
        per_step = getattr(task, "units_per_step", None)
        with TrainingProgress(
            spec.train.max_steps,
            spec.name,
            enabled=progress,
            start=trainer.step,
            units=per_step(spec.train.batch_size) if per_step else None,
        ) as bar:
            trainer.callbacks = [metrics, bar, checkpointer, *callbacks]
            result = trainer.run()
    finally:
        metrics.close()
    meta = {**base_meta, **result.to_dict()}
    checkpointer.save(trainer, meta)
    if result.status == "interrupted":
        raise RunInterrupted(run_dir, result.steps, meta)
    return meta


def load_weights(model: Any, state: dict[str, Any], what: str) -> None:
    """Load ``state`` into ``model``, or one line that says which weights do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = (
        ([f"missing {', '.join(missing[:3])}"] if missing else [])
        + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
        + ([f"shape {wrong[0]} expected"] if wrong else [])
    )
    if problems:
        raise CheckpointError(f"{what}: its weights do not fit the model ({'; '.join(problems)})")
    model.load_state_dict(state)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (they belong to training that the checkpoint does not hold)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
