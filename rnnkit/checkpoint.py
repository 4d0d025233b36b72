"""Checkpoints: weights in safetensors (no pickle) and metadata in JSON beside them.

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupt or a crash leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from rnnkit.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON written is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(finite_json(data), indent=2, allow_nan=False) + "\n")


def save_checkpoint(directory: Path, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``directory``; returns the weights path."""
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    weights = directory / WEIGHTS_FILE
    atomic_write_bytes(weights, save(tensors))
    write_json(directory / META_FILE, {"format_version": FORMAT_VERSION, **meta})
    return weights


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, meta) paths for a run directory or a weights file."""
    path = Path(path)
    if path.is_dir():
        weights, meta = path / WEIGHTS_FILE, path / META_FILE
    else:
        weights, meta = path, path.with_name(META_FILE)
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected {weights})")
    if not meta.is_file():
        raise CheckpointError(f"checkpoint {weights} has no {META_FILE} beside it")
    return weights, meta


def read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: not a JSON object")
    return meta


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state_dict, meta) of the checkpoint at ``path`` (a run directory or a weights file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta_path = resolve_checkpoint(path)
    meta = read_meta(meta_path)
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {exc}") from exc
    return state, meta
