"""The example specs shipped inside the package (``rnnkit/examples/*.yaml``): list, read and copy them.

A pip-installed rnnkit has no source checkout around it; these files are what it trains from
(``rnnkit examples copy christie .``, or ``rnnkit train --text book.txt``, which uses ``christie``).
Each file's first comment line is its one-line description. In a source checkout the top-level
``examples/`` folder is a link to the same files.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rnnkit.checkpoint import atomic_write_text, fsync_dir
from rnnkit.errors import RunError, UsageError

#: The shipped example ``rnnkit train --text FILE`` trains with when no spec is given.
TEXT_EXAMPLE = "christie"


@dataclass(frozen=True)
class Example:
    """One shipped example: its name (the file name without ``.yaml``), description and file."""

    name: str
    description: str
    path: Path
    command: str = "train"  # the rnnkit command its comments run it with: train, sweep or gcn

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def examples_dir() -> Path:
    """The folder of the shipped example specs (inside the installed package)."""
    return Path(str(resources.files("rnnkit") / "examples"))


def _read(path: Path) -> Example:
    """An example from its file: the first sentence of its opening comment describes it, the first
    ``rnnkit COMMAND`` in its comments says which command it is for."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    opening = []
    for line in lines:
        text = line.lstrip("#").strip()
        if not line.startswith("#") or not text or text.startswith("rnnkit "):
            break
        opening.append(text)
    description = re.split(r"(?<=\.)\s", " ".join(opening), maxsplit=1)[0]
    commands = [m.group(1) for c in comments if (m := re.match(r"rnnkit (train|sweep|gcn)\b", c))]
    return Example(path.stem, description, path, commands[0] if commands else "train")


def list_examples() -> list[Example]:
    """Every shipped example, by name."""
    folder = examples_dir()
    if not folder.is_dir():
        return []
    return [_read(p) for p in sorted(folder.glob("*.yaml"))]


def get_example(name: str) -> Example:
    """The shipped example ``name`` (``christie`` or ``christie.yaml``); UsageError naming the others."""
    examples = {e.name: e for e in list_examples()}
    key = name.removesuffix(".yaml")
    if key in examples:
        return examples[key]
    close = difflib.get_close_matches(key, list(examples), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"no shipped example '{name}'.{hint} Examples: {', '.join(examples) or 'none'}")


def copy_example(name: str, dest: str | Path, force: bool = False) -> Path:
    """Write the shipped example ``name`` to ``dest`` (a folder: ``dest/<name>.yaml``; else the file
    itself) and return the path written. An existing file is refused (UsageError) unless ``force``;
    the file appears whole or not at all."""
    example = get_example(name)
    dest = Path(dest).expanduser()
    target = dest / example.path.name if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise RunError(f"cannot write {target}: {target.parent} is not a directory")
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a directory")
    text = example.text()
    if force:
        atomic_write_text(target, text)
        return target
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} already exists (give --force to overwrite it)")
    _write_new(target, text)
    return target


def _write_new(target: Path, text: str) -> None:
    """Create ``target`` with ``text`` through a temporary file and a hard link, which fails rather than
    replace a file created in the meantime."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise UsageError(f"{target} already exists (give --force to overwrite it)") from None
        except OSError:  # a filesystem without hard links: exclusive creation instead
            with open(target, "x", encoding="utf-8") as f:
                f.write(text)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(target)
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(target.parent)
