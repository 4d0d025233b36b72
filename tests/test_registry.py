from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import pytest

from rnnkit.errors import ModelNotFoundError, TaskNotSupportedError
from rnnkit.registry import ModelDef, Registry, create_model, default_registry


def test_builtins_come_from_entry_points():
    registry = Registry.from_entry_points()
    assert {"rnn", "lstm"} <= set(registry.names())
    for name in ("rnn", "lstm"):
        entry = registry.entries[name]
        assert entry.distribution == "rnnkit" and entry.entry_point is not None
        assert "sequence-classification" in registry.get(name).tasks


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(ModelNotFoundError) as info:
        default_registry().get("lsmt")
    assert "Did you mean 'lstm'" in str(info.value) and "rnn" in str(info.value)


def test_task_support_is_checked():
    with pytest.raises(TaskNotSupportedError, match="does not support task 'node-classification'"):
        default_registry().get("rnn", "node-classification")


def test_a_broken_plugin_is_isolated():
    registry = Registry.from_entry_points()
    broken = metadata.EntryPoint("broken", "rnnkit_no_such_module:MODEL", "rnnkit.models")
    from rnnkit.registry import ModelEntry

    registry.entries["broken"] = ModelEntry("broken", broken.value, "rnnkit-broken", "0.0", broken)
    loaded = [e.name for e in registry.load_all()]
    assert "broken" not in loaded and {"rnn", "lstm"} <= set(loaded)
    assert len(registry.failures) == 1
    assert "rnnkit-broken" in str(registry.failures[0]) and "ModuleNotFoundError" in str(registry.failures[0])
    with pytest.raises(ModelNotFoundError, match="failed to load"):
        registry.get("broken")


def test_entry_point_must_name_a_model_def():
    registry = Registry()
    wrong = metadata.EntryPoint("notamodel", "rnnkit.errors:RnnkitError", "rnnkit.models")
    from rnnkit.registry import ModelEntry

    registry.entries["notamodel"] = ModelEntry("notamodel", wrong.value, "x", "1", wrong)
    assert registry.load_all() == []
    assert "not a ModelDef" in registry.failures[0].error


def test_parameter_count_without_a_formula_uses_meta_device():
    from rnnkit.models.lstm import LSTMConfig, build

    model = ModelDef("meta-lstm", ("sequence-classification",), LSTMConfig, build)
    assert model.parameter_count(LSTMConfig(hidden_size=8), input_size=3, num_classes=2) == 4 * 8 * 12 + 2 * 9


def test_create_model():
    model = create_model("rnn", "sequence-classification", {"hidden_size": 4}, input_size=10, num_classes=10)
    assert model.W_hh.shape == (4, 4)


@pytest.mark.parametrize("name", __import__("rnnkit.testing", fromlist=["x"]).registered_models())
def test_every_registered_model_keeps_the_contract(name):
    from rnnkit.testing import check_model

    assert check_model(name)


def test_check_model_catches_a_wrong_parameter_count():
    from rnnkit.models.rnn import MODEL as RNN
    from rnnkit.testing import check_model

    registry = Registry()
    registry.add(ModelDef("bad-count", RNN.tasks, RNN.config, RNN.build, count_parameters=lambda c, **d: 1))
    with pytest.raises(AssertionError, match="count_parameters says 1"):
        check_model("bad-count", registry)


@dataclass
class _NoDefault:
    hidden_size: int


BAD_TASK = ModelDef("bad-task", ("telepathy",), __import__("rnnkit.models.rnn", fromlist=["x"]).RNNConfig, print)
NO_DEFAULT = ModelDef("no-default", ("sequence-classification",), _NoDefault, print)


@pytest.mark.parametrize(
    "attr,name,words", [("BAD_TASK", "bad-task", "must be one or more of"), ("NO_DEFAULT", "no-default", "TypeError")]
)
def test_a_broken_declaration_is_a_plugin_failure(attr, name, words):
    from rnnkit.registry import ModelEntry

    registry = Registry()
    ep = metadata.EntryPoint(name, f"tests.test_registry:{attr}", "rnnkit.models")
    registry.entries[name] = ModelEntry(name, ep.value, "rnnkit-bad", "0.1", ep)
    assert registry.load_all() == []
    assert words in registry.failures[0].error
