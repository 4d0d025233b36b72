"""A pool of worker processes in which one death costs one job, and no worker outlives its parent.

``concurrent.futures.ProcessPoolExecutor`` treats one dead worker as a broken pool: every job in
flight fails and the healthy workers are killed with it. Sweeps need the opposite, so this pool gives
each worker its own pipe: a job goes to an idle worker, the answer (or the exception, as text) comes
back on that pipe, and a worker that dies fails only the job it held and is replaced on the next
``submit``. Workers are started with ``spawn`` (no state inherited from the parent) and watch their
parent: if it is killed (even with SIGKILL), each worker stops its job as on SIGTERM (a run saves and
returns) and exits within a few seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

#: Seconds a worker whose parent died gives its job to stop cleanly before it exits regardless.
ORPHAN_GRACE_S = 3.0
_POLL_S = 0.25


@dataclass
class Outcome:
    """What became of one job: its value, or the error (text) that ended it."""

    key: Any
    ok: bool
    value: Any = None
    error: str = ""


class _Worker:
    def __init__(self, context: Any, initializer: Callable[[], None] | None) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, os.getpid(), initializer), daemon=True)
        self.process.start()
        child.close()
        self.key: Any = None
        self.busy = False


class WorkerPool:
    """``size`` spawned worker processes running picklable ``fn(*args)`` jobs, one at a time each."""

    def __init__(self, size: int, initializer: Callable[[], None] | None = None) -> None:
        self.size = max(1, size)
        self.initializer = initializer
        self._context = get_context("spawn")
        self._workers: list[_Worker] = []

    def idle(self) -> int:
        """How many more jobs can be submitted right now."""
        return self.size - sum(1 for w in self._workers if w.busy)

    def in_flight(self) -> list[Any]:
        return [w.key for w in self._workers if w.busy]

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` on an idle worker (a new one if none is alive and idle)."""
        worker = next((w for w in self._workers if not w.busy and w.process.is_alive()), None)
        if worker is None:
            self._workers = [w for w in self._workers if w.busy or w.process.is_alive()]
            if len(self._workers) >= self.size:
                raise RuntimeError("no idle worker: wait for a job to finish first")
            worker = _Worker(self._context, self.initializer)
            self._workers.append(worker)
        worker.conn.send((fn, args))
        worker.key, worker.busy = key, True

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of the jobs that finished (or whose worker died) within ``timeout`` seconds."""
        busy = [w for w in self._workers if w.busy]
        if not busy:
            return []
        handles: dict[Any, _Worker] = {}
        for w in busy:
            handles[w.conn] = w
            handles[w.process.sentinel] = w
        outcomes: list[Outcome] = []
        for ready in wait(list(handles), timeout):
            worker = handles[ready]
            if not worker.busy:
                continue  # its pipe and its sentinel were both ready
            outcome = self._collect(worker)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _collect(self, worker: _Worker) -> Outcome | None:
        key = worker.key
        try:
            if worker.conn.poll():
                ok, value = worker.conn.recv()
                worker.busy, worker.key = False, None
                return Outcome(key, True, value) if ok else Outcome(key, False, error=value)
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=1.0)
        if worker.process.is_alive():
            return None  # readable but nothing whole yet: wait again
        worker.busy, worker.key = False, None
        return Outcome(key, False, error=f"worker process died ({_exit_reason(worker.process.exitcode)})")

    def signal_busy(self, signum: int) -> None:
        """Send ``signum`` to every worker that holds a job."""
        for w in self._workers:
            if w.busy and w.process.pid is not None:
                try:
                    os.kill(w.process.pid, signum)
                except OSError:
                    pass

    def close(self, timeout: float = 10.0) -> None:
        """Ask idle workers to exit, wait up to ``timeout`` s, then kill what is left."""
        for w in self._workers:
            try:
                if not w.busy:
                    w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(1.0)
            w.conn.close()
        self._workers = []


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _serve(conn: Connection, parent: int, initializer: Callable[[], None] | None) -> None:
    """A worker's loop: run each job received, send back (True, value) or (False, error text)."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:
            return
        fn, args = job
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back as text, the worker lives on
            text = traceback.format_exception_only(exc)[-1].strip()
            reply = (False, text.replace("\n", " ")[:500])
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return


def _watch_parent(parent: int) -> None:
    """If the parent goes away, stop the job as SIGTERM would, then leave after ORPHAN_GRACE_S."""
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(1)
