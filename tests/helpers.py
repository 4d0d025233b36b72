"""Helpers that more than one test module uses: where the shared reference data lies (``SHARED_DATA``),
a small English corpus (``SMALL_TEXT``, ``small_text``), a tiny palindrome run spec with dotted
overrides (``tiny_spec``), and the command line driven in-process (``run``, ``assert_one_line_error``).

Test modules import these from here, never from one another or from ``conftest.py`` (which holds only
fixtures)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from rnnkit.cli import app

#: ../shared/data beside the checkout (tests and CI read the reference data from there).
SHARED_DATA = Path(os.environ.get("RNNKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")

SMALL_TEXT = (
    "It was a bright cold day in April, and the clocks were striking thirteen. "
    "Poirot said that the little grey cells would find the answer. "
    "The quick brown fox jumps over the lazy dog; the lazy dog sleeps on. "
)


def tiny_spec(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run spec dict for a palindrome run that finishes in well under a second.

    ``overrides`` maps dotted keys to values, at any depth: ``{"train.max_steps": 5, "seed": 3,
    "train.early_stop.threshold": 0.3}`` sets those keys and leaves the rest of each section as it is.
    """
    spec: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "task": {"name": "palindrome", "length": 5},
        "model": {"name": "lstm", "hidden_size": 16},
        "train": {"batch_size": 32, "max_steps": 30, "log_every": 10, "eval_batches": 2, "lr": 0.01},
    }
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TypeError(f"tiny_spec: {key!r} goes below {part!r}, which is not a mapping")
        node[leaf] = value
    return spec


def small_text(tmp_path: Path, repeat: int = 30) -> Path:
    """A small English corpus file (about 6,000 characters) for language-model tests."""
    path = tmp_path / "small.txt"
    path.write_text(SMALL_TEXT * repeat, encoding="utf-8")
    return path


_runner = CliRunner()


def run(*args: str):
    """``rnnkit ARGS...`` in this process; the typer ``Result`` (exit_code, output, stdout, stderr)."""
    return _runner.invoke(app, list(args))


def assert_one_line_error(result, code: int, *words: str) -> None:
    """The command exited with ``code`` and a single ``error: ...`` line on stderr naming all ``words``."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0], (word, lines[0])
