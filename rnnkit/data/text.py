"""Character corpora: load a UTF-8 text (or the named ``christie`` corpus) and build its vocabulary.
The training windows and the validation stream are the text task's (``rnnkit.data.text_task``); a
training corpus is streamed, encoded and cached by ``rnnkit.data.corpus`` with the checks defined here.
rnnkit's cache folder (``cache_dir``) is ``$RNNKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnkit``, else
``~/.cache/rnnkit``.

The named corpus ``christie`` is Project Gutenberg ebook #863, Agatha Christie's *The Mysterious
Affair at Styles*. A local copy is looked for first (``data_dir`` or ``$RNNKIT_DATA_DIR``, as
``christie_styles.txt`` or ``books/christie_styles.txt``), then in the user cache; otherwise it is
downloaded once into the cache. Gutenberg revises its files, so the download is checked by content
(title, author, first chapter) rather than by one byte hash, and its header and licence are cut off.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rnnkit.checkpoint import atomic_write_text
from rnnkit.errors import RunError, UsageError

CHRISTIE_FILE = "christie_styles.txt"
CHRISTIE_URLS = (
    "https://www.gutenberg.org/cache/epub/863/pg863.txt",
    "https://www.gutenberg.org/files/863/863-0.txt",
)
CORPORA = ("christie",)
MIN_CORPUS_CHARS = 100


@dataclass
class TextConfig:
    """Where the text comes from and how it is cut into training windows."""

    corpus: str = "christie"  # a named corpus; ignored when `text` is given
    text: str = ""  # path to any UTF-8 text file
    data_dir: str = ""  # where named corpora are looked for first (else $RNNKIT_DATA_DIR)
    # characters of back-propagation through time per window (30 by default; 10,000 is far past any use)
    seq_len: int = field(default=30, metadata={"gt": 0, "le": 10_000})
    val_fraction: float = field(default=0.1, metadata={"gt": 0, "lt": 1})


def clean_text(text: str) -> str:
    """Drop a byte-order mark and normalise CRLF / CR line ends to LF."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def check_text_path(path: str | Path, what: str = "corpus file") -> Path:
    """``path`` (user-expanded) if it is a regular file; one clear RunError if it is missing or is not one."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RunError(f"{what} {path} is a directory")
    if not path.exists():
        raise RunError(f"{what} not found: {path}")
    if not path.is_file():
        raise RunError(f"{what} {path} is not a regular file")
    return path


def read_text_file(path: str | Path, what: str = "corpus file", max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file, with one clear error for a missing, binary or undecodable file.

    With ``max_bytes``, a larger file is refused (UsageError) before it is read into memory. (A training
    corpus is streamed in chunks instead: ``rnnkit.data.corpus``.)"""
    path = check_text_path(path, what)
    try:
        if max_bytes is None:
            data = path.read_bytes()
        else:
            size = path.stat().st_size
            with path.open("rb") as f:
                data = f.read(max_bytes + 1) if size <= max_bytes else b""
            if size > max_bytes or len(data) > max_bytes:
                raise UsageError(f"{what} {path} is {max(size, len(data)):,} bytes, over the {max_bytes:,} allowed")
    except OSError as exc:
        raise RunError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if b"\x00" in data[:65536]:
        raise RunError(f"{path} looks like a binary file, not UTF-8 text")
    try:
        return clean_text(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's START and END markers (the whole text if none)."""
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", text, re.MULTILINE | re.IGNORECASE)
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", text, re.MULTILINE | re.IGNORECASE)
    body = text[start.end() if start else 0 : end.start() if end else len(text)]
    body = re.sub(r"^\s*Produced by[^\n]*\n", "", body.lstrip("\n"), count=1)
    body = re.sub(r"\n\s*End of (the )?Project Gutenberg[^\n]*\s*$", "\n", body, flags=re.IGNORECASE)
    return body.strip("\n") + "\n"


def is_christie(text: str) -> bool:
    """Whether ``text`` is The Mysterious Affair at Styles (checked by content, not by bytes)."""
    head = text[:20_000].lower()
    return (
        "mysterious affair at styles" in head
        and "christie" in head
        and "i go to styles" in head
        and text.count("Poirot") > 300
    )


def cache_dir() -> Path:
    """rnnkit's cache folder: ``$RNNKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit``."""
    if os.environ.get("RNNKIT_CACHE_DIR"):
        return Path(os.environ["RNNKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def christie_text(data_dir: str | Path | None = None) -> str:
    """The Christie corpus, header and licence stripped: local copy, cache, or a one-time download."""
    roots = [Path(d).expanduser() for d in (data_dir, os.environ.get("RNNKIT_DATA_DIR")) if d]
    candidates = [root / sub for root in roots for sub in (CHRISTIE_FILE, Path("books") / CHRISTIE_FILE)]
    candidates.append(cache_dir() / CHRISTIE_FILE)
    for path in candidates:
        if path.is_file():
            text = read_text_file(path)
            if not is_christie(text):
                raise RunError(f"{path} is not The Mysterious Affair at Styles (Project Gutenberg #863)")
            return strip_gutenberg(text)
    return strip_gutenberg(_download_christie(cache_dir() / CHRISTIE_FILE))


def _download_christie(target: Path) -> str:
    errors = []
    for url in CHRISTIE_URLS:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - fixed https URLs
                text = clean_text(response.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        if not is_christie(text):
            errors.append(f"{url}: not The Mysterious Affair at Styles")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
        return text
    raise RunError(
        "the christie corpus is not on this machine and could not be downloaded "
        f"({errors[0] if errors else 'no URL'}); pass a text file with --text PATH, or a directory "
        f"holding {CHRISTIE_FILE} with --data-dir DIR (or RNNKIT_DATA_DIR)"
    )


def unknown_corpus(name: str) -> UsageError:
    return UsageError(f"unknown corpus '{name}'. Available: {', '.join(CORPORA)} (or give task.text=PATH)")


def check_corpus_length(source: str, chars: int, config: TextConfig) -> None:
    """RunError unless ``chars`` characters leave a window of ``seq_len`` in both the training part and
    the validation part (and at least ``MIN_CORPUS_CHARS``)."""
    needed = max(MIN_CORPUS_CHARS, int((config.seq_len + 1) / min(config.val_fraction, 1 - config.val_fraction)) + 1)
    if chars < needed:
        raise RunError(
            f"corpus {source} has {chars} characters; at least {needed} are needed for "
            f"windows of {config.seq_len} in both the training part and the {config.val_fraction:.0%} validation part"
        )


def load_corpus(config: TextConfig) -> str:
    """The text a run trains on as one string, checked to be long enough to cut windows from. (The text
    task reads it encoded and streamed instead: ``rnnkit.data.corpus.load_encoded``.)"""
    if config.text:
        text = read_text_file(config.text)
        source = config.text
    elif config.corpus == "christie":
        text = christie_text(config.data_dir or None)
        source = "christie"
    else:
        raise unknown_corpus(config.corpus)
    if not text.strip():
        raise RunError(f"corpus {source} is empty")
    check_corpus_length(source, len(text), config)
    return text


class Vocabulary:
    """Characters in a stable (sorted) order; saved as a JSON list with every checkpoint."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)
