"""Shared fixtures: tiny specs and CPU-only, single-threaded torch so tests are quick and stable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ../shared/data beside the checkout (tests and CI read the reference data from there).
SHARED_DATA = Path(os.environ.get("RNNKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")

SMALL_TEXT = (
    "It was a bright cold day in April, and the clocks were striking thirteen. "
    "Poirot said that the little grey cells would find the answer. "
    "The quick brown fox jumps over the lazy dog; the lazy dog sleeps on. "
)


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_spec(**overrides):
    """A run spec dict for a palindrome run that finishes in well under a second."""
    spec = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "task": {"name": "palindrome", "length": 5},
        "model": {"name": "lstm", "hidden_size": 16},
        "train": {"batch_size": 32, "max_steps": 30, "log_every": 10, "eval_batches": 2, "lr": 0.01},
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            spec.setdefault(section, {})[sub] = value
        else:
            spec[section] = value
    return spec


def small_text(tmp_path: Path, repeat: int = 30) -> Path:
    """A small English corpus file (about 6,000 characters) for language-model tests."""
    path = tmp_path / "small.txt"
    path.write_text(SMALL_TEXT * repeat, encoding="utf-8")
    return path
