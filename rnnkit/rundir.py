"""Run directories: where a run lives, and the one process that owns it.

A run directory is owned through an OS lock (``fcntl.flock`` on ``<run>/.lock``) held for as long as
the owner writes to it. The kernel drops the lock when the owner's process ends, however it ends, so
there is never a stale lock to clean by hand; the lock file keeps the last owner's PID and host for
error messages. ``flock`` works across machines on NFSv4 and most cluster filesystems, which is what
lets several sweep processes share one directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from rnnkit.errors import RunError, RunLockedError

LOCK_FILE = ".lock"
#: What a run directory holds besides its checkpoints (see rnnkit.runner): the resolved spec, and one
#: JSON record per logged step.
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


def latest_record(run_dir: Path, tail_bytes: int = 8192) -> dict | None:
    """The last complete record of ``run_dir``'s metrics.jsonl (read from its end), or None. For
    watching runs in flight, from any process that sees the directory."""
    try:
        with open(Path(run_dir) / METRICS_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a run's JSON-lines log (metrics.jsonl, gradients.jsonl) and how many lines were
    unreadable (a kill mid-write leaves a partial last line); none when the file is missing."""
    records, bad = [], 0
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


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


def lock_owner(path: Path) -> str:
    """Who last locked ``path`` ("process 123 on host"), as far as its lock file says."""
    try:
        text = (Path(path) / LOCK_FILE).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        text = []
    if len(text) >= 2:
        return f"process {text[0]} on {text[1]}"
    return "another process"


class RunLock:
    """The lock of one run directory; ``RunLock.acquire(path)`` or ``RunLock.try_acquire(path)``.

    Use it as a context manager, or call ``release``. Holding it is what entitles a process to write
    into the directory.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = Path(path)
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, path: Path) -> RunLock | None:
        """Lock ``path`` (created if missing) without waiting; None if another process holds it."""
        path = prepare_run_dir(path)
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunError(f"cannot lock run directory {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise RunError(f"cannot lock run directory {path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        return cls(path, fd)

    @classmethod
    def acquire(cls, path: Path) -> RunLock:
        """Lock ``path`` or raise RunLockedError naming the process that holds it."""
        lock = cls.try_acquire(path)
        if lock is None:
            raise RunLockedError(f"{path} is in use by {lock_owner(path)}; wait for it to finish or stop that process")
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether another process holds the lock of the existing run directory ``path`` right now."""
    if not (Path(path) / LOCK_FILE).is_file():
        return False
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def claim_new_run_dir(out_dir: str | Path, name: str) -> RunLock:
    """A new, empty run directory ``out_dir/name`` (else ``name-2``, ``name-3`` ...), locked.

    Creating and locking happen together, so two processes started with the same name get two
    directories; an existing run, finished or not, is never reused.
    """
    base = Path(out_dir) / name
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{name}-{n}")
        n += 1
        if candidate.exists() and (not candidate.is_dir() or _has_content(candidate)):
            continue
        lock = RunLock.try_acquire(candidate)
        if lock is None:
            continue
        if _has_content(candidate):  # filled by another process between the check and the lock
            lock.release()
            continue
        return lock


def _has_content(path: Path) -> bool:
    return any(p.name != LOCK_FILE for p in path.iterdir())
