"""rnnkit: recurrent and graph networks from their equations, trained and compared from one CLI.

The Python API (``rnnkit.train``, ``rnnkit.load``, ``rnnkit.compare_gcn``, ``rnnkit.Run``) lives in
``rnnkit.api`` and is loaded on first use, so ``import rnnkit`` (and ``rnnkit --help``) stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnkit.version import __version__

#: The public names, and the module each comes from (loaded when first asked for).
_API = {
    "train": "rnnkit.api",
    "load": "rnnkit.api",
    "compare_gcn": "rnnkit.api",
    "Run": "rnnkit.api",
    "create_model": "rnnkit.registry",
    "list_models": "rnnkit.registry",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """PEP 562: the API's names, imported when first used."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
