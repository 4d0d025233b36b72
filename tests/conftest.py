"""Shared fixtures: tiny specs and CPU-only, single-threaded torch so tests are quick and stable."""

from __future__ import annotations

import pytest


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
