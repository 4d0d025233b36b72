"""rnnkit: recurrent and graph networks from their equations, trained and compared from one CLI."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create_model(name: str, task: str, config: dict[str, Any] | None = None, **task_dims: int) -> Any:
    """Build a registered model by name (see ``rnnkit.registry.create_model``)."""
    from rnnkit.registry import create_model as _create

    return _create(name, task, config, **task_dims)


def list_models() -> list[str]:
    """Names of every registered model, built-in and plugin."""
    from rnnkit.registry import default_registry

    return default_registry().names()
