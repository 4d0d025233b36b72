"""The data behind ``rnnkit models``: every registered model with its provider and parameter count."""

from __future__ import annotations

import dataclasses
from typing import Any

from rnnkit.config import ConfigBuilder
from rnnkit.kinds import KINDS
from rnnkit.registry import default_registry
from rnnkit.spec import parse_override


def count_dims(*, input_size: int = 10, num_classes: int = 10) -> dict[str, dict[str, int]]:
    """The sizes a parameter count assumes for each model kind: its ``default_dims``, with the
    sequence-classification sizes given (``rnnkit models --input-size/--num-classes``)."""
    dims = {name: dict(kind.default_dims) for name, kind in KINDS.items()}
    dims["sequence-classification"] = {"input_size": input_size, "num_classes": num_classes}
    return dims


def dims_caption(dims: dict[str, dict[str, int]]) -> str:
    """What the parameter counts assume, one phrase per model kind (the caption of ``rnnkit models``)."""
    return "parameters: " + "; ".join(kind.dims_note(dims[name]) for name, kind in KINDS.items())


def list_models(settings: list[str], *, input_size: int = 10, num_classes: int = 10) -> list[dict[str, Any]]:
    """One dict per loadable model; ``settings`` (``key=value``) apply to models that have the key.

    The parameter count is for the model's first model kind, with the sizes of ``count_dims``: a
    palindrome model with ``input_size`` and ``num_classes``, a character model with the Christie
    vocabulary, a graph model on Cora. Each row's ``kinds`` also appears as ``tasks``, its name in
    rnnkit 0.1 (deprecated: it will be removed in the next release).
    """
    values = dict(parse_override(s) for s in settings)
    registry = default_registry()
    entries = registry.load_all()
    known = {name for e in entries for name in e.model.config_fields()}  # type: ignore[union-attr]
    validator = ConfigBuilder(None, None)
    for key in values:
        if key not in known:
            raise validator.unknown("", key, sorted(known))
    dims = count_dims(input_size=input_size, num_classes=num_classes)
    rows = []
    for entry in entries:
        model = entry.model
        assert model is not None
        fields = model.config_fields()
        applied = {k: v for k, v in values.items() if k in fields}
        config = validator.build(model.config, applied, "")
        kind = model.kinds[0] if model.kinds else None
        params = None  # listing never builds a model: only a declared formula gives a count
        if model.count_parameters is not None and kind in dims:
            params = model.parameter_count(config, **dims[kind])
        rows.append(
            {
                "name": entry.name,
                "kinds": list(model.kinds),
                "tasks": list(model.kinds),  # deprecated name of "kinds"
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
                "kinds": [],
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
