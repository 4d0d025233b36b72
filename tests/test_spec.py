from __future__ import annotations

import pytest
import yaml

from rnnkit.errors import ModelNotFoundError, SpecError
from rnnkit.spec import load_spec, resolve_spec
from tests.conftest import tiny_spec


def test_resolves_defaults_and_types():
    spec = resolve_spec({"model": {"name": "lstm"}})
    assert spec.model_name == "lstm" and spec.model.hidden_size == 128
    assert spec.task_name == "palindrome" and spec.task.length == 20
    assert spec.train.optimizer == "rmsprop" and spec.train.lr == 1e-3 and spec.train.max_norm == 10.0
    assert spec.train.batch_size == 128 and spec.train.max_steps == 10_000


def test_overrides_are_type_checked():
    spec = resolve_spec(tiny_spec(), ["train.lr=1e-2", "model.hidden_size=8", "train.early_stop.window=5"])
    assert spec.train.lr == 0.01 and isinstance(spec.train.lr, float)
    assert spec.model.hidden_size == 8 and spec.train.early_stop.window == 5
    with pytest.raises(SpecError, match=r"model.hidden_size: must be an integer, got str 'big'"):
        resolve_spec(tiny_spec(), ["model.hidden_size=big"])
    with pytest.raises(SpecError, match="must be an integer, got float 1.5"):
        resolve_spec(tiny_spec(), ["train.batch_size=1.5"])
    with pytest.raises(SpecError, match="must be one of sgd, momentum, rmsprop, adam"):
        resolve_spec(tiny_spec(), ["train.optimizer=adagrad"])


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(SpecError) as info:
        resolve_spec(tiny_spec(), ["train.learning_rate=0.1"])
    message = str(info.value)
    assert "train.learning_rate: unknown key" in message and "lr" in message and "batch_size" in message
    with pytest.raises(SpecError, match="Did you mean 'hidden_size'"):
        resolve_spec(tiny_spec(), ["model.hiden_size=3"])
    with pytest.raises(SpecError, match="unknown key"):
        resolve_spec({**tiny_spec(), "optimiser": "adam"})


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.lr=0", "greater than 0"),
        ("train.lr=-1", "greater than 0"),
        ("train.batch_size=0", "greater than 0"),
        ("model.hidden_size=-4", "greater than 0"),
        ("task.length=1", "at least 2"),
    ],
)
def test_bounds(override, words):
    with pytest.raises(SpecError, match=words):
        resolve_spec(tiny_spec(), [override])


def test_unknown_model_names_the_closest():
    with pytest.raises(ModelNotFoundError, match="Did you mean 'lstm'"):
        resolve_spec(tiny_spec(), ["model.name=lstn"])


def test_errors_name_the_line_in_the_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nmodel:\n  name: rnn\ntrain:\n  lr: fast\n")
    with pytest.raises(SpecError, match=r"train.lr: must be a number.*line 5"):
        load_spec(path)
    path.write_text("model:\n  name: rnn\n  hidden_size: [1\n")
    with pytest.raises(SpecError, match=r"malformed YAML .* line \d"):
        load_spec(path)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_resolved_spec_round_trips(tmp_path):
    spec = resolve_spec(tiny_spec(), ["train.optimizer=adam"])
    again = resolve_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec


def test_examples_load():
    for name in ("palindrome-lstm", "palindrome-rnn"):
        spec = load_spec(f"examples/{name}.yaml")
        assert spec.name == name


def test_switching_model_on_the_command_line_drops_the_other_models_settings():
    spec = load_spec("examples/palindrome-lstm.yaml", ["model.name=rnn"])  # the file sets init, forget_bias
    assert spec.model_name == "rnn" and spec.model.hidden_size == 128
    with pytest.raises(SpecError, match="model.forget_bias: unknown key"):
        load_spec("examples/palindrome-lstm.yaml", ["model.name=rnn", "model.forget_bias=1.0"])
