"""One training run from a resolved spec to a finished run directory.

runs/<name>/config.yaml        the resolved spec (enough to rebuild the model and resume)
runs/<name>/metrics.jsonl      one JSON object per logged step, then the final evaluation
runs/<name>/gradients.jsonl    with train.record_gradients: the gradient flow through time at the start
                               and after every evaluation (rnnkit.gradient_flow)
runs/<name>/meta.json          the run's record: id, status, steps, metrics (updated at each checkpoint,
                               at the end, and on failure)
runs/<name>/checkpoint/        the latest complete checkpoint: model.safetensors, meta.json, state.pt
runs/<name>/best/              weights and meta.json of the best validation loss so far (5 s and a step
                               behind at most, never behind the checkpoint: see Checkpointer)
runs/<name>/.lock              held by the one process that owns the run (see rnnkit.rundir)

Checkpoints are published whole (see rnnkit.checkpoint): a kill at any moment loses at most the
training since the last one. ``--resume`` takes the newest complete checkpoint and refuses one that
belongs to another run (each run has an id, recorded in its meta.json and in every checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from rnnkit.checkpoint import (
    BEST_LINK,
    CHECKPOINT_LINK,
    META_FILE,
    STATE_FILE,
    ThrottledPublisher,
    atomic_write_text,
    checkpoint_dir,
    checkpoint_files,
    clean_unpublished,
    finite_json,
    load_checkpoint,
    load_state,
    load_weights,
    publish,
    read_meta,
    write_json,
)
from rnnkit.dashboards import check_dashboards, close_dashboards, open_dashboards
from rnnkit.device import resolve_device
from rnnkit.distributed import Distributed
from rnnkit.errors import CheckpointError, RnnkitError, RnnkitWarning, RunError, SpecError
from rnnkit.gradient_flow import GRADIENTS_FILE, shows_states
from rnnkit.memory import memory_budget
from rnnkit.progress import TrainingProgress, may_stop_early
from rnnkit.provenance import gather_provenance, mark_ended, resumed_provenance
from rnnkit.registry import get_model
from rnnkit.rundir import CONFIG_FILE, METRICS_FILE, RunLock, claim_new_run_dir, read_jsonl
from rnnkit.spec import RECORDING_SETTINGS, RunSpec, parse_yaml_text
from rnnkit.task import Task
from rnnkit.tasks import TASK_TYPES
from rnnkit.training import Callback, StepStats, Trainer
from rnnkit.version import __version__

#: How a finished run ended. ``solved``: early stop reached; ``plateau``: stopped without progress;
#: ``max_steps``: ran its full budget; ``diverged``: the loss became NaN or infinite. A run stopped by
#: Ctrl-C is ``interrupted`` and one that raised is ``failed``: neither is finished, a sweep resumes it.
FINISHED_STATUSES = ("solved", "plateau", "max_steps", "diverged")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the weights so far and the run's status were saved in ``run_dir``."""

    def __init__(self, run_dir: Path, step: int, meta: dict[str, Any] | None = None) -> None:
        super().__init__(
            f"interrupted at step {step}; saved in {run_dir} (continue with: rnnkit train --resume {run_dir})"
        )
        self.run_dir = run_dir
        self.step = step
        self.meta = meta or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_dir, self.step, self.meta))


class MetricsWriter(Callback):
    """Appends each logged record to ``metrics.jsonl``, flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.file: IO[str] = open(path, "a", encoding="utf-8")

    def on_log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class GradientRecorder(Callback):
    """``train.record_gradients``: the task's gradient-flow measurement (``rnnkit.gradient_flow``) at the
    start of a new run (step 0) and after every evaluation, appended to gradients.jsonl and flushed line
    by line (a resumed run first drops the records past its checkpoint, as for metrics.jsonl)."""

    def __init__(self, path: Path, task: Task, model: torch.nn.Module, batch_size: int) -> None:
        self.task, self.model, self.batch_size = task, model, batch_size
        self.file: IO[str] = open(path, "a", encoding="utf-8")

    def on_start(self, spec: RunSpec, run_dir: Path, resumed: bool) -> None:
        if not resumed:
            self.record(0)

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.record(trainer.step)

    def record(self, step: int) -> None:
        flow = self.task.gradient_flow(self.model, self.batch_size)
        self.file.write(json.dumps(finite_json(flow.record(step)), allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def gradient_recorders(spec: RunSpec, run_dir: Path, task: Task, model: torch.nn.Module) -> list[GradientRecorder]:
    """The recorder ``train.record_gradients`` asks for, or none: a task without the measurement or a
    model that does not show its per-step states records nothing, with one warning saying which."""
    if not spec.train.record_gradients:
        return []
    if not task.measures_gradient_flow or not shows_states(model):
        why = (
            f"the {task.name} task has no gradient-flow measurement"
            if not task.measures_gradient_flow
            else f"model '{spec.model_name}' declares no step_states(x) (rnnkit.kinds.StepStates)"
        )
        warnings.warn(f"train.record_gradients: no gradients recorded: {why}", RnnkitWarning, stacklevel=2)
        return []
    return [GradientRecorder(run_dir / GRADIENTS_FILE, task, model, spec.train.batch_size)]


# ---------------------------------------------------------------------------------------------
# What a run directory holds


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's record (its top-level meta.json), or {} if it has none or it cannot be read."""
    try:
        return read_meta(Path(run_dir) / META_FILE)
    except CheckpointError:
        return {}


def saved_spec(run_dir: Path) -> dict[str, Any] | None:
    """The resolved spec saved in ``run_dir`` (config.yaml), or None if there is none readable."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        data, _ = parse_yaml_text(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, SpecError):
        return None
    return data if isinstance(data, dict) else None


def spec_differences(saved: dict[str, Any], planned: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved specs. ``out_dir`` is not the run's, and a
    key the saved spec lacks is a setting added since it was written (its default applied then). ``log``
    (dashboards) and ``RECORDING_SETTINGS`` (measurements) change nothing in the training."""
    keys = [
        k
        for k in dict.fromkeys([*saved, *planned])
        if not (prefix == "" and k in ("out_dir", "log"))
        and (prefix.rstrip("."), k) not in RECORDING_SETTINGS
        and k in saved
    ]
    diffs = []
    for key in keys:
        a, b = saved.get(key), planned.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key} {a!r} -> {b!r}")
    return diffs


def finished_meta(run_dir: Path) -> dict[str, Any] | None:
    """The metadata of ``run_dir``'s checkpoint if the run finished, else None."""
    directory = checkpoint_dir(run_dir)
    if directory is None:
        return None
    try:
        meta = read_meta(directory / META_FILE)
    except CheckpointError:
        return None
    return meta if meta.get("status") in FINISHED_STATUSES else None


# ---------------------------------------------------------------------------------------------
# Saving


class Checkpointer(Callback):
    """Training callback: the latest checkpoint every ``checkpoint_every`` steps (weights, meta and the
    trainer state for resume) and, after each evaluation that improves the validation loss, the best
    weights in ``best/``. Each is published whole, then the run's record is updated.

    The best weights are copied in memory at each improvement and published at most every
    ``best_every_s`` seconds (checked after every step), and always before a checkpoint: the best loss
    a checkpoint's trainer state records is then the loss of the weights in ``best/``.
    """

    #: at most one publish of ``best/`` in this many seconds while training (see ThrottledPublisher)
    BEST_EVERY_S = 5.0

    def __init__(self, run_dir: Path, model: Any, base_meta: dict[str, Any], best_every_s: float | None = None) -> None:
        self.run_dir = run_dir
        self.model = model
        self.base_meta = base_meta
        self.best = ThrottledPublisher(run_dir, BEST_LINK, self.BEST_EVERY_S if best_every_s is None else best_every_s)

    def meta(self, trainer: Trainer, status: str, **extra: Any) -> dict[str, Any]:
        return {**self.base_meta, "status": status, "steps": trainer.step, "seconds": trainer.seconds_so_far(), **extra}

    def save(self, trainer: Trainer, meta: dict[str, Any]) -> None:
        """Publish the best weights still in memory, then the latest checkpoint (with the trainer state),
        then record it as the run's state. A kill between the two leaves ``best/`` ahead of the
        checkpoint, never behind it: the resumed run reaches that best again and publishes it anew."""
        self.best.flush()
        buffer = io.BytesIO()
        torch.save({"run_id": self.base_meta["run_id"], "trainer": trainer.state_dict()}, buffer)
        files = {**checkpoint_files(self.model.state_dict(), meta), STATE_FILE: buffer.getvalue()}
        publish(self.run_dir, CHECKPOINT_LINK, files)
        write_json(self.run_dir / META_FILE, meta)

    def on_checkpoint(self, trainer: Trainer) -> None:
        self.save(trainer, self.meta(trainer, "running", best_accuracy=trainer.best_accuracy))

    def on_step(self, stats: StepStats) -> None:
        self.best.poll()

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if metrics["loss"] < trainer.best_eval_loss:
            eval_metrics = {f"eval_{k}": v for k, v in metrics.items()}
            self.best.offer(self.model.state_dict(), self.meta(trainer, "best", **eval_metrics))


# ---------------------------------------------------------------------------------------------
# Running


def train_run(
    spec: RunSpec,
    run_dir: Path | RunLock | None = None,
    *,
    progress: bool = False,
    threads: int | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    distributed: bool = False,
) -> dict[str, Any]:
    """Train ``spec``; returns the run's metadata (status, steps, accuracies, seconds, ``run_dir``).

    ``run_dir``: None claims a new directory ``spec.out_dir/spec.name`` (``-2``, ``-3`` ... if taken);
    a path is locked for the run (RunLockedError if another process owns it); a RunLock the caller
    holds is used as it is. A new run never overwrites another: the directory must hold no checkpoint
    and no other spec. With ``resume``, the newest complete checkpoint is restored and training
    continues to ``spec.train.max_steps`` exactly as if it had never stopped. On Ctrl-C the state so
    far is saved with status ``interrupted`` and RunInterrupted is raised; on an error the run's
    record says ``failed`` (its last checkpoint stays resumable) and the error propagates.

    With ``distributed``, this process is one rank of a torchrun group (``rnnkit.distributed``): rank 0
    does all of the above, the other ranks train beside it and write nothing.
    """
    check_dashboards(spec)  # a dashboard that is not installed: before anything is written
    if threads:
        torch.set_num_threads(threads)
    group = Distributed.from_environment(resolve_device(spec.device)) if distributed else None
    if group is None:
        return _lead(spec, run_dir, progress, resume, list(callbacks), None)
    try:
        meta = (
            _follow(spec, group)
            if not group.is_main
            else _lead(spec, run_dir, progress, resume, list(callbacks), group)
        )
        group.barrier()  # every rank done before the group is torn down (gloo aborts a rank torn down early)
        return meta
    finally:
        group.close()


def _lead(
    spec: RunSpec,
    run_dir: Path | RunLock | None,
    progress: bool,
    resume: bool,
    callbacks: list[Callback],
    group: Distributed | None,
) -> dict[str, Any]:
    """The run in this process, or as rank 0 of a group: it owns and writes the run directory."""
    device, task, model = build_run(spec, group)
    owned = not isinstance(run_dir, RunLock)  # a lock the caller holds stays held
    with _errors_shared(group):
        lock = _own(spec, run_dir)
    try:
        run_dir = lock.path
        trainer = Trainer(model, task, spec.train, distributed=group)
        with _errors_shared(group):
            clean_unpublished(run_dir)
            base_meta = run_meta(spec, task, model, device, group)
            if resume:
                base_meta["run_id"], restored = restore(run_dir, spec, model, trainer, base_meta, device)
            else:
                base_meta["run_id"], restored = _start_fresh(run_dir, spec), None
        if group is not None:
            group.broadcast({"error": "", "run_dir": str(run_dir), "state": restored})
        try:
            return _train(spec, run_dir, model, task, trainer, base_meta, progress, callbacks)
        except RnnkitError as exc:
            _record_failure(run_dir, base_meta, trainer.step, str(exc))
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            _record_failure(run_dir, base_meta, trainer.step, f"{type(exc).__name__}: {exc}")
            raise
    finally:
        if owned:
            lock.release()


@contextlib.contextmanager
def _errors_shared(group: Distributed | None) -> Iterator[None]:
    """Rank 0's setup: an error it raises is sent to the other ranks (waiting for the setup), which
    then stop with the same message instead of waiting for a rank that has gone."""
    try:
        yield
    except RnnkitError as exc:
        if group is not None:
            group.broadcast({"error": str(exc)})
        raise


class RankFollower(Callback):
    """A rank other than 0: takes part in the state gathering of each checkpoint that rank 0 saves."""

    def on_checkpoint(self, trainer: Trainer) -> None:
        trainer.state_dict()


def _follow(spec: RunSpec, group: Distributed) -> dict[str, Any]:
    """A rank other than 0: trains beside rank 0 on its own batches and writes nothing; rank 0 tells
    it the run directory and, on resume, the trainer state (DDP copies rank 0's weights)."""
    _, task, model = build_run(spec, group)
    trainer = Trainer(model, task, spec.train, callbacks=[RankFollower()], distributed=group)
    setup = group.broadcast(None)
    if setup["error"]:
        raise RunError(setup["error"])
    if setup["state"] is not None:
        trainer.load_state_dict(setup["state"])
    result = trainer.run()
    trainer.state_dict()  # rank 0's last checkpoint gathers this rank's state
    if result.status == "interrupted":
        raise RunInterrupted(Path(setup["run_dir"]), result.steps)
    return {**result.to_dict(), "run_dir": setup["run_dir"], "rank": group.rank}


def build_run(spec: RunSpec, group: Distributed | None = None) -> tuple[torch.device, Task, torch.nn.Module]:
    """The device, the task (its data loaded) and the model of ``spec``, seeded; the memory the run
    needs is checked against ``train.max_memory_gb`` before the model is built. Nothing is written.
    In a torchrun ``group``, the task draws with this rank's seed and the device is this rank's."""
    device = resolve_device(spec.device)
    task_seed = spec.seed
    if group is not None:
        device, task_seed = group.device(device), group.rank_seed(spec.seed)
    task_type = TASK_TYPES[spec.task_name]
    model_def = get_model(spec.model_name, task_type.kind)
    torch.manual_seed(spec.seed)
    task = task_type(spec.task, device, task_seed)  # loads data: fails before anything is written
    task.check_memory(model_def, spec.model, spec.train.batch_size, memory_budget(spec.train.max_memory_gb, device))
    return device, task, model_def.build(spec.model, **task.dims).to(device)


def run_meta(
    spec: RunSpec, task: Task, model: torch.nn.Module, device: torch.device, group: Distributed | None = None
) -> dict[str, Any]:
    """What every checkpoint's meta.json says of the run besides its progress (and, for a torchrun
    run, how many processes trained it)."""
    return {
        "rnnkit_version": __version__,
        "model": spec.model_name,
        "model_kind": task.kind,
        "task": spec.task_name,
        "model_config": dataclasses.asdict(spec.model),
        "task_dims": task.dims,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "spec": spec.to_dict(),
        "provenance": gather_provenance(device, spec.source),
        **task.meta(),
        **({"processes": group.world_size} if group is not None else {}),
    }


def _own(spec: RunSpec, run_dir: Path | RunLock | None) -> RunLock:
    if isinstance(run_dir, RunLock):
        return run_dir
    if run_dir is None:
        return claim_new_run_dir(spec.out_dir, spec.name)
    return RunLock.acquire(Path(run_dir))


def _start_fresh(run_dir: Path, spec: RunSpec) -> str:
    """Begin a new run in ``run_dir``: allowed when it holds no checkpoint and no other spec."""
    if checkpoint_dir(run_dir) is not None:
        raise RunError(
            f"{run_dir} already holds a run; continue it with rnnkit train --resume {run_dir} "
            "or choose another --name / --out-dir"
        )
    saved = saved_spec(run_dir)
    if saved is not None and spec_differences(saved, spec.to_dict()):
        raise RunError(
            f"{run_dir} holds the spec of another run ({spec_differences(saved, spec.to_dict())[0]}); "
            "choose another directory"
        )
    (run_dir / METRICS_FILE).unlink(missing_ok=True)  # what a run that failed before its first checkpoint logged
    (run_dir / GRADIENTS_FILE).unlink(missing_ok=True)
    run_id = uuid.uuid4().hex
    atomic_write_text(run_dir / CONFIG_FILE, spec.to_yaml())
    write_json(run_dir / META_FILE, {"run_id": run_id, "status": "running", "steps": 0, "spec": spec.to_dict()})
    return run_id


def restore(
    run_dir: Path, spec: RunSpec, model: torch.nn.Module, trainer: Trainer, base_meta: dict[str, Any], device: Any
) -> tuple[str, dict[str, Any]]:
    """Load the newest complete checkpoint of ``run_dir`` into ``model`` and ``trainer``, after checking
    that it is this run's, that its parts agree and that there is training left; returns the run id
    and the trainer state it loaded."""
    directory = checkpoint_dir(run_dir)
    if directory is None:
        raise RunError(
            f"cannot resume {run_dir}: it has no checkpoint (it stopped before its first one); "
            "start it again from its spec"
        )
    weights, saved = load_checkpoint(directory, device=str(device))
    state = load_state(directory / STATE_FILE)
    trainer_state = state.get("trainer", state)  # rnnkit 0.1 saved the trainer's state alone
    record_id = read_record(run_dir).get("run_id")
    base_meta["provenance"] = resumed_provenance(base_meta.get("provenance"), read_record(run_dir).get("provenance"))
    run_id = str(saved.get("run_id") or record_id or uuid.uuid4().hex)
    for where, other in (("the run's meta.json", record_id), (STATE_FILE, state.get("run_id"))):
        if other is not None and saved.get("run_id") is not None and other != saved["run_id"]:
            raise CheckpointError(
                f"cannot resume {run_dir}: its checkpoint belongs to another run (run id "
                f"{saved['run_id'][:8]} vs {other[:8]} in {where})"
            )
    if "vocabulary" in base_meta and saved.get("vocabulary") != base_meta["vocabulary"]:
        raise RunError(
            f"cannot resume {run_dir}: the corpus now gives another vocabulary than the one it "
            "was trained on (was task.text or the corpus changed?)"
        )
    load_weights(model, weights, f"cannot resume {run_dir}")
    try:  # RNG states are CPU tensors: loaded on the CPU; the optimiser moves its state to the parameters
        trainer.load_state_dict(trainer_state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise RunError(f"cannot resume {run_dir}: its trainer state does not match the spec ({exc})") from exc
    if trainer.step != saved.get("steps"):
        raise CheckpointError(
            f"cannot resume {run_dir}: weights (step {saved.get('steps')}) and trainer state "
            f"(step {trainer.step}) disagree"
        )
    saved_budget = ((saved.get("spec") or {}).get("train") or {}).get("max_steps", trainer.step)
    if saved.get("status") in FINISHED_STATUSES and spec.train.max_steps <= max(trainer.step, saved_budget):
        raise RunError(
            f"{run_dir} already finished at step {trainer.step} ({saved['status']}); "
            f"resume with a larger train.max_steps (now {spec.train.max_steps}) to train on"
        )
    if trainer.step > spec.train.max_steps:
        raise RunError(
            f"cannot resume {run_dir} at step {trainer.step} with train.max_steps="
            f"{spec.train.max_steps}: it is past that already"
        )
    if saved.get("status") in FINISHED_STATUSES:
        trainer.stopping = None  # a finished run given more steps trains on
    _truncate_metrics(run_dir / METRICS_FILE, trainer.step)
    _truncate_metrics(run_dir / GRADIENTS_FILE, trainer.step)
    atomic_write_text(run_dir / CONFIG_FILE, spec.to_yaml())
    return run_id, trainer_state


def _train(
    spec: RunSpec,
    run_dir: Path,
    model: torch.nn.Module,
    task: Task,
    trainer: Trainer,
    base_meta: dict[str, Any],
    progress: bool,
    callbacks: list[Callback],
) -> dict[str, Any]:
    resumed = trainer.step > 0 or trainer.eval_pending or trainer.stopping is not None
    recorders = gradient_recorders(spec, run_dir, task, model)
    callbacks = [*callbacks, *recorders]
    for cb in callbacks:
        cb.on_start(spec, run_dir, resumed)
    dashboards = open_dashboards(spec, run_dir, resumed, step=trainer.step, run_id=base_meta["run_id"])
    callbacks = [*callbacks, *dashboards]
    checkpointer = Checkpointer(run_dir, model, base_meta)
    metrics = MetricsWriter(run_dir / METRICS_FILE)
    try:
        with TrainingProgress(
            spec.train.max_steps,
            spec.name,
            enabled=progress,
            start=trainer.step,
            units=task.units_per_step(spec.train.batch_size),
            stops_early=may_stop_early(spec.train),
        ) as bar:
            trainer.callbacks = [metrics, bar, checkpointer, *callbacks]
            result = trainer.run()
    finally:
        metrics.close()
        for recorder in recorders:
            recorder.close()
        close_dashboards(dashboards)
    meta = {**mark_ended(base_meta), **result.to_dict()}
    checkpointer.save(trainer, meta)
    if result.status == "interrupted":
        raise RunInterrupted(run_dir, result.steps, meta)
    return {**meta, "run_dir": str(run_dir)}


def _record_failure(run_dir: Path, base_meta: dict[str, Any], step: int, error: str) -> None:
    """Mark the run failed in its record; its last checkpoint, if any, stays as it is (resumable)."""
    try:
        write_json(run_dir / META_FILE, {**mark_ended(base_meta), "status": "failed", "steps": step, "error": error})
    except OSError:
        pass  # the disk that failed the run may refuse this too; the error itself still propagates


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (training the checkpoint does not hold) and unreadable lines."""
    if not path.is_file():
        return
    records, bad = read_jsonl(path)
    if bad:
        warnings.warn(
            f"{path}: dropped {bad} unreadable line{'s' if bad > 1 else ''} (a write cut short by a crash)",
            RnnkitWarning,
            stacklevel=2,
        )
    kept = [r for r in records if isinstance(r.get("step", 0), int) and r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(finite_json(r), allow_nan=False) + "\n" for r in kept))
