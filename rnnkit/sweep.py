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
import os
import re
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from rnnkit.errors import RnnkitError, UsageError
from rnnkit.runner import FINISHED_STATUSES
from rnnkit.spec import RunSpec, load_yaml, parse_override, resolve_spec

RESULTS_FILE = "results.csv"
FIGURE_FILE = "accuracy_vs_length.png"
FAILED_FILE = "failed.json"
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


def parse_lengths(text: str) -> list[int]:
    """``5-35`` (inclusive), ``5-35:5`` (with a step) or ``5,10,20``; every length at least 2."""
    text = str(text).strip()
    lengths: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            raise UsageError(f"invalid lengths '{text}': use a range like 5-35, 5-35:5 or a list like 5,10,20")
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) else start
        step = int(m.group(3)) if m.group(3) else 1
        if stop < start:
            raise UsageError(f"invalid lengths '{part}': the range runs backwards (did you mean {stop}-{start}?)")
        if step < 1:
            raise UsageError(f"invalid lengths '{part}': the step must be at least 1")
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
    from rnnkit.spec import _Validator

    data, lines = load_yaml(path)
    validator = _Validator(lines, str(path))
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
    from rnnkit.checkpoint import META_FILE, read_meta
    from rnnkit.runner import CONFIG_FILE

    meta_path, config_path = run_dir / META_FILE, run_dir / CONFIG_FILE
    if not (meta_path.is_file() and config_path.is_file()):
        return None
    try:
        meta = read_meta(meta_path)
        saved = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (RnnkitError, OSError, yaml.YAMLError):
        return None
    planned = spec.to_dict()
    same_spec = isinstance(saved, dict) and {**saved, "out_dir": None} == {**planned, "out_dir": None}
    return meta if same_spec and meta.get("status") in FINISHED_STATUSES else None


_in_run = False


def _worker_sigint(signum: int, frame: Any) -> None:
    # Ctrl-C reaches every worker; only one that is training should stop (and save), idle ones ignore it.
    if _in_run:
        raise KeyboardInterrupt


def _worker_init() -> None:
    signal.signal(signal.SIGINT, _worker_sigint)


def _run_in_worker(spec_dict: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """Runs in a worker process; returns the run's meta (status ``interrupted`` after Ctrl-C)."""
    from rnnkit.runner import RunInterrupted

    global _in_run
    _in_run = True
    try:
        spec = resolve_spec(spec_dict, default_name=spec_dict["name"])
        return _run_one(spec, Path(run_dir), threads)
    except RunInterrupted as exc:
        return exc.meta
    except KeyboardInterrupt:
        return {"status": "interrupted"}
    except Exception as exc:  # re-raised as a plain error: it must cross the process boundary
        raise RunFailed(_describe_error(exc)) from None
    finally:
        _in_run = False


def _run_one(spec: RunSpec, run_dir: Path, threads: int | None) -> dict[str, Any]:
    from rnnkit.runner import train_run

    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    return train_run(spec, run_dir, progress=False, threads=threads)


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
        "error": error,
    }


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    import io

    from rnnkit.checkpoint import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path = out / RESULTS_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a sweep's results.csv with numbers parsed (empty cells stay None)."""
    from rnnkit.errors import RunError

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
    """Ctrl-C during a sweep: finished runs and results.csv are kept; re-running completes it."""


def run_sweep(
    plan: SweepPlan,
    workers: int = 1,
    on_result: Callable[[dict[str, Any], bool], None] | None = None,
    runs: list[tuple[str, int, int, RunSpec]] | None = None,
) -> list[dict[str, Any]]:
    """Run every planned run not already finished; returns the rows of results.csv.

    ``on_result(row, skipped)`` is called as each run finishes (or is found finished); ``runs`` are
    the plan's resolved runs when the caller has them already.
    """
    from rnnkit.runner import prepare_run_dir

    runs = runs if runs is not None else plan.run_specs()
    prepare_run_dir(plan.out)
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    rows: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for i, (model, length, seed, spec) in enumerate(runs):
        run_dir = plan.out / spec.name
        meta = finished_result(run_dir, spec)
        rows[i] = _row(model, length, seed, run_dir, meta)
        if meta is not None:
            if on_result:
                on_result(rows[i], True)
        else:
            todo.append(i)

    def ordered() -> list[dict[str, Any]]:
        return [rows[i] for i in range(len(runs))]

    def record(i: int, meta: dict[str, Any] | None, error: str = "") -> None:
        model, length, seed, spec = runs[i]
        run_dir = plan.out / spec.name
        if error:
            from rnnkit.checkpoint import write_json

            try:
                write_json(run_dir / FAILED_FILE, {"error": error})
            except OSError:
                pass
        rows[i] = _row(model, length, seed, run_dir, meta, error)
        write_results(plan.out, ordered())
        if on_result:
            on_result(rows[i], False)

    write_results(plan.out, ordered())
    if workers == 1:
        interrupted = _run_serial(runs, todo, plan.out, threads, record)
    else:
        interrupted = _run_parallel(runs, todo, plan.out, workers, threads, record)
    write_results(plan.out, ordered())
    if interrupted:
        raise SweepInterrupted(
            f"sweep interrupted; finished runs are kept in {plan.out}: run the same command again to finish it"
        )
    return ordered()


def _run_serial(
    runs: list[tuple[str, int, int, RunSpec]], todo: list[int], out: Path, threads: int, record: Callable[..., None]
) -> bool:
    """Runs in this process, one after another; True if Ctrl-C stopped them."""
    from rnnkit.runner import RunInterrupted

    for i in todo:
        spec = runs[i][3]
        try:
            record(i, _run_one(spec, out / spec.name, threads))
        except RunInterrupted as exc:
            record(i, exc.meta)
            return True
        except KeyboardInterrupt:
            record(i, {"status": "interrupted"})
            return True
        except Exception as exc:  # a failed run is recorded; the sweep goes on
            record(i, None, _describe_error(exc))
    return False


def _signal_workers(executor: ProcessPoolExecutor, terminate: bool = False) -> None:
    for process in list(getattr(executor, "_processes", {}).values()):
        try:
            process.terminate() if terminate else os.kill(process.pid, signal.SIGINT)
        except (OSError, ValueError):
            pass


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init)


def _run_parallel(
    runs: list[tuple[str, int, int, RunSpec]],
    todo: list[int],
    out: Path,
    workers: int,
    threads: int,
    record: Callable[..., None],
) -> bool:
    """Runs in ``workers`` processes, longest first; True if Ctrl-C stopped them.

    Ctrl-C reaches the workers too: each saves its run as interrupted and returns, and this waits for
    them so that every run directory is left complete.
    """
    pending = sorted(todo, key=lambda i: runs[i][1])  # popped from the end: longest sequences first
    executor = _new_pool(workers)
    in_flight: dict[Future, int] = {}
    interrupted = False
    try:
        while (pending and not interrupted) or in_flight:
            while pending and not interrupted and len(in_flight) < workers:
                i = pending.pop()
                spec = runs[i][3]
                in_flight[executor.submit(_run_in_worker, spec.to_dict(), str(out / spec.name), threads)] = i
            try:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: stop the workers now
                    _signal_workers(executor, terminate=True)
                    return True
                interrupted = True
                _signal_workers(executor)  # they save their runs and return (Ctrl-C may not have reached them)
                continue
            broken = ""
            for future in done:
                i = in_flight.pop(future)
                try:
                    meta = future.result()
                except BrokenProcessPool as exc:
                    broken = f"worker process died: {exc}"
                    record(i, None, broken)
                except Exception as exc:  # a failed run is recorded; the sweep goes on
                    record(i, None, _describe_error(exc))
                else:
                    interrupted = interrupted or meta.get("status") == "interrupted"
                    record(i, meta)
            if broken:  # every run still in the dead pool failed with it; start a fresh pool
                for i in in_flight.values():
                    record(i, None, broken)
                in_flight.clear()
                executor.shutdown(wait=False, cancel_futures=True)
                executor = _new_pool(workers)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return interrupted


class RunFailed(Exception):
    """A run's error, described in the worker (so it crosses the process boundary as text)."""


def _describe_error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, (RunFailed, RnnkitError)) else f"{type(exc).__name__}: {exc}"
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
