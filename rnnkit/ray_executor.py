"""The Ray executor of sweeps (``--executor ray``): each run is one Ray task, on a local Ray instance or
on any node of an existing cluster.

``RayExecutor.run(jobs, record)`` submits every job (longest sequences first) as a task asking for
``threads`` CPUs (and ``gpus`` GPUs), each calling ``rnnkit.sweep_job.run_job`` on whichever node Ray
picks, and passes the answers to ``record`` in the order the runs finish. A run that another process
owns (answered ``busy``) is submitted again once its lock is free. Ctrl-C or SIGTERM cancels the
tasks: running ones get a KeyboardInterrupt and save their run (answered ``interrupted``), queued
ones never start; the same sweep run again resumes them from their checkpoints, as with the local
executor. Every node must see the sweep directory at the same (absolute) path, on a shared
filesystem, and have rnnkit installed.

Ray is an optional extra (``pip install "rnnkit[ray]"``): this module imports without it, and says
how to install it when a sweep asks for it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnkit.errors import RunError, UsageError
from rnnkit.rundir import is_locked
from rnnkit.sweep_job import Job, describe_error, run_job

RAY_MISSING = '--executor ray needs Ray: pip install "rnnkit[ray]"'
#: Seconds between looks at runs another process owns (and the longest a wait blocks signals).
POLL_S = 1.0
#: Seconds the cancelled runs get, after Ctrl-C or SIGTERM, to save and answer before they are killed.
CANCEL_GRACE_S = 10.0
#: Ray errors that mean the process (or node) holding the run died, not that the run failed.
_DIED = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def run_on_node(spec: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """The body of a run's Ray task: ``run_job`` with the node as ``<node IP>/<Ray node id, 8 hex>``."""
    import ray

    node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    # Ray starts its workers with SIGINT blocked. A cancel is a KeyboardInterrupt raised in Python, but
    # one that comes while a run saves is held and raised again as a real SIGINT once the save is done
    # (rnnkit.signals): it must get through, or the run would train on until it is killed.
    if signal.SIGINT in signal.sigpending():
        signal.sigtimedwait([signal.SIGINT], 0)  # an old one, not meant for this run
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    try:
        return run_job(spec, run_dir, threads, node=node)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class RayExecutor:
    """Runs a sweep's jobs as Ray tasks (see the module docstring).

    ``address``: None starts a local Ray instance for the sweep (shut down after it); ``"auto"``,
    ``"HOST:6379"`` or ``"ray://HOST:10001"`` connects to an existing cluster. If this process is
    already connected to Ray, that connection is used and left open. ``threads``: CPUs (and torch
    threads) per run; ``gpus``: GPUs per run (1 for ``--device cuda``).
    """

    def __init__(self, address: str | None = None, threads: int = 1, gpus: float = 0) -> None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        if gpus < 0:
            raise UsageError(f"GPUs per run must be at least 0, got {gpus}")
        self.address = address or None
        self.threads = threads
        self.gpus = gpus

    def run(self, jobs: list[Job], record: Callable[[Job, dict[str, Any]], None]) -> bool:
        """Run every job as a Ray task and ``record`` each answer as it comes; True if interrupted."""
        ray = _import_ray()
        main = threading.current_thread() is threading.main_thread()
        previous_term = signal.getsignal(signal.SIGTERM) if main else None
        started = False
        try:
            try:
                started = self._connect(ray)
            except KeyboardInterrupt:
                return True
            if main:  # after ray.init, which sets a SIGTERM handler of its own
                signal.signal(signal.SIGTERM, _raise_interrupt)
            return _Run(ray, self, record).run(jobs)
        finally:
            if started:
                ray.shutdown()
            if main:
                signal.signal(signal.SIGTERM, previous_term if previous_term is not None else signal.SIG_DFL)

    def _connect(self, ray: Any) -> bool:
        """Connect to Ray unless already connected; True if this call did (and so must shut it down)."""
        if ray.is_initialized():
            return False
        try:
            if self.address is not None and self.address.startswith("ray://"):
                ray.init(address=self.address, log_to_driver=False)  # Ray Client: the server keeps the rest
            else:
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise RunError(f"cannot connect to {where}: {describe_error(exc)}") from exc
        return True


class _Run:
    """One ``RayExecutor.run``: the tasks in flight, the runs waiting for another process's lock."""

    def __init__(self, ray: Any, executor: RayExecutor, record: Callable[[Job, dict[str, Any]], None]) -> None:
        self.ray = ray
        self.threads = executor.threads
        self.record = record
        self.task = ray.remote(num_cpus=executor.threads, num_gpus=executor.gpus)(run_on_node)
        self.in_flight: dict[Any, Job] = {}  # object ref -> job
        self.pending: deque[Job] = deque()
        self.elsewhere: list[Job] = []  # owned by another process right now

    def run(self, jobs: list[Job]) -> bool:
        self.pending.extend(sorted(jobs, key=_cost, reverse=True))  # longest first, as the local executor
        try:
            self._submit()
            while self.in_flight or self.elsewhere:
                if not self.in_flight:  # only runs that another process owns: look again in a while
                    time.sleep(POLL_S)
                    done = []
                else:
                    done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_S)
                for ref in done:
                    if self._answer(self.in_flight.pop(ref), ref):
                        raise KeyboardInterrupt  # a run was stopped: stop the sweep as Ctrl-C would
                self._recheck_elsewhere()
                self._submit()
        except KeyboardInterrupt:
            self._cancel()
            return True
        return False

    def _submit(self) -> None:
        """Submit every pending job; those whose run another process owns are set aside."""
        while self.pending:
            job = self.pending.popleft()
            if is_locked(job.run_dir):
                self.elsewhere.append(job)
            else:
                # absolute: a worker's working directory is not this process's, nor on the same machine
                run_dir = str(Path(job.run_dir).absolute())
                self.in_flight[self.task.remote(job.spec, run_dir, self.threads)] = job

    def _recheck_elsewhere(self) -> None:
        """Runs whose owner has let go (finished or died) go back to be submitted."""
        free = [job for job in self.elsewhere if not is_locked(job.run_dir)]
        self.elsewhere = [job for job in self.elsewhere if job not in free]
        self.pending.extend(free)

    def _answer(self, job: Job, ref: Any, cancelled: bool = False) -> bool:
        """Record the answer of a finished task (a busy one waits for its lock); True if interrupted."""
        try:
            meta = self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            if cancelled:
                return False  # cancelled before the run started (or before it could answer): nothing to record
            meta = {"status": "failed", "error": "the run's Ray task was cancelled"}
        except self.ray.exceptions.RayError as exc:
            meta = {"status": "failed", "error": _describe_ray_error(exc)}
        if meta.get("status") == "busy":
            if not cancelled:
                self.elsewhere.append(job)
            return False
        self.record(job, meta)
        return meta.get("status") == "interrupted"

    def _cancel(self) -> None:
        """Cancel every task: running runs save and answer within CANCEL_GRACE_S (recorded), queued
        ones never start; what is left then is killed (each run keeps its last checkpoint). A second
        Ctrl-C kills at once."""
        deadline = time.monotonic() + CANCEL_GRACE_S
        try:
            for ref in self.in_flight:
                self.ray.cancel(ref, force=False)
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=min(left, POLL_S))
                for ref in done:
                    self._answer(self.in_flight.pop(ref), ref, cancelled=True)
        except KeyboardInterrupt:
            pass
        for ref in self.in_flight:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - the task may have finished meanwhile; nothing left to stop
                pass
        self.in_flight.clear()


def _cost(job: Job) -> int:
    """How long a job is expected to take, for ordering: its sequence length (palindromes), else 0."""
    return int((job.spec.get("task") or {}).get("length") or 0)


def _describe_ray_error(exc: BaseException) -> str:
    """One line for a Ray error; a dead worker or node reads ``worker process died (...)`` as with the
    local executor, so the sweep marks the run failed in its record (its checkpoint is kept)."""
    cause = getattr(exc, "cause", None)  # RayTaskError: what the task raised
    text = describe_error(cause if isinstance(cause, Exception) else exc)
    if type(exc).__name__ in _DIED:
        return f"worker process died ({text})"[:500]
    return text
