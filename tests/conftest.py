"""Shared fixtures: CPU-only, single-threaded torch so tests are quick and stable. Helpers that test
modules share (tiny specs, a small corpus, the in-process command line) live in tests/helpers.py."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
