"""Model registry: every model, built-in or plugin, is found through the ``rnnkit.models`` entry points.

An entry point names a ``ModelDef`` (``"rnn = rnnkit.models.rnn:MODEL"``). rnnkit's own models are
declared in its ``pyproject.toml`` exactly like a third-party plugin's, so the plugin path is the only
path. Entry points are listed without importing anything; a model's module is imported the first time
it is asked for. A plugin that fails to import is recorded in ``failures`` and skipped: everything else
keeps working. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from rnnkit.errors import ModelNotFoundError, RnnkitError, TaskNotSupportedError, UsageError

ENTRY_POINT_GROUP = "rnnkit.models"
BUILTIN_DISTRIBUTION = "rnnkit"
#: The environment variables that switch plugin handling, and the values they accept (any case).
ENV_FLAGS = ("RNNKIT_DISABLE_PLUGINS", "RNNKIT_RAISE_PLUGIN_ERRORS")
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


def _env_flag(name: str) -> bool:
    """Whether the yes/no environment variable ``name`` is set; any other value is a UsageError."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    raise UsageError(
        f"{name}={shown!r} is not understood: use 1, true or yes to turn it on; 0, false, no or nothing for off"
    )


class PluginError(RnnkitError):
    """A plugin failed to load and RNNKIT_RAISE_PLUGIN_ERRORS asks for that to be an error."""


#: Tasks a model can declare, and the keyword arguments ``build`` receives for each.
TASKS: dict[str, tuple[str, ...]] = {
    "sequence-classification": ("input_size", "num_classes"),
    "char-lm": ("vocab_size",),
    "node-classification": ("num_features", "num_classes"),
}


@dataclass(frozen=True)
class ModelDef:
    """What a model package declares: its name, tasks, typed config and how to build it.

    ``config`` is a dataclass whose fields (with types and defaults) are the model's hyperparameters;
    ``build(config, **task_dims)`` returns a ``torch.nn.Module``; ``count_parameters`` (optional)
    gives the trainable parameter count without building the model; ``memory_bytes`` (optional) the
    memory a graph model needs for a graph of a given number of nodes.
    """

    name: str
    tasks: tuple[str, ...]
    config: type
    build: Callable[..., Any]
    description: str = ""
    count_parameters: Callable[..., int] | None = None
    #: node-classification models whose memory grows with the graph: bytes needed for ``num_nodes``
    #: nodes, checked against a budget before the model is built.
    memory_bytes: Callable[[int], int] | None = None

    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        """The model's config with ``values`` applied over the defaults (validated by the spec layer)."""
        return self.config(**(values or {}))

    def config_fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config)}

    def parameter_count(self, config: Any, **task_dims: int) -> int:
        """Trainable parameters for ``config``; builds the model on the meta device if no formula."""
        if self.count_parameters is not None:
            return int(self.count_parameters(config, **task_dims))
        import torch

        with torch.device("meta"):
            model = self.build(config, **task_dims)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_definition(model: ModelDef) -> None:
    """The parts of the contract that can be checked without building: raises TypeError/ValueError."""
    if not model.tasks or any(t not in TASKS for t in model.tasks):
        raise ValueError(f"tasks {list(model.tasks)} must be one or more of {', '.join(TASKS)}")
    if not dataclasses.is_dataclass(model.config) or not isinstance(model.config, type):
        raise TypeError("config must be a dataclass type")
    if not callable(model.build):
        raise TypeError("build must be callable")
    config = model.make_config()  # every field needs a default
    if model.count_parameters is not None:
        for task in model.tasks:
            model.parameter_count(config, **dict.fromkeys(TASKS[task], 3))


@dataclass
class ModelEntry:
    """One registered name: where it comes from, and its definition once loaded."""

    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None = None
    model: ModelDef | None = None


@dataclass
class PluginFailure:
    name: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"plugin model '{self.name}' from {self.distribution} failed to load: {self.error}"


@dataclass
class Registry:
    """Registered models by name, loaded lazily, with the plugins that failed to load."""

    entries: dict[str, ModelEntry] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Every ``rnnkit.models`` entry point; rnnkit's own first, so a plugin cannot replace a built-in.

        ``RNNKIT_DISABLE_PLUGINS=1`` keeps the built-ins only. Both flags are checked here, so a value
        that is neither yes nor no is an error even when no plugin fails.
        """
        flags = {name: _env_flag(name) for name in ENV_FLAGS}
        disable = flags["RNNKIT_DISABLE_PLUGINS"]
        registry = cls()
        found = []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            found.append((dist_name != BUILTIN_DISTRIBUTION, ep, dist_name, dist.version if dist is not None else "?"))
        for is_plugin, ep, dist_name, version in sorted(found, key=lambda item: item[0]):
            if is_plugin and disable:
                continue
            if ep.name in registry.entries:
                owner = registry.entries[ep.name].distribution
                builtin = owner == BUILTIN_DISTRIBUTION
                why = "a built-in model has that name" if builtin else f"{owner} registered it first"
                registry._fail(PluginFailure(ep.name, dist_name, f"cannot register '{ep.name}': {why}; ignored"))
                continue
            registry.entries[ep.name] = ModelEntry(ep.name, ep.value, dist_name, version, ep)
        return registry

    def _fail(self, failure: PluginFailure, exc: BaseException | None = None) -> None:
        """Record a plugin failure, or raise it under RNNKIT_RAISE_PLUGIN_ERRORS=1."""
        if _env_flag("RNNKIT_RAISE_PLUGIN_ERRORS"):
            raise PluginError(str(failure)) from exc
        self.failures.append(failure)

    def add(self, model: ModelDef, distribution: str = "local", version: str = "") -> None:
        """Register a definition directly (tests, interactive use)."""
        self.entries[model.name] = ModelEntry(model.name, "", distribution, version, model=model)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def _load(self, entry: ModelEntry) -> ModelDef | None:
        if entry.model is None and entry.entry_point is not None:
            try:
                loaded = entry.entry_point.load()
                if not isinstance(loaded, ModelDef):
                    raise TypeError(f"{entry.value} is a {type(loaded).__name__}, not a ModelDef")
                if loaded.name != entry.name:
                    raise ValueError(f"entry point '{entry.name}' names a model called '{loaded.name}'")
                check_definition(loaded)
                entry.model = loaded
            except Exception as exc:  # a broken plugin must not take the others down
                entry.entry_point = None
                self._fail(PluginFailure(entry.name, entry.distribution, f"{type(exc).__name__}: {exc}"), exc)
        return entry.model

    def load_all(self) -> list[ModelEntry]:
        """Every entry whose model loaded; failures are recorded, not raised."""
        return [e for e in (self.entries[n] for n in self.names()) if self._load(e) is not None]

    def get(self, name: str, task: str | None = None) -> ModelDef:
        """The model called ``name``; with ``task``, also check the model declares it."""
        entry = self.entries.get(name)
        model = self._load(entry) if entry is not None else None
        if model is None:
            raise ModelNotFoundError(self._unknown_message(name))
        if task is not None and task not in model.tasks:
            raise TaskNotSupportedError(
                f"model '{name}' does not support task '{task}' (it supports: {', '.join(model.tasks)})"
            )
        return model

    def _unknown_message(self, name: str) -> str:
        failed = {f.name: f for f in self.failures}
        if name in failed:
            return f"model '{name}' is registered but failed to load: {failed[name].error}"
        available = [n for n in self.names() if n not in failed]
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"unknown model '{name}'.{hint} Available: {', '.join(available) or 'none'}"


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry read from the installed entry points (built once)."""
    global _default
    if _default is None:
        _default = Registry.from_entry_points()
    return _default


def get_model(name: str, task: str | None = None) -> ModelDef:
    return default_registry().get(name, task)


def create_model(name: str, task: str, config: dict[str, Any] | None = None, **task_dims: int) -> Any:
    """Build the registered model ``name`` for ``task`` with ``config`` over its defaults."""
    model_def = get_model(name, task)
    try:
        cfg = model_def.make_config(config)
    except TypeError as exc:
        raise RnnkitError(f"model '{name}': {exc}") from exc
    return model_def.build(cfg, **task_dims)
