"""Where a run came from, recorded in its meta.json under ``provenance``: the rnnkit, torch and Python
versions, the git commit of the spec's repository (when the spec file is inside one), the command line,
the host, the device, torch's threads, and when the run started, was resumed and ended.

Nothing here fails a run: what cannot be found (no git, a spec outside any repository, a git that
hangs past ``GIT_TIMEOUT_S``) is left out.
"""

from __future__ import annotations

import platform
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from rnnkit.version import __version__

#: Seconds ``git rev-parse HEAD`` may take before the commit is left out.
GIT_TIMEOUT_S = 3.0
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def now() -> str:
    """The time now in UTC, ISO 8601 to the second (``2026-12-01T09:30:12+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit(directory: str | Path) -> str | None:
    """The commit checked out in the git repository holding ``directory``, or None (no git, not a
    repository, a repository without commits, or git took longer than ``GIT_TIMEOUT_S``)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and _SHA.fullmatch(sha) else None


def gather_provenance(device: torch.device | str, spec_file: str | Path | None = None) -> dict[str, Any]:
    """The provenance of a run starting now in this process on ``device``. The git commit is looked
    up from the spec file's folder (else the working directory: a sweep's runs carry no file)."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "rnnkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "command": list(sys.argv),
        "host": socket.gethostname(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "started_at": now(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(device)
    folder = Path.cwd()
    if spec_file is not None:
        spec_path = Path(spec_file).absolute()
        info["spec_file"] = str(spec_path)
        folder = spec_path.parent
    commit = git_commit(folder)
    if commit is not None:
        info["git_commit"] = commit
    return info


def resumed_provenance(current: dict[str, Any], previous: Any) -> dict[str, Any]:
    """The provenance of a resumed run: this process's, with the run's first start kept as
    ``started_at`` and every resume listed in ``resumed_at``."""
    if not isinstance(previous, dict) or not isinstance(previous.get("started_at"), str):
        return current
    earlier = previous.get("resumed_at")
    earlier = earlier if isinstance(earlier, list) else []
    return {**current, "started_at": previous["started_at"], "resumed_at": [*earlier, current["started_at"]]}


def mark_ended(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` (a run record) with its provenance's ``ended_at`` set to now (unchanged if it has none)."""
    provenance = meta.get("provenance")
    if not isinstance(provenance, dict):
        return meta
    return {**meta, "provenance": {**provenance, "ended_at": now()}}
