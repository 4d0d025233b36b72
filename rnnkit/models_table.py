"""The data behind ``rnnkit models``: every registered model with its provider and parameter count."""

from __future__ import annotations

import dataclasses
from typing import Any

from rnnkit.config import ConfigBuilder
from rnnkit.registry import TASKS, default_registry
from rnnkit.spec import parse_override

#: The sizes a parameter count assumes for each task: palindromes (one-hot), the Christie book, Cora.
DEFAULT_DIMS = {
    "sequence-classification": {"input_size": 10, "num_classes": 10},
    "char-lm": {"vocab_size": 88},
    "node-classification": {"num_features": 1433, "num_classes": 7},
}


def list_models(settings: list[str], *, input_size: int = 10, num_classes: int = 10) -> list[dict[str, Any]]:
    """One dict per loadable model; ``settings`` (``key=value``) apply to models that have the key.

    The parameter count is for the model's first task: a palindrome model with ``input_size`` and
    ``num_classes``, a character model with the Christie vocabulary, a graph model on Cora.
    """
    values = dict(parse_override(s) for s in settings)
    registry = default_registry()
    entries = registry.load_all()
    known = {name for e in entries for name in e.model.config_fields()}  # type: ignore[union-attr]
    validator = ConfigBuilder(None, None)
    for key in values:
        if key not in known:
            raise validator.unknown("", key, sorted(known))
    dims = {**DEFAULT_DIMS, "sequence-classification": {"input_size": input_size, "num_classes": num_classes}}
    rows = []
    for entry in entries:
        model = entry.model
        assert model is not None
        fields = model.config_fields()
        applied = {k: v for k, v in values.items() if k in fields}
        config = validator.build(model.config, applied, "")
        task = model.tasks[0] if model.tasks else None
        params = None  # listing never builds a model: only a declared formula gives a count
        if model.count_parameters is not None and task in dims and task in TASKS:
            params = model.parameter_count(config, **dims[task])
        rows.append(
            {
                "name": entry.name,
                "tasks": list(model.tasks),
                "distribution": entry.distribution,
                "version": entry.version,
                "parameters": params,
                "config": dataclasses.asdict(config),
                "description": model.description,
                "status": "ok",
            }
        )
    for failure in registry.failures:
        rows.append(
            {
                "name": failure.name,
                "tasks": [],
                "distribution": failure.distribution,
                "version": "",
                "parameters": None,
                "config": {},
                "description": "",
                "status": f"failed: {failure.error}",
            }
        )
    return rows
