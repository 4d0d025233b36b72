"""One planned run of a sweep, done wherever an executor runs it (this process, a worker process, a
Ray task on another machine): under the run's lock, skip it if it finished, resume it from its
checkpoint, or start it; the answer is the run's metadata, with where it ran.

Every executor calls ``run_job``; it never raises for a failed run (the error is the answer), so a
sweep goes on. Two processes that reach the same run divide the work through the lock: the second
answers ``{"status": "busy"}`` and its executor tries the run again once the lock is free.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rnnkit.checkpoint import checkpoint_dir
from rnnkit.errors import RnnkitError
from rnnkit.rundir import RunLock, lock_owner
from rnnkit.runner import FINISHED_STATUSES, RunInterrupted, finished_meta, saved_spec, spec_differences, train_run
from rnnkit.spec import RunSpec, resolve_spec

_in_run = False


@dataclass(frozen=True)
class Job:
    """One planned run as an executor sees it: a key the sweep knows it by, the resolved spec as plain
    data (``RunSpec.to_dict()``), and its run directory."""

    key: int
    spec: dict[str, Any]
    run_dir: Path


class Executor(Protocol):
    """Runs a sweep's jobs somewhere (``--executor local`` or ``ray``)."""

    def run(self, jobs: list[Job], record: Callable[[Job, dict[str, Any]], None]) -> bool:
        """Run every job through ``run_job`` and pass each answer to ``record`` as it comes (a run
        another process owns, answered ``busy``, is tried again once its lock is free). Returns True
        when Ctrl-C or SIGTERM stopped it: the jobs in flight saved their runs, the rest never started."""
        ...


def finished_result(run_dir: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The recorded result of ``run_dir`` if it finished the same resolved spec, else None."""
    saved = saved_spec(run_dir)
    if saved is None or spec_differences(saved, spec.to_dict()):
        return None
    return finished_meta(run_dir)


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


def run_job(spec_dict: dict[str, Any], run_dir: str, threads: int, node: str = "") -> dict[str, Any]:
    """``run_one`` for an executor: the spec as plain data; errors, Ctrl-C and SIGTERM become the
    answer. ``host`` (this machine) and ``node`` (the executor's name for where it ran, default the
    host) are added to it."""
    global _in_run
    _in_run = True
    try:
        spec = resolve_spec(spec_dict, default_name=spec_dict["name"])
        meta = run_one(spec, Path(run_dir), threads)
    except RunInterrupted as exc:
        meta = exc.meta
    except KeyboardInterrupt:
        meta = {"status": "interrupted"}
    except Exception as exc:  # a failed run is an answer like any other
        meta = {"status": "failed", "error": describe_error(exc)}
    finally:
        _in_run = False
    host = socket.gethostname()
    return {**meta, "host": host, "node": node or host}


def describe_error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, RnnkitError) else f"{type(exc).__name__}: {exc}"
    return text.replace("\n", " ")[:500]


def _worker_signal(signum: int, frame: Any) -> None:
    # Ctrl-C reaches every worker of the terminal's process group; only one that is training stops
    # (and saves), an idle one leaves the decision to the sweep. SIGTERM to an idle worker ends it.
    if _in_run:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        raise SystemExit(128 + signum)


def worker_init() -> None:
    """Signal handling of a worker process that runs jobs (see ``_worker_signal``)."""
    signal.signal(signal.SIGINT, _worker_signal)
    signal.signal(signal.SIGTERM, _worker_signal)


__all__ = ["FINISHED_STATUSES", "finished_result", "run_job", "run_one", "worker_init"]
