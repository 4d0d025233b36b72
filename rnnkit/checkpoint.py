"""Checkpoints: weights in safetensors (no pickle), metadata in JSON, trainer state for resume.

A run directory's checkpoint is one unit, published with one atomic rename::

    <run>/checkpoint -> .checkpoints/checkpoint-<id>/   model.safetensors, meta.json, state.pt
    <run>/best       -> .checkpoints/best-<id>/         model.safetensors, meta.json

Every file of a new checkpoint is written and fsynced into a fresh directory under ``.checkpoints``;
then a symbolic link to it is created under a temporary name and renamed over ``checkpoint`` (or
``best``). The rename is the commit: before it the previous checkpoint is the published one and is
still whole, after it the new one is. Only then is the previous directory removed. A kill at any
moment therefore leaves a complete published checkpoint (the new one or the one before), plus
perhaps an unpublished directory that ``clean_unpublished`` removes on the next start. Signals are
held while a checkpoint is published (``rnnkit.signals``), so Ctrl-C cannot cut one short either.

A link that changes often (``best``: early in a run nearly every evaluation improves) goes through a
``ThrottledPublisher``: its newest version is kept in memory and published at most every few
seconds, and whenever the caller flushes it (before every checkpoint and at the end of a run).

Single files (``meta.json`` of a run, ``results.csv``) are written to a temporary name and renamed
into place. Runs written by rnnkit 0.1 keep their files at the top of the run directory; they load
as before (``checkpoint_dir`` falls back to the run directory itself).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rnnkit.errors import CheckpointError
from rnnkit.signals import deferred_signals

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"  # optimiser, schedule, RNG and loop counters; loaded with weights_only=True
CHECKPOINT_LINK = "checkpoint"
BEST_LINK = "best"
STORE_DIR = ".checkpoints"
FORMAT_VERSION = 2


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name_file(exc, path)
        raise
    fsync_dir(path.parent)


def _name_file(exc: BaseException, path: Path) -> None:
    """Give an OSError (a full disk) the file it was writing, so the one-line error can name it."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


def fsync_dir(path: Path) -> None:
    """Make the renames inside directory ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def json_bytes(data: Any) -> bytes:
    return (json.dumps(finite_json(data), indent=2, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json_bytes(data))


def checkpoint_files(state_dict: dict[str, Any], meta: dict[str, Any]) -> dict[str, bytes]:
    """The weights (safetensors) and metadata (JSON) of a checkpoint, as the bytes to write."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return {WEIGHTS_FILE: save(tensors), META_FILE: json_bytes({"format_version": FORMAT_VERSION, **meta})}


def publish(run_dir: Path, link: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a new directory and make ``run_dir/link`` point to it with one rename.

    Returns the new directory. The previous one stays whole until the rename and is removed after it.
    """
    run_dir = Path(run_dir)
    store = run_dir / STORE_DIR
    name = f"{link}-{uuid.uuid4().hex[:12]}"
    target = store / name
    with deferred_signals():
        try:
            return _publish(run_dir, link, files, target)
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)  # not published: the previous checkpoint stands
            _name_file(exc, target)
            raise


def _publish(run_dir: Path, link: str, files: dict[str, bytes], target: Path) -> Path:
    """Write the files into ``target`` and publish it; see ``publish``."""
    store, name = target.parent, target.name
    store.mkdir(exist_ok=True)
    target.mkdir()
    for filename, data in files.items():
        with open(target / filename, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(target)
    fsync_dir(store)
    previous = _link_target(run_dir / link)
    pending = run_dir / f".{link}.{name}.link"
    os.symlink(Path(STORE_DIR) / name, pending)
    if (run_dir / link).is_dir() and not (run_dir / link).is_symlink():  # a 0.1 run's best/: replaced
        shutil.rmtree(run_dir / link)
    os.replace(pending, run_dir / link)  # the commit
    fsync_dir(run_dir)
    if previous is not None and previous != target:
        shutil.rmtree(previous, ignore_errors=True)
    return target


class ThrottledPublisher:
    """The newest version of one link of a run directory (``best``), kept in memory and published at
    most once every ``interval`` seconds; ``flush`` publishes what is pending at once.

    Why: a publish writes and fsyncs two files and renames a link, about 2.5 ms on a local disk, as
    long as a whole training step of a small model (a GCN epoch on 1,000 nodes), and early in a run
    nearly every evaluation improves the best: publishing each one made the training steps of such a
    model about 15% slower in CPU time, though it runs between them (what it leaves in the caches).

    What it keeps: the version offered last, its weights copied to the CPU at once (later steps change
    the model's own tensors) and its metadata as it was then, so what is published does not depend on
    when. A kill loses at most the versions of the last ``interval`` seconds and of what was not
    flushed; what is on disk is always a whole version that was offered (see ``publish``). The caller
    flushes before it publishes a checkpoint whose state refers to the newest version.
    """

    def __init__(self, run_dir: Path, link: str, interval: float) -> None:
        self.run_dir, self.link, self.interval = Path(run_dir), link, interval
        self.pending: tuple[dict[str, Any], dict[str, Any]] | None = None  # (CPU weights, meta) not yet on disk
        self.published_at = time.monotonic()  # the first version waits ``interval`` from here too

    def offer(self, state_dict: dict[str, Any], meta: dict[str, Any]) -> None:
        """Make (a CPU copy of) ``state_dict`` with ``meta`` the newest version; publish it if due."""
        self.pending = ({k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}, meta)
        self.poll()

    def poll(self) -> None:
        """Publish the pending version if the last publish is ``interval`` seconds old (cheap otherwise:
        a clock read, so it can run after every training step)."""
        if self.pending is not None and time.monotonic() - self.published_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Publish the pending version now, if there is one (on an error it stays pending)."""
        if self.pending is None:
            return
        weights, meta = self.pending
        publish(self.run_dir, self.link, checkpoint_files(weights, meta))
        self.pending = None
        self.published_at = time.monotonic()


def _link_target(path: Path) -> Path | None:
    """The checkpoint directory a link points to, or None when ``path`` is no link into the store."""
    if not path.is_symlink():
        return None
    target = Path(os.readlink(path))
    return (path.parent / target) if not target.is_absolute() else target


def clean_unpublished(run_dir: Path) -> list[Path]:
    """Remove what a killed save left behind: temporary files and links, and checkpoint directories
    that no link points to. Only the owner of the run directory may call this. Returns what went."""
    run_dir = Path(run_dir)
    removed = []
    for path in run_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    for path in run_dir.glob(".*.link"):
        path.unlink(missing_ok=True)
        removed.append(path)
    store = run_dir / STORE_DIR
    if store.is_dir():
        live = {_link_target(run_dir / link) for link in (CHECKPOINT_LINK, BEST_LINK)}
        live = {p.resolve() for p in live if p is not None}
        for path in store.iterdir():
            if path.resolve() not in live:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def checkpoint_dir(run_dir: Path, link: str = CHECKPOINT_LINK) -> Path | None:
    """The published checkpoint of ``run_dir`` (``link``: checkpoint or best), or None if it has none.

    A run written by rnnkit 0.1 (weights at the top of the run directory) is its own checkpoint.
    """
    run_dir = Path(run_dir)
    published = run_dir / link
    if published.is_dir() and (published / WEIGHTS_FILE).is_file():
        return published
    if link == CHECKPOINT_LINK and (run_dir / WEIGHTS_FILE).is_file():
        return run_dir
    return None


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, meta) paths for a run directory, a checkpoint directory or a weights file."""
    path = Path(path)
    if path.is_dir():
        directory = checkpoint_dir(path) or path
        weights, meta = directory / WEIGHTS_FILE, directory / META_FILE
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


def load_state(path: Path) -> dict[str, Any]:
    """The trainer state saved in ``path``, read with ``weights_only=True`` (tensors and plain data only).

    Any failure is one CheckpointError that names the file; torch's own message is left out because
    it suggests ``weights_only=False``, which would run code from the file.
    """
    import torch

    if not Path(path).is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything from EOFError to UnpicklingError here
        raise CheckpointError(
            f"{path} is truncated, damaged or not a trainer state written by rnnkit ({type(exc).__name__}); "
            "it cannot be resumed"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a trainer state written by rnnkit")
    return state


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
