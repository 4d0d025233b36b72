"""Typed configs from plain data: a dataclass built from a mapping, every key, type and bound checked.

``ConfigBuilder`` is what run specs, sweep specs, GCN specs and checkpoint metadata use to turn a
mapping (from YAML, the command line or a file) into a config dataclass: unknown keys are listed with
the closest valid one, values must have the declared type, and numeric fields may declare bounds
(``metadata={"gt": 0}``). Errors name the dotted key and, where known, the line of the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

from rnnkit.errors import SpecError


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so that an error is one line."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigBuilder:
    def __init__(
        self, lines: dict[str, int] | None, source: str | None, overridden: set[str] | frozenset[str] = frozenset()
    ) -> None:
        self.lines = lines or {}
        self.source = source
        self.overridden = overridden

    def error(self, key: str, message: str) -> SpecError:
        if any(key == o or key.startswith(o + ".") for o in self.overridden):
            return SpecError(one_line(f"{clip(key)}: {message} (command-line override)"))
        line = self.lines.get(key)
        where = f" ({self.source} line {line})" if line and self.source else ""
        return SpecError(one_line(f"{clip(key)}: {message}{where}"))

    def unknown(self, prefix: str, key: str, valid: list[str]) -> SpecError:
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return self.error(f"{prefix}{key}", f"unknown key.{hint} Valid keys: {', '.join(valid)}")

    def build(self, cls: type, data: Any, prefix: str, skip: tuple[str, ...] = ()) -> Any:
        """Instantiate dataclass ``cls`` from ``data``, checking keys, types and bounds."""
        section = prefix.rstrip(".") or "spec"
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(section, f"must be a mapping, got {describe(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        valid = sorted(set(fields) | set(skip))
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in skip:
                continue
            if key not in fields:
                raise self.unknown(prefix, str(key), valid)
            kwargs[key] = self.value(hints[key], value, f"{prefix}{key}", fields[key].metadata)
        for name, f in fields.items():
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default and name not in kwargs:
                raise self.error(f"{prefix}{name}", "is required")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # a config's own __post_init__ check (plugins)
            raise self.error(section, clip(str(exc))) from exc

    def value(self, tp: Any, value: Any, key: str, meta: Any = None) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, key + ".")
        if origin is Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise self.error(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
            return value
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            first_error = None
            for arg in (a for a in args if a is not type(None)):
                try:
                    return self.value(arg, value, key, meta)
                except SpecError as exc:
                    first_error = first_error or exc
            raise first_error or self.error(key, f"has the wrong type: {describe(value)}")
        if origin in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise self.error(key, f"must be a list, got {describe(value)}")
            (item_tp, *_) = typing.get_args(tp) or (Any,)
            items = [self.value(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if tp is dict or origin is dict:
            if not isinstance(value, dict):
                raise self.error(key, f"must be a mapping, got {describe(value)}")
            return value
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(key, f"must be true or false, got {describe(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(key, f"must be an integer, got {describe(value)}")
            return self.bounds(key, value, meta)
        if tp is float:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise self.error(key, f"must be a number, got {describe(value)}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(key, f"must be a number, got {describe(value)}")
            if not math.isfinite(value):
                raise self.error(key, f"must be a finite number, got {value}")
            return self.bounds(key, float(value), meta)
        if tp is str:
            if not isinstance(value, str):
                raise self.error(key, f"must be a string, got {describe(value)}")
            if "\x00" in value:
                raise self.error(key, "must not contain a NUL character")
            return value
        return value

    def bounds(self, key: str, value: float, meta: Any) -> Any:
        meta = meta or {}
        checks = (
            ("gt", lambda v, b: v > b, "greater than"),
            ("ge", lambda v, b: v >= b, "at least"),
            ("lt", lambda v, b: v < b, "less than"),
            ("le", lambda v, b: v <= b, "at most"),
        )
        for name, ok, words in checks:
            if name in meta and not ok(value, meta[name]):
                raise self.error(key, f"must be {words} {_number(meta[name])}, got {_number(value)}")
        return value


def _number(value: float) -> str:
    """A bound or a value for a message: large integers with separators, huge ones by their size."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 128:
            return f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'thousands of'} digits"
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"int ({_number(value)})"
    return f"{type(value).__name__} {clip(repr(value), 80)}"
