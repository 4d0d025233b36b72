"""Sweeps: one training run per (model, length, seed), in worker processes, resumable.

    <out>/<model>-T<length>-s<seed>/   a run directory per run (see rnnkit.runner)
    <out>/results.csv                   one row per planned run, rewritten after every run
    <out>/accuracy_vs_length.png        best accuracy vs palindrome length, mean +- std over seeds

A run whose directory already holds a finished run of the same resolved spec is skipped, so running
the same sweep again after an interrupt or a crash only does what is left. A run that fails is
recorded (status ``failed`` with its error) and the sweep goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnkit.checkpoint import META_FILE, atomic_write_text, checkpoint_dir, write_json
from rnnkit.config import ConfigBuilder
from rnnkit.device import resolve_device
from rnnkit.errors import RnnkitError, RunError, UsageError
from rnnkit.memory import memory_budget
from rnnkit.registry import get_model
from rnnkit.rundir import RunLock, is_locked, lock_owner, prepare_run_dir
from rnnkit.runner import (
    RunInterrupted,
    finished_meta,
    read_record,
    saved_spec,
    spec_differences,
    train_run,
)
from rnnkit.spec import RunSpec, load_yaml, parse_override, resolve_spec
from rnnkit.task import Task
from rnnkit.tasks import TASK_TYPES
from rnnkit.workers import WorkerPool

RESULTS_FILE = "results.csv"
FIGURE_FILE = "accuracy_vs_length.png"
RESULT_COLUMNS = (
    "model",
    "length",
    "seed",
    "status",
    "best_accuracy",
    "final_accuracy",
    "steps",
    "seconds",
    "run_dir",
    "error",
)


#: Most lengths, and most runs, one sweep may plan (each run is a directory and a training run).
MAX_LENGTHS = 10_000
MAX_RUNS = 100_000


def parse_lengths(text: str) -> list[int]:
    """``5-35`` (inclusive), ``5-35:5`` (with a step) or ``5,10,20``; every length at least 2."""
    text = str(text).strip()
    lengths: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?", part)  # a billion: past any bound
        if not m:
            raise UsageError(f"invalid lengths '{text}': use a range like 5-35, 5-35:5 or a list like 5,10,20")
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) else start
        step = int(m.group(3)) if m.group(3) else 1
        if stop < start:
            raise UsageError(f"invalid lengths '{part}': the range runs backwards (did you mean {stop}-{start}?)")
        if step < 1:
            raise UsageError(f"invalid lengths '{part}': the step must be at least 1")
        if len(lengths) + (stop - start) // step + 1 > MAX_LENGTHS:
            raise UsageError(f"invalid lengths '{text}': more than {MAX_LENGTHS:,} lengths in one sweep")
        lengths.extend(range(start, stop + 1, step))
    if min(lengths) < 2:
        raise UsageError(f"invalid lengths '{text}': a palindrome needs length at least 2")
    return sorted(set(lengths))


def parse_models(text: str | list[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if str(n).strip()]
    if not names:
        raise UsageError("no models given: use e.g. --models rnn,lstm")
    return list(dict.fromkeys(names))


#: Keys each run of a sweep gets from the sweep itself; overriding them would mislabel runs.
SWEEP_CONTROLLED = ("name", "seed", "out_dir", "model.name", "task.length")


def _check_not_controlled(keys: list[str], where: str) -> None:
    for key in keys:
        if key in SWEEP_CONTROLLED or any(key == c.split(".")[0] and "." in c for c in SWEEP_CONTROLLED):
            raise UsageError(
                f"{where} cannot set '{key}': the sweep sets it for each run (use --models, --lengths, --seeds, --out)"
            )


@dataclass
class SweepPlan:
    """What a sweep runs: every (model, length, seed), from one base spec plus per-length overrides."""

    models: list[str]
    lengths: list[int]
    seeds: int = 1
    out: Path = Path("runs/sweep-palindrome")
    base: dict[str, Any] = field(default_factory=dict)
    per_length: dict[int, dict[str, Any]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")
        total = len(self.models) * len(self.lengths) * self.seeds
        if total > MAX_RUNS:
            raise UsageError(
                f"the sweep would plan {total:,} runs ({len(self.models)} models x {len(self.lengths)} lengths x "
                f"{self.seeds} seeds); at most {MAX_RUNS:,} runs per sweep"
            )
        self.out = Path(self.out)
        _check_not_controlled([parse_override(o)[0] for o in self.overrides], "-s")
        for length, values in self.per_length.items():
            _check_not_controlled(list(values), f"per_length.{length}")
        _check_not_controlled([k for k in self.base if k in ("name", "seed", "out_dir")], "spec")

    def run_specs(self) -> list[tuple[str, int, int, RunSpec]]:
        """(model, length, seed, resolved spec) for every run; validates everything before any runs."""
        runs = []
        for model in self.models:
            for length in self.lengths:
                for seed in range(self.seeds):
                    name = f"{model}-T{length:02d}-s{seed}"
                    overrides: list[Any] = list(self.per_length.get(length, {}).items()) + list(self.overrides)
                    overrides += [("model.name", model), ("task.length", length)]
                    overrides += [("name", name), ("seed", seed), ("out_dir", str(self.out))]
                    runs.append((model, length, seed, resolve_spec(self.base, overrides, default_name=name)))
        return runs


@dataclass
class SweepSpec:
    """A sweep spec file: which runs, and the run spec (plus per-length overrides) they share."""

    name: str = "sweep-palindrome"
    models: str | list[str] = "rnn,lstm"
    lengths: str | int | list[int] = "5-35"
    seeds: int = field(default=1, metadata={"ge": 1})
    workers: int = field(default=0, metadata={"ge": 0})  # 0: one per CPU
    out: str = ""  # default: runs/<name>
    spec: dict = field(default_factory=dict)
    per_length: dict = field(default_factory=dict)


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (``models``, ``lengths``, ``seeds``, ``spec``, ``per_length`` ...)."""

    data, lines = load_yaml(path)
    validator = ConfigBuilder(lines, str(path))
    sweep = validator.build(SweepSpec, data, "")
    if not sweep.name or "/" in sweep.name or sweep.name in (".", ".."):
        raise validator.error("name", f"must be a plain directory name, got {sweep.name!r}")
    checked: dict[int, dict[str, Any]] = {}
    for length, values in sweep.per_length.items():
        if isinstance(length, bool) or not isinstance(length, int) or not isinstance(values, dict):
            raise validator.error(
                f"per_length.{length}", "give an integer length and a mapping of overrides, e.g. 5: {train.lr: 0.01}"
            )
        checked[length] = values
    sweep.per_length = checked
    return sweep


def plan_sweep(
    spec_file: str | Path | None = None,
    *,
    lengths: str | None = None,
    models: str | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] = (),
) -> tuple[SweepPlan, int]:
    """The plan (validated run by run) and worker count from a sweep spec file and options over it."""
    file = load_sweep_spec(spec_file) if spec_file is not None else SweepSpec()
    n_workers = workers if workers is not None else (file.workers or os.cpu_count() or 1)
    if n_workers < 1:
        raise UsageError(f"--workers must be at least 1, got {n_workers}")
    file_lengths = file.lengths if isinstance(file.lengths, list) else str(file.lengths)
    if isinstance(file_lengths, list):
        file_lengths = ",".join(str(t) for t in file_lengths)
    plan = SweepPlan(
        models=parse_models(models if models is not None else file.models),
        lengths=parse_lengths(lengths if lengths is not None else file_lengths),
        seeds=seeds if seeds is not None else file.seeds,
        out=Path(out) if out is not None else Path(file.out or f"runs/{file.name}"),
        base=file.spec,
        per_length=file.per_length,
        overrides=list(overrides),
    )
    return plan, n_workers


# ---------------------------------------------------------------------------------------------
# Running


def finished_result(run_dir: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The recorded result of ``run_dir`` if it finished the same resolved spec, else None."""
    saved = saved_spec(run_dir)
    if saved is None or spec_differences(saved, spec.to_dict()):
        return None
    return finished_meta(run_dir)


def check_no_conflicts(out: Path, runs: list[tuple[str, int, int, RunSpec]]) -> None:
    """Refuse a sweep whose run directories hold runs of other specs: a sweep never overwrites a run."""
    conflicts = []
    for _, _, _, spec in runs:
        saved = saved_spec(out / spec.name)
        if saved is not None:
            diffs = spec_differences(saved, spec.to_dict())
            if diffs:
                conflicts.append((spec.name, diffs))
    if conflicts:
        name, diffs = conflicts[0]
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        raise UsageError(
            f"{out / name}{more} hold runs of another spec ({'; '.join(diffs[:2])}); a sweep never overwrites "
            f"runs: use another --out, or delete those runs"
        )


def check_memory(runs: list[tuple[str, int, int, RunSpec]]) -> None:
    """Refuse a sweep any of whose runs would not fit in memory, before the first one starts (each
    distinct model and task setting is estimated once; seeds do not change the size)."""
    tasks: dict[str, Task] = {}
    seen = set()
    for _, _, _, spec in runs:
        key = repr((spec.model_name, spec.model, spec.task_name, spec.task, spec.train.batch_size, spec.device))
        if key in seen:
            continue
        seen.add(key)
        device = resolve_device(spec.device)
        task_type = TASK_TYPES[spec.task_name]
        task_key = repr((spec.task_name, dataclasses.asdict(spec.task)))
        if task_key not in tasks:
            tasks[task_key] = task_type(spec.task, device, spec.seed)
        model_def = get_model(spec.model_name, task_type.kind)
        budget = memory_budget(spec.train.max_memory_gb, device)
        tasks[task_key].check_memory(model_def, spec.model, spec.train.batch_size, budget)


def check_plan(out: Path, runs: list[tuple[str, int, int, RunSpec]]) -> None:
    """Everything that can be known before the first run: no run of another spec is in the way, and
    every run fits in memory."""
    check_no_conflicts(out, runs)
    check_memory(runs)


_in_run = False


def _worker_signal(signum: int, frame: Any) -> None:
    # Ctrl-C reaches every worker of the terminal's process group; only one that is training stops
    # (and saves), an idle one leaves the decision to the sweep. SIGTERM to an idle worker ends it.
    if _in_run:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        raise SystemExit(128 + signum)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, _worker_signal)
    signal.signal(signal.SIGTERM, _worker_signal)


def _run_in_worker(spec_dict: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """One run in a worker process; its meta comes back as the answer, errors included (as text)."""
    global _in_run
    _in_run = True
    try:
        spec = resolve_spec(spec_dict, default_name=spec_dict["name"])
        return run_one(spec, Path(run_dir), threads)
    except RunInterrupted as exc:
        return exc.meta
    except KeyboardInterrupt:
        return {"status": "interrupted"}
    except Exception as exc:  # a failed run is an answer like any other
        return {"status": "failed", "error": _describe_error(exc)}
    finally:
        _in_run = False


def run_one(spec: RunSpec, run_dir: Path, threads: int | None) -> dict[str, Any]:
    """Do what is left of one planned run, under its lock: nothing if it finished (``skipped``), resume
    it from its checkpoint, or start it. ``{"status": "busy"}`` if another process owns it."""
    lock = RunLock.try_acquire(run_dir)
    if lock is None:
        return {"status": "busy", "owner": lock_owner(run_dir)}
    with lock:
        done = finished_result(run_dir, spec)
        if done is not None:
            return {**done, "skipped": True}
        resume = checkpoint_dir(run_dir) is not None
        return train_run(spec, lock, progress=False, threads=threads, resume=resume)


def _row(
    model: str, length: int, seed: int, run_dir: Path, meta: dict[str, Any] | None, error: str = ""
) -> dict[str, Any]:
    meta = meta or {}
    return {
        "model": model,
        "length": length,
        "seed": seed,
        "status": meta.get("status", "failed" if error else "pending"),
        "best_accuracy": meta.get("best_accuracy", ""),
        "final_accuracy": _blank_none(meta.get("final_accuracy")),
        "steps": meta.get("steps", ""),
        "seconds": round(meta["seconds"], 2) if "seconds" in meta else "",
        "run_dir": str(run_dir),
        "error": error or meta.get("error", ""),
    }


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path = out / RESULTS_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a sweep's results.csv with numbers parsed (empty cells stay None)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for key in ("length", "seed", "steps"):
                row[key] = int(row[key]) if row.get(key) not in (None, "") else None
            for key in ("best_accuracy", "final_accuracy", "seconds"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            if not row.get("model") or row["length"] is None:
                raise ValueError("a row without model or length")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise RunError(f"{path} is not a readable sweep results file ({exc})") from exc
    return rows


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep: finished runs and results.csv are kept, interrupted runs keep
    their last checkpoint; running the same command again completes the sweep."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_sweep(
    plan: SweepPlan,
    workers: int = 1,
    on_result: Callable[[dict[str, Any], bool], None] | None = None,
    runs: list[tuple[str, int, int, RunSpec]] | None = None,
    check: bool = True,
) -> list[dict[str, Any]]:
    """Run every planned run not already finished; returns the rows of results.csv.

    ``check=False`` skips ``check_plan`` for a caller that has just run it.

    ``on_result(row, skipped)`` is called as each run finishes (or is found finished); ``runs`` are
    the plan's resolved runs when the caller has them already. Runs that another live process owns
    (another sweep on the same directory, on this machine or another) are left to it and picked up
    only if it stops before finishing them. SIGTERM stops the sweep like Ctrl-C.
    """
    runs = runs if runs is not None else plan.run_specs()
    prepare_run_dir(plan.out)
    if check:
        check_plan(plan.out, runs)
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    rows = {i: _row(m, t, s, plan.out / spec.name, None) for i, (m, t, s, spec) in enumerate(runs)}
    write_failures: list[str] = []

    def ordered() -> list[dict[str, Any]]:
        return [rows[i] for i in range(len(runs))]

    def save_results() -> None:
        try:
            write_results(plan.out, ordered())
        except OSError as exc:  # a full disk must not stop the sweep: the rows are kept and written later
            write_failures.append(f"{plan.out / RESULTS_FILE}: {exc.strerror or exc}")

    def record(i: int, meta: dict[str, Any], skipped: bool = False) -> None:
        model, length, seed, spec = runs[i]
        run_dir = plan.out / spec.name
        if meta.get("status") == "failed" and "worker process died" in meta.get("error", ""):
            record_failure(run_dir, meta["error"])
        rows[i] = _row(model, length, seed, run_dir, meta)
        save_results()
        if on_result:
            on_result(rows[i], skipped)

    todo = []
    for i, (_, _, _, spec) in enumerate(runs):
        meta = finished_result(plan.out / spec.name, spec)
        if meta is not None:
            rows[i] = _row(*runs[i][:3], plan.out / spec.name, meta)
            if on_result:
                on_result(rows[i], True)
        else:
            todo.append(i)
    save_results()
    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        interrupted = _Scheduler(runs, todo, plan.out, workers, threads, record).run()
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    save_results()
    if interrupted:
        raise SweepInterrupted(
            f"sweep interrupted; finished runs are kept in {plan.out}: run the same command again to finish it"
        )
    if write_failures:
        raise RunError(f"could not write the sweep's results: {write_failures[-1]}")
    return ordered()


class _Scheduler:
    """Hands the runs left to do to this process (``workers`` = 1) or to a WorkerPool; a run another
    process owns waits until its lock is free. ``run()`` returns True if interrupted."""

    def __init__(
        self,
        runs: list[tuple[str, int, int, RunSpec]],
        todo: list[int],
        out: Path,
        workers: int,
        threads: int,
        record: Callable[..., None],
    ) -> None:
        self.runs, self.out, self.workers, self.threads, self.record = runs, out, workers, threads, record
        # popped from the end: in plan order in this process, longest sequences first across workers
        self.pending = list(reversed(todo)) if workers == 1 else sorted(todo, key=lambda i: runs[i][1])
        self.elsewhere: list[int] = []  # owned by another process right now

    def _dir(self, i: int) -> Path:
        return self.out / self.runs[i][3].name

    def _next(self) -> int | None:
        """The next run to start, or None; runs another process owns are set aside."""
        while self.pending:
            i = self.pending.pop()
            if is_locked(self._dir(i)):
                self.elsewhere.append(i)
                continue
            return i
        return None

    def _answer(self, i: int, meta: dict[str, Any]) -> bool:
        """Record one run's answer; True if it was interrupted."""
        if meta.get("status") == "busy":
            self.elsewhere.append(i)
            return False
        self.record(i, meta, bool(meta.pop("skipped", False)))
        return meta.get("status") == "interrupted"

    def _recheck_elsewhere(self) -> None:
        """Runs whose owner has let go (finished or died) go back to the queue."""
        free = [i for i in self.elsewhere if not is_locked(self._dir(i))]
        self.elsewhere = [i for i in self.elsewhere if i not in free]
        self.pending.extend(free)

    def run(self) -> bool:
        return self._serial() if self.workers == 1 else self._parallel()

    def _serial(self) -> bool:
        while self.pending or self.elsewhere:
            i = self._next()
            if i is None:
                time.sleep(OTHERS_POLL_S)
                self._recheck_elsewhere()
                continue
            spec = self.runs[i][3]
            try:
                meta = run_one(spec, self._dir(i), self.threads)
            except RunInterrupted as exc:
                meta = exc.meta
            except KeyboardInterrupt:
                meta = {"status": "interrupted"}
            except Exception as exc:  # a failed run is recorded; the sweep goes on
                meta = {"status": "failed", "error": _describe_error(exc)}
            if self._answer(i, meta):
                return True
        return False

    def _parallel(self) -> bool:
        pool = WorkerPool(self.workers, initializer=_worker_init)
        interrupted = False
        try:
            while (not interrupted and (self.pending or self.elsewhere)) or pool.in_flight():
                while not interrupted and pool.idle() and (i := self._next()) is not None:
                    spec = self.runs[i][3]
                    pool.submit(i, _run_in_worker, spec.to_dict(), str(self._dir(i)), self.threads)
                if not pool.in_flight():
                    time.sleep(OTHERS_POLL_S)
                    self._recheck_elsewhere()
                    continue
                try:
                    outcomes = pool.wait(timeout=OTHERS_POLL_S if self.elsewhere else None)
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C: stop now; each run keeps its last checkpoint
                        for i in pool.in_flight():
                            self.record(i, {"status": "interrupted"})
                        pool.signal_busy(signal.SIGKILL)
                        return True
                    interrupted = True
                    pool.signal_busy(signal.SIGTERM)  # each saves its run and answers
                    continue
                for outcome in outcomes:
                    meta = outcome.value if outcome.ok else {"status": "failed", "error": outcome.error}
                    interrupted = self._answer(outcome.key, meta) or interrupted
                self._recheck_elsewhere()
        finally:
            pool.close()
        return interrupted


#: Seconds between looks at runs that another process owns.
OTHERS_POLL_S = 1.0


def record_failure(run_dir: Path, error: str) -> None:
    """Mark ``run_dir`` failed in its record (when no live process owns it); its checkpoint is kept."""
    lock = RunLock.try_acquire(run_dir) if run_dir.is_dir() else None
    if lock is None:
        return
    with lock:
        try:
            write_json(run_dir / META_FILE, {**read_record(run_dir), "status": "failed", "error": error})
        except OSError:
            pass


def _describe_error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, RnnkitError) else f"{type(exc).__name__}: {exc}"
    return text.replace("\n", " ")[:500]


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """Per model and length: mean and std of best accuracy over seeds, mean steps, runs counted."""
    import statistics

    grouped: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        grouped.setdefault(row["model"], {}).setdefault(int(row["length"]), []).append(row)
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for model, by_length in grouped.items():
        summary[model] = {}
        for length, group in sorted(by_length.items()):
            accs = [float(r["best_accuracy"]) for r in group if r.get("best_accuracy") not in (None, "")]
            steps = [float(r["steps"]) for r in group if r.get("steps") not in (None, "")]
            summary[model][length] = {
                "mean": statistics.fmean(accs) if accs else float("nan"),
                "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "steps": statistics.fmean(steps) if steps else float("nan"),
                "runs": len(accs),
                "failed": sum(1 for r in group if r.get("status") == "failed"),
            }
    return summary
