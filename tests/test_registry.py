from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata

import pytest

from rnnkit.errors import KindNotSupportedError, ModelNotFoundError, TaskNotSupportedError
from rnnkit.kinds import KINDS
from rnnkit.registry import ModelDef, ModelEntry, Registry, create_model, default_registry


def test_builtins_come_from_entry_points():
    registry = Registry.from_entry_points()
    assert {"rnn", "lstm"} <= set(registry.names())
    for name in ("rnn", "lstm"):
        entry = registry.entries[name]
        assert entry.distribution == "rnnkit" and entry.entry_point is not None
        assert "sequence-classification" in registry.get(name).kinds


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(ModelNotFoundError) as info:
        default_registry().get("lsmt")
    assert "Did you mean 'lstm'" in str(info.value) and "rnn" in str(info.value)


def test_kind_support_is_checked():
    with pytest.raises(KindNotSupportedError, match=r"model 'rnn' is not a node-classification model \(it is: seq"):
        default_registry().get("rnn", "node-classification")
    assert TaskNotSupportedError is KindNotSupportedError  # rnnkit 0.1's name still catches it


def test_every_kind_sizes_exactly_its_build_arguments():
    for name, kind in KINDS.items():
        assert kind.name == name and kind.dims and kind.signature.startswith("model(")
        assert set(kind.tiny_dims) == set(kind.dims), name
        assert set(kind.default_dims) == set(kind.dims), name
        assert kind.dims_note()  # every default size is named in the note
    with pytest.raises(ValueError, match="must name exactly"):
        fields = {"description": "", "signature": "", "tiny_dims": {}, "default_dims": {}, "default_dims_note": ""}
        type(KINDS["char-lm"])(name="x", dims=("vocab_size",), **fields)


def test_a_wrong_output_is_a_clear_assertion():
    import torch

    seq, lm = KINDS["sequence-classification"], KINDS["char-lm"]
    dims = dict(seq.tiny_dims)
    (x,) = seq.tiny_inputs(dims)
    with pytest.raises(AssertionError, match=r"m: logits shape \(2, 5, 4\), expected \(2, 4\)"):
        seq.check_output(torch.zeros(*x.shape[:2], 4), dims, "m")
    with pytest.raises(AssertionError, match=r"m: a char-lm model returns \(logits, state\)"):
        lm.check_output(torch.zeros(2, 6, 7), dict(lm.tiny_dims), "m")


LEGACY_PLUGIN = """
from rnnkit.models.rnn import RNNConfig, build, count_parameters
from rnnkit.registry import ModelDef

MODEL = ModelDef(
    name="legacy",
    tasks=("sequence-classification",),
    config=RNNConfig,
    build=build,
    count_parameters=count_parameters,
)
"""


def test_a_plugin_written_for_0_1_with_tasks_still_registers(tmp_path, monkeypatch):
    (tmp_path / "rnnkit_legacy_plugin.py").write_text(LEGACY_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rnnkit_legacy_plugin", raising=False)
    registry = Registry()
    ep = metadata.EntryPoint("legacy", "rnnkit_legacy_plugin:MODEL", "rnnkit.models")
    registry.entries["legacy"] = ModelEntry("legacy", ep.value, "rnnkit-legacy", "0.1", ep)
    with pytest.warns(DeprecationWarning, match=r"model 'legacy': ModelDef\(tasks=...\) is deprecated"):
        model = registry.get("legacy", "sequence-classification")
    assert model.kinds == ("sequence-classification",) and registry.failures == []
    from rnnkit.testing import check_model

    assert check_model("legacy", registry) == ["sequence-classification"]
    sys.modules.pop("rnnkit_legacy_plugin", None)


def test_kinds_and_tasks_together_are_refused():
    from rnnkit.models.rnn import RNNConfig, build

    with pytest.raises(TypeError, match="pass kinds= only"):
        ModelDef("x", ("char-lm",), RNNConfig, build, tasks=("char-lm",))


def test_a_broken_plugin_is_isolated():
    registry = Registry.from_entry_points()
    broken = metadata.EntryPoint("broken", "rnnkit_no_such_module:MODEL", "rnnkit.models")
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
    registry.add(ModelDef("bad-count", RNN.kinds, RNN.config, RNN.build, count_parameters=lambda c, **d: 1))
    with pytest.raises(AssertionError, match="count_parameters says 1"):
        check_model("bad-count", registry)


@dataclass
class _NoDefault:
    hidden_size: int


BAD_KIND = ModelDef("bad-kind", ("telepathy",), __import__("rnnkit.models.rnn", fromlist=["x"]).RNNConfig, print)
NO_DEFAULT = ModelDef("no-default", ("sequence-classification",), _NoDefault, print)


@pytest.mark.parametrize(
    "attr,name,words", [("BAD_KIND", "bad-kind", "must be one or more of"), ("NO_DEFAULT", "no-default", "TypeError")]
)
def test_a_broken_declaration_is_a_plugin_failure(attr, name, words):
    registry = Registry()
    ep = metadata.EntryPoint(name, f"tests.test_registry:{attr}", "rnnkit.models")
    registry.entries[name] = ModelEntry(name, ep.value, "rnnkit-bad", "0.1", ep)
    assert registry.load_all() == []
    assert words in registry.failures[0].error
