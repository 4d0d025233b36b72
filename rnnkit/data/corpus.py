"""Encoded corpora: a text as an array of vocabulary ids in the smallest unsigned type that holds them,
streamed from its file in bounded chunks and kept as a memory map in a cache keyed by its content.

Why: a corpus encoded through a Python list into int64 cost about 22 bytes of memory per character, so
a 50 MB text needed 1.1 GB and a 1 GB text could not be trained on. Here a text file is read
``CHUNK_BYTES`` at a time and never held whole as a Python string: each chunk is decoded (UTF-8, a
byte-order mark dropped, CRLF / CR turned into LF exactly as ``text.clean_text`` does), turned into
UTF-32 code points by numpy and mapped to ids through a lookup table. Ids are ``uint8`` for at most
256 characters, ``uint16`` for at most 65,536, else ``uint32`` (``dtype_for``). The vocabulary is the
sorted set of characters, as ``Vocabulary.from_text`` builds it, so ids equal ``Vocabulary.encode``'s.

The cache (``corpus_cache_dir()``: ``$RNNKIT_CACHE_DIR/corpora``, else ``$XDG_CACHE_HOME/rnnkit/corpora``
or ``~/.cache/rnnkit/corpora``) holds, per corpus, ``<key>.ids`` (the ids, raw) and ``<key>.json`` (format,
the text's sha256, length, dtype, vocabulary and the ids' own sha256); ``key`` is the start of the sha256
of the cache format and the file's bytes, so an edited file gets a new entry. Each file is written to
a temporary name, fsynced and renamed, the ids first, so a crash at any moment leaves either no entry,
ids without their JSON (not used, rebuilt), or a whole entry. Nothing in it is trusted unread: the JSON
is checked field by field and the ids file by its size and its sha256 before it is mapped, so a
truncated or damaged entry is rebuilt (with a warning), never used. Nothing read can run code (JSON and
raw integers; no pickle).

Loading a file costs one hashing pass when the cache has it; otherwise three passes (hash; vocabulary and
length; encoding, hashed again to notice a file that changed under it). Files under ``CACHE_MIN_BYTES``
are encoded in memory without a cache entry. A cache that cannot be written (read-only folder, a full
disk) is a warning: the ids are then kept in memory, after checking that they fit in half of the memory
available (``rnnkit.memory``), and refused with a RunError before anything is allocated if they do not.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rnnkit.checkpoint import fsync_dir
from rnnkit.data.text import (
    TextConfig,
    Vocabulary,
    cache_dir,
    check_corpus_length,
    check_text_path,
    christie_text,
    unknown_corpus,
)
from rnnkit.errors import RnnkitWarning, RunError
from rnnkit.memory import available_memory_bytes

#: Part of the cache key and checked in every entry: bump it when what is stored changes.
CACHE_FORMAT = "rnnkit-corpus-1"
#: Bytes of the file read, decoded and encoded at a time: the working memory of a load is a few times this.
CHUNK_BYTES = 1 << 20
#: Text files smaller than this are encoded in memory and not cached (it takes milliseconds).
CACHE_MIN_BYTES = 1 << 18
#: The first bytes checked for NUL, the sign of a binary file (as ``text.read_text_file`` does).
BINARY_PROBE_BYTES = 65536
#: Largest JSON sidecar read back (a vocabulary of every Unicode character is about 10 MB).
MAX_HEADER_BYTES = 1 << 26
#: Temporary files of a writer that has not written for this long are a crashed writer's and removed.
STALE_TMP_SECONDS = 3600
UNICODE_SIZE = 0x110000  # code points 0 .. 0x10FFFF
IDS_SUFFIX, HEADER_SUFFIX = ".ids", ".json"


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def corpus_cache_dir() -> Path:
    """Where encoded corpora are cached: ``corpora`` under rnnkit's cache folder (``text.cache_dir``)."""
    return cache_dir() / "corpora"


@dataclass
class EncodedCorpus:
    """A corpus as ids: ``data`` (chars,) of ``dtype_for(len(vocab))``, a read-only memory map of the cache
    entry ``cache_file`` when there is one, else an array in memory."""

    vocab: Vocabulary
    data: np.ndarray
    source: str
    cache_file: Path | None = None


class _Lookup:
    """Code point -> id tables for one vocabulary: ``ids[cp]`` is the id, ``known[cp]`` whether it is one."""

    def __init__(self, vocab: Vocabulary) -> None:
        points = np.array([ord(c) for c in vocab.chars], dtype=np.int64)  # (vocab,)
        self.dtype = dtype_for(len(vocab))
        self.ids = np.zeros(UNICODE_SIZE, dtype=self.dtype)  # (0x110000,)
        self.ids[points] = np.arange(len(points), dtype=self.dtype)
        self.known = np.zeros(UNICODE_SIZE, dtype=bool)
        self.known[points] = True

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Ids of ``points`` (n,) uint32; ValueError naming the first character outside the vocabulary."""
        known = np.take(self.known, points)  # (n,) bool; np.take gathers about twice as fast as indexing
        if not known.all():
            first = int(points[np.argmin(known)])
            raise ValueError(f"character {chr(first)!r} (U+{first:04X}) is not in the vocabulary")
        return np.take(self.ids, points)  # (n,) of self.dtype


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as (len(text),) uint32, without a Python list."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def encode_text(text: str, vocab: Vocabulary) -> np.ndarray:
    """``vocab.encode(text)`` vectorized: (len(text),) ids in ``dtype_for(len(vocab))``.

    A character outside the vocabulary is a ValueError (``Vocabulary.encode`` raises KeyError)."""
    return _Lookup(vocab)(code_points(text))


def load_encoded(config: TextConfig, cache_root: Path | None = None) -> EncodedCorpus:
    """The corpus a text run trains on, as ids, checked to be long enough to cut windows from.

    A ``task.text`` file is streamed and cached (``encode_file``; ``cache_root`` defaults to
    ``corpus_cache_dir()``); the named ``christie`` corpus is small and encoded in memory."""
    if config.text:
        corpus = encode_file(config.text, corpus_cache_dir() if cache_root is None else cache_root)
    elif config.corpus == "christie":
        text = christie_text(config.data_dir or None)
        vocab = Vocabulary.from_text(text)
        corpus = EncodedCorpus(vocab, encode_text(text, vocab), "christie")
    else:
        raise unknown_corpus(config.corpus)
    if all(c.isspace() for c in corpus.vocab.chars):
        raise RunError(f"corpus {corpus.source} is empty")
    check_corpus_length(corpus.source, len(corpus.data), config)
    return corpus


# -- streaming a file ---------------------------------------------------------------------------------


def _hash_file(path: Path) -> str:
    """The cache key's digest: sha256 of the cache format and the file's bytes, read in chunks."""
    digest = hashlib.sha256(CACHE_FORMAT.encode() + b"\0")
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(path: Path, digest: Any) -> Iterator[np.ndarray]:
    """The code points (n,) uint32 of the cleaned text of ``path``, a chunk at a time, hashing the bytes
    read into ``digest``: UTF-8 decoded incrementally, a leading byte-order mark dropped, CRLF and CR
    made LF (a CR at the end of a chunk waits for the next one, which may start with its LF)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes read before this chunk
    started = held_cr = False
    with path.open("rb") as f:
        while True:
            raw = f.read(CHUNK_BYTES)
            if offset == 0 and b"\x00" in raw[:BINARY_PROBE_BYTES]:
                raise RunError(f"{path} looks like a binary file, not UTF-8 text")
            digest.update(raw)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                raise RunError(f"{path} is not UTF-8 text (byte {at}: {exc.reason})") from None
            offset += len(raw)
            if text and not started:
                started = True
                text = text.removeprefix("\ufeff")
            if held_cr:
                text, held_cr = "\r" + text, False
            if text.endswith("\r") and not final:
                text, held_cr = text[:-1], True
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield code_points(text)
            if final:
                return


def _scan(path: Path) -> tuple[Vocabulary, int, str]:
    """One pass: the vocabulary, the number of characters and the sha256 of the bytes of ``path``."""
    digest = hashlib.sha256(CACHE_FORMAT.encode() + b"\0")
    seen = np.zeros(UNICODE_SIZE, dtype=bool)
    count = 0
    for points in _chunks(path, digest):
        present = np.bincount(points) > 0  # (max code point + 1,); faster than seen[points] = True
        seen[: len(present)] |= present
        count += len(points)
    return Vocabulary([chr(int(p)) for p in np.flatnonzero(seen)]), count, digest.hexdigest()


def _encode_pass(path: Path, vocab: Vocabulary, expected: str, sink: Callable[[np.ndarray], None]) -> int:
    """One pass: each chunk's ids (n,) handed to ``sink``; the number of characters. RunError when the
    file's bytes no longer hash to ``expected`` (it changed while being read)."""
    lookup = _Lookup(vocab)
    digest = hashlib.sha256(CACHE_FORMAT.encode() + b"\0")
    count = 0
    changed = RunError(f"{path} changed while it was being read; run again")
    for points in _chunks(path, digest):
        try:
            ids = lookup(points)
        except ValueError:
            raise changed from None
        sink(ids)
        count += len(ids)
    if digest.hexdigest() != expected:
        raise changed
    return count


def encode_file(path: str | Path, cache_root: Path | None) -> EncodedCorpus:
    """The text file ``path`` as ids: from the cache under ``cache_root`` when an entry for its content is
    there and whole, else encoded (and cached, unless ``cache_root`` is None or the file is small)."""
    path = check_text_path(path, "corpus file")
    source = str(path)
    try:
        size = path.stat().st_size
        use_cache = cache_root is not None and size >= CACHE_MIN_BYTES
        key_digest = _hash_file(path) if use_cache else None
        if use_cache:
            cached = _read_entry(Path(cache_root), key_digest, source)
            if cached is not None:
                return cached
        vocab, count, digest = _scan(path)
        if key_digest is not None and digest != key_digest:
            raise RunError(f"{path} changed while it was being read; run again")
        if use_cache:
            corpus = _write_entry(Path(cache_root), path, vocab, count, digest)
            if corpus is not None:
                return corpus
        return EncodedCorpus(vocab, _encode_in_memory(path, vocab, count, digest), source)
    except OSError as exc:
        raise RunError(f"cannot read corpus file {path}: {exc.strerror or exc}") from exc


def _encode_in_memory(path: Path, vocab: Vocabulary, count: int, digest: str) -> np.ndarray:
    """The ids of ``path`` in an array in memory, refused before it is allocated if it would take more
    than half of the memory available."""
    dtype = dtype_for(len(vocab))
    need = count * dtype.itemsize
    budget = available_memory_bytes() // 2
    if need > budget:
        raise RunError(
            f"corpus {path} needs {need / 2**30:.2f} GiB in memory ({count:,} characters) but only "
            f"{budget / 2**30:.2f} GiB (half the available memory) may be used; make the corpus cache "
            "writable (RNNKIT_CACHE_DIR) so it is memory-mapped instead"
        )
    data = np.empty(count, dtype=dtype)  # (chars,)
    filled = 0

    def sink(ids: np.ndarray) -> None:
        nonlocal filled
        if filled + len(ids) > count:
            raise RunError(f"{path} changed while it was being read; run again")
        data[filled : filled + len(ids)] = ids
        filled += len(ids)

    if _encode_pass(path, vocab, digest, sink) != count:
        raise RunError(f"{path} changed while it was being read; run again")
    return data


# -- the cache ----------------------------------------------------------------------------------------


def _entry_paths(root: Path, digest: str) -> tuple[Path, Path]:
    key = digest[:32]
    return root / f"{key}{IDS_SUFFIX}", root / f"{key}{HEADER_SUFFIX}"


def _read_entry(root: Path, digest: str, source: str) -> EncodedCorpus | None:
    """The cached ids of the text whose digest is ``digest``, checked whole; None when there is no entry
    or it is damaged (a warning says which, and the caller rebuilds it)."""
    ids_path, header_path = _entry_paths(root, digest)
    if not header_path.exists() and not ids_path.exists():
        return None
    try:
        return _open_entry(ids_path, header_path, digest, source)
    except (OSError, ValueError) as exc:
        warnings.warn(
            f"corpus cache entry {header_path.with_suffix('')} is damaged ({exc}); rebuilding it",
            RnnkitWarning,
            stacklevel=2,
        )
        return None


def _open_entry(ids_path: Path, header_path: Path, digest: str, source: str) -> EncodedCorpus:
    """Check an entry field by field and its ids by size and sha256, then map the ids (ValueError: damaged)."""
    if not header_path.is_file():
        raise ValueError("no header")
    if header_path.stat().st_size > MAX_HEADER_BYTES:
        raise ValueError("header too large")
    header = json.loads(header_path.read_bytes())
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT or header.get("sha256") != digest:
        raise ValueError("not this corpus's header")
    chars, vocab_list, data_digest = header.get("chars"), header.get("vocabulary"), header.get("ids_sha256")
    if not (isinstance(chars, int) and not isinstance(chars, bool) and chars > 0):
        raise ValueError("bad length")
    if not (
        isinstance(vocab_list, list)
        and vocab_list
        and all(isinstance(c, str) and len(c) == 1 for c in vocab_list)
        and all(a < b for a, b in zip(vocab_list, vocab_list[1:], strict=False))
    ):
        raise ValueError("bad vocabulary")
    dtype = dtype_for(len(vocab_list))
    if header.get("dtype") != dtype.name or not isinstance(data_digest, str):
        raise ValueError("bad dtype or digest")
    with ids_path.open("rb") as f:  # one open file: checked and then mapped, whatever is renamed meanwhile
        if os.fstat(f.fileno()).st_size != chars * dtype.itemsize:
            raise ValueError(f"ids file is {os.fstat(f.fileno()).st_size:,} bytes, not {chars * dtype.itemsize:,}")
        check = hashlib.sha256()
        while chunk := f.read(CHUNK_BYTES):
            check.update(chunk)
        if check.hexdigest() != data_digest:
            raise ValueError("ids do not match their checksum")
        data = np.memmap(f, dtype=dtype, mode="r", shape=(chars,))  # (chars,)
    return EncodedCorpus(Vocabulary(vocab_list), data, source, ids_path)


def _write_entry(root: Path, path: Path, vocab: Vocabulary, count: int, digest: str) -> EncodedCorpus | None:
    """Encode ``path`` into a new cache entry and map it; None (with a warning) when the cache cannot be
    written, so the caller keeps the ids in memory instead."""
    dtype = dtype_for(len(vocab))
    ids_path, header_path = _entry_paths(root, digest)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(root)
        free = shutil.disk_usage(root).free
        if free < count * dtype.itemsize + (1 << 20):
            raise OSError(f"{free:,} bytes free, {count * dtype.itemsize:,} needed")
        ids_digest = hashlib.sha256()

        def write(f: BinaryIO) -> None:
            def sink(ids: np.ndarray) -> None:
                f.write(ids.tobytes())
                ids_digest.update(ids.tobytes())

            if _encode_pass(path, vocab, digest, sink) != count:
                raise RunError(f"{path} changed while it was being read; run again")

        _atomic_stream(ids_path, write)
    except OSError as exc:
        warnings.warn(
            f"the corpus cache {root} cannot be written ({exc.strerror or exc}); the encoded corpus "
            f"({count * dtype.itemsize / 2**20:,.1f} MiB) is kept in memory instead (RNNKIT_CACHE_DIR "
            "chooses another folder)",
            RnnkitWarning,
            stacklevel=3,
        )
        return None
    header = {
        "format": CACHE_FORMAT,
        "sha256": digest,
        "chars": count,
        "dtype": dtype.name,
        "ids_sha256": ids_digest.hexdigest(),
        "source": str(path),
        "vocabulary": vocab.chars,
    }
    try:
        _atomic_stream(header_path, lambda f: f.write(json.dumps(header, ensure_ascii=False).encode("utf-8")))
    except OSError as exc:
        warnings.warn(
            f"the corpus cache {root} cannot be written ({exc.strerror or exc}); the corpus is encoded again next time",
            RnnkitWarning,
            stacklevel=3,
        )
    with ids_path.open("rb") as f:
        data = np.memmap(f, dtype=dtype, mode="r", shape=(count,))  # (chars,)
    return EncodedCorpus(vocab, data, str(path), ids_path)


def _atomic_stream(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync it and rename it over ``path``: the file
    at ``path`` is always the old one or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _remove_stale_tmp(root: Path) -> None:
    """Remove temporary files that a writer killed mid-way left (untouched for ``STALE_TMP_SECONDS``)."""
    now = time.time()
    for tmp in root.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass
