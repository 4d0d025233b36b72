"""Model registry: every model, built-in or plugin, is found through the ``rnnkit.models`` entry points.

An entry point names a ``ModelDef`` (``"rnn = rnnkit.models.rnn:MODEL"``). rnnkit's own models are
declared in its ``pyproject.toml`` exactly like a third-party plugin's, so the plugin path is the only
path. Entry points are listed without importing anything; a model's module is imported the first time
it is asked for. A plugin that fails to import is recorded in ``failures`` and skipped: everything else
keeps working. This module imports torch only inside ``ModelDef.parameter_count`` (a build on the meta
device).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from rnnkit.errors import KindNotSupportedError, ModelNotFoundError, RnnkitError, UsageError
from rnnkit.kinds import KINDS

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


@dataclass(frozen=True, init=False)
class ModelDef:
    """What a model package declares: its name, model kinds, typed config and how to build it.

    ``kinds`` are names of ``rnnkit.kinds.KINDS``; ``config`` is a dataclass whose fields (with types
    and defaults) are the model's hyperparameters; ``build(config, **dims)`` returns a
    ``torch.nn.Module`` (``dims``: the kind's ``dims``); ``count_parameters`` (optional) gives the
    trainable parameter count without building the model; ``memory_bytes`` (optional) the memory a
    graph model needs for a graph of a given number of nodes.

    ``tasks=`` (rnnkit 0.1's name for ``kinds``) is still accepted, with a DeprecationWarning.
    """

    name: str
    kinds: tuple[str, ...]
    config: type
    build: Callable[..., Any]
    description: str = ""
    count_parameters: Callable[..., int] | None = None
    #: node-classification models whose memory grows with the graph: bytes needed for ``num_nodes``
    #: nodes, checked against a budget before the model is built.
    memory_bytes: Callable[[int], int] | None = None

    def __init__(
        self,
        name: str,
        kinds: tuple[str, ...] | None = None,
        config: type | None = None,
        build: Callable[..., Any] | None = None,
        description: str = "",
        count_parameters: Callable[..., int] | None = None,
        memory_bytes: Callable[[int], int] | None = None,
        *,
        tasks: tuple[str, ...] | None = None,
    ) -> None:
        if tasks is not None:
            if kinds is not None:
                raise TypeError(f"model '{name}': pass kinds= only (tasks= is its deprecated name)")
            warnings.warn(
                f"model '{name}': ModelDef(tasks=...) is deprecated, pass kinds=... instead "
                "(tasks= will be removed in a future release)",
                DeprecationWarning,
                stacklevel=2,
            )
            kinds = tasks
        missing = [arg for arg, value in (("kinds", kinds), ("config", config), ("build", build)) if value is None]
        if missing:
            raise TypeError(f"ModelDef() missing required argument(s): {', '.join(map(repr, missing))}")
        values = {
            "name": name,
            "kinds": kinds,
            "config": config,
            "build": build,
            "description": description,
            "count_parameters": count_parameters,
            "memory_bytes": memory_bytes,
        }
        for attr, value in values.items():
            object.__setattr__(self, attr, value)  # frozen

    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        """The model's config with ``values`` applied over the defaults (validated by the spec layer)."""
        return self.config(**(values or {}))

    def config_fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config)}

    def parameter_count(self, config: Any, **dims: int) -> int:
        """Trainable parameters for ``config``; builds the model on the meta device if no formula."""
        if self.count_parameters is not None:
            return int(self.count_parameters(config, **dims))
        import torch

        with torch.device("meta"):
            model = self.build(config, **dims)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_definition(model: ModelDef) -> None:
    """The parts of the contract that can be checked without building: raises TypeError/ValueError."""
    if not model.kinds or any(k not in KINDS for k in model.kinds):
        raise ValueError(f"kinds {list(model.kinds)} must be one or more of {', '.join(KINDS)}")
    if not dataclasses.is_dataclass(model.config) or not isinstance(model.config, type):
        raise TypeError("config must be a dataclass type")
    if not callable(model.build):
        raise TypeError("build must be callable")
    config = model.make_config()  # every field needs a default
    if model.count_parameters is not None:
        for kind in model.kinds:
            model.parameter_count(config, **dict.fromkeys(KINDS[kind].dims, 3))


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

    def get(self, name: str, kind: str | None = None) -> ModelDef:
        """The model called ``name``; with ``kind``, also check the model declares that model kind."""
        entry = self.entries.get(name)
        model = self._load(entry) if entry is not None else None
        if model is None:
            raise ModelNotFoundError(self._unknown_message(name))
        if kind is not None and kind not in model.kinds:
            raise KindNotSupportedError(f"model '{name}' is not a {kind} model (it is: {', '.join(model.kinds)})")
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


def get_model(name: str, kind: str | None = None) -> ModelDef:
    """The registered model ``name``; with ``kind``, KindNotSupportedError unless it declares it."""
    return default_registry().get(name, kind)


def create_model(name: str, kind: str, config: dict[str, Any] | None = None, **dims: int) -> Any:
    """Build the registered model ``name`` as a ``kind`` model with ``config`` over its defaults;
    ``dims`` are the kind's build arguments (``rnnkit.kinds.KINDS[kind].dims``)."""
    model_def = get_model(name, kind)
    try:
        cfg = model_def.make_config(config)
    except TypeError as exc:
        raise RnnkitError(f"model '{name}': {exc}") from exc
    return model_def.build(cfg, **dims)


def list_models() -> list[str]:
    """Names of every registered model, built-in and plugin (``rnnkit.list_models()``)."""
    return default_registry().names()
