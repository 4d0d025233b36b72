"""Property tests of the parsers a user's text reaches: spec files, dotted overrides, sweep lengths.

Whatever the input, each gives a value or an rnnkit UsageError (SpecError is one) whose message is one
line; never another exception.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rnnkit.cli.common import one_line
from rnnkit.errors import UsageError
from rnnkit.spec import RunSpec, apply_overrides, load_spec, parse_override, resolve_spec
from rnnkit.sweep import parse_lengths
from tests.helpers import tiny_spec

SETTINGS = settings(
    max_examples=int(os.environ.get("RNNKIT_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Real keys (and a few near misses), so that generated specs reach validation, not only "unknown key".
SECTION_KEYS = {
    "task": ["name", "length", "input", "text", "corpus", "seq_len", "val_fraction", "lenght"],
    "model": ["name", "hidden_size", "init", "forget_bias", "layers", "backend", "embedding_size", "hiden_size"],
    "train": [
        "optimizer",
        "lr",
        "batch_size",
        "max_steps",
        "momentum",
        "schedule",
        "max_norm",
        "early_stop",
        "plateau",
        "max_memory_gb",
        "learning_rate",
    ],
}
TOP_KEYS = ["name", "seed", "device", "out_dir", "task", "model", "train", "optimiser"]
NAMES = ["lstm", "rnn", "charlstm", "gcn-dense", "palindrome", "text", "nope", "", "adam", "torch", "onehot"]

_tmp = Path(tempfile.mkdtemp(prefix="rnnkit-properties-"))


def assert_one_line_usage_error(exc: BaseException) -> None:
    assert isinstance(exc, UsageError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)


def outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The call's value, or the UsageError it raised (checked to be one line); anything else fails."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_one_line_usage_error(exc)
        return exc


def load_text(text: str) -> Any:
    path = _tmp / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return outcome(load_spec, path)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(NAMES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8) | st.sampled_from(TOP_KEYS), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def spec_mappings(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=6, unique=True)):
        if key in SECTION_KEYS and draw(st.booleans()):
            fields = draw(st.lists(st.sampled_from(SECTION_KEYS[key]), max_size=5, unique=True))
            spec[key] = {f: draw(st.sampled_from(NAMES) | values) for f in fields}
        else:
            spec[key] = draw(values)
    return spec


yaml_alphabet = st.sampled_from(list("abz09.:-_[]{}&*!|>',\"#%@`?~\n\t ") + ["<<", "!!", "&a", "*a", "\u2028", "é"])
yaml_like = st.lists(yaml_alphabet, max_size=60).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=200), yaml_like))
@example("a: &a [*a]")
@example("a: &a ['x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" * 1)
@example("model: !!python/object:os.system {}")
@example("name: 2024-13-45")
@example("[" * 2000 + "]" * 2000)
@example("seed: " + "9" * 5000)
@example('"a\\nb": 1')
@example("? [a]\n: 1")
@example("model: {name: lstm}\nmodel: {name: rnn}")
def test_any_spec_text_loads_or_is_one_usage_error(text):
    load_text(text)


@SETTINGS
@given(spec_mappings())
def test_any_spec_mapping_loads_or_is_one_usage_error(spec):
    result = load_text(yaml.safe_dump(spec, allow_unicode=True))
    if isinstance(result, RunSpec):  # a valid spec round-trips through its own YAML
        assert outcome(resolve_spec, yaml.safe_load(result.to_yaml())) == result


@st.composite
def override_strings(draw: st.DrawFn) -> str:
    section = draw(st.sampled_from([*SECTION_KEYS, "", "name", "seed", "train.early_stop"]))
    if section in SECTION_KEYS:
        key = f"{section}.{draw(st.sampled_from(SECTION_KEYS[section]))}"
    else:
        key = section or draw(st.text(max_size=10))
    value = draw(
        st.one_of(
            st.text(max_size=20),
            yaml_like,
            st.sampled_from(NAMES),
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.floats().map(repr),
            st.sampled_from(["&x [*x]", "!!python/object:os.system {}", "{a: 1}", "[1, 2]", "1e999", "~", "=="]),
        )
    )
    return draw(st.sampled_from([f"{key}={value}", value, f"{key}", f"{key}=={value}"]))


@SETTINGS
@given(st.lists(override_strings(), max_size=4))
@example(["train.batch_size=1000000000"])
@example(["seed=1180591620717411303424"])
@example(["a=&x [*x]"])
@example(["model.hidden_size=" + "9" * 5000])
def test_any_overrides_resolve_or_are_one_usage_error(overrides):
    for text in overrides:
        parsed = outcome(parse_override, text)
        if not isinstance(parsed, Exception):
            outcome(apply_overrides, tiny_spec(), [parsed])
    result = outcome(resolve_spec, tiny_spec(), overrides)
    if isinstance(result, RunSpec):
        assert result.seed >= 0 and math.isfinite(result.train.lr)


lengths_alphabet = st.sampled_from(list("0123456789-:, ") + ["35", "5-35", "100000000", "\u0663", "x"])


@SETTINGS
@given(st.one_of(st.text(max_size=30), st.lists(lengths_alphabet, max_size=12).map("".join)))
@example("2-100000000")
@example("5-35:0")
@example("35-5")
@example("")
@example(",")
def test_any_lengths_parse_or_are_one_usage_error(text):
    try:
        result = parse_lengths(text)
    except UsageError as exc:  # its message quotes the input as given; the CLI escapes it to one line
        assert_one_line_usage_error(UsageError(one_line(str(exc))))
        return
    if not isinstance(result, Exception):
        assert result == sorted(set(result)) and all(isinstance(n, int) and n >= 2 for n in result)


def test_lengths_with_thousands_of_digits():
    outcome(parse_lengths, "5-" + "9" * 5000)
