from __future__ import annotations

import pytest
import yaml

from rnnkit.errors import ModelNotFoundError, SpecError
from rnnkit.spec import load_spec, resolve_spec
from tests.helpers import tiny_spec


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
        resolve_spec(tiny_spec({"optimiser": "adam"}))


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


# -- hostile YAML -------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "text,words",
    [
        (BOMB, "aliases expand to"),
        ("model: &a [*a]\n", "recursive alias"),
        ("model: &m {name: lstm, again: *m}\n", "recursive alias"),
        ("model: !!python/object:os.system {}\n", "tags are not allowed (!!python/object:os.system)"),
        ("model:\n  name: !!python/object/apply:os.system [ls]\n", "line 2: tags are not allowed"),
        ("model: !foo {}\n", "tags are not allowed (!foo)"),
        ("name: 2024-13-45\n", "malformed YAML"),
        ("[" * 100 + "]" * 100, "nested more than"),
        ("seed: " + "9" * 5000 + "\n", "malformed YAML"),
        ("? [a]\n: 1\n", "plain name"),
        ("\x1b[31m: 1\n", "malformed YAML"),
    ],
)
def test_hostile_yaml_is_refused_before_it_is_built(tmp_path, text, words):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_small_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("model: &m {name: lstm, hidden_size: 8}\ntrain: {lr: &lr 0.01, momentum: 0.5}\n")
    spec = load_spec(path)
    assert spec.model.hidden_size == 8 and spec.train.lr == 0.01
    path.write_text("defaults: &d {name: lstm, hidden_size: 8}\n")  # unknown key, but parsed
    with pytest.raises(SpecError, match="defaults: unknown key"):
        load_spec(path)


def test_spec_files_are_size_checked_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 100_000)
    with pytest.raises(SpecError, match="at most 256,000"):
        load_spec(path)


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.lr=&x [*x]", "recursive alias"),
        ("train.lr=!!python/object/apply:os.system [ls]", "tags are not allowed"),
        ("seed=1180591620717411303424", "at most 9,223,372,036,854,775,807"),
        ("seed=-1", "at least 0"),
        ("train.batch_size=1000000000", "at most 1,000,000"),
        ("task.length=10001", "at most 10,000"),
        ("train.max_memory_gb=-1", "at least 0"),
        ("name=" + "n" * 300, "plain directory name"),
        ("model.hidden_size=" + "9" * 5000, "must be an integer"),
    ],
)
def test_hostile_overrides_and_upper_bounds(override, words):
    with pytest.raises(SpecError) as info:
        resolve_spec(tiny_spec(), [override])
    assert words in str(info.value) and len(str(info.value)) < 400


def test_a_malformed_override_value_is_a_string():
    from rnnkit.spec import parse_override

    assert parse_override("name=[unclosed") == ("name", "[unclosed")
    assert parse_override("train.lr=0.001") == ("train.lr", 0.001)


# -- memory estimate of a training run ----------------------------------------------------------


def _task_and_model(spec):
    import torch

    from rnnkit.registry import get_model
    from rnnkit.tasks import TASK_TYPES

    task_type = TASK_TYPES[spec.task_name]
    task = task_type(spec.task, torch.device("cpu"), spec.seed)
    return task, get_model(spec.model_name, task_type.kind)


def _christie_like(tmp_path):
    from tests.helpers import small_text

    return resolve_spec(
        yaml.safe_load(open("examples/christie.yaml", encoding="utf-8").read()),
        [f"task.text={small_text(tmp_path)}", "task.corpus=christie"],
    )


def test_training_memory_of_real_specs_is_small_and_quick(tmp_path):
    import time

    import torch

    from rnnkit.memory import check_training_memory

    specs = [
        resolve_spec(tiny_spec()),
        load_spec("examples/palindrome-lstm.yaml"),
        load_spec("examples/palindrome-rnn.yaml"),
        _christie_like(tmp_path),
    ]
    for spec in specs:
        task, model_def = _task_and_model(spec)
        before = {k: v.clone() for k, v in task.state_dict().items()}
        global_before = torch.get_rng_state()
        check_training_memory(model_def, spec.model, task, spec.train.batch_size, 16e9)  # warm-up
        start = time.perf_counter()
        need = check_training_memory(model_def, spec.model, task, spec.train.batch_size, 16e9)
        elapsed = time.perf_counter() - start
        assert 0 < need < 1e9, (spec.name, need)
        assert elapsed < 0.2, (spec.name, elapsed)  # ~1-7 ms here; generous for a busy CI machine
        assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())  # the task's draws are kept
        assert torch.equal(global_before, torch.get_rng_state())


def test_training_memory_refuses_huge_batches_and_models(tmp_path):
    from rnnkit.errors import UsageError
    from rnnkit.memory import check_training_memory

    for spec in (resolve_spec(tiny_spec()), _christie_like(tmp_path)):
        task, model_def = _task_and_model(spec)
        with pytest.raises(UsageError) as info:
            check_training_memory(model_def, spec.model, task, 1_000_000_000, None)
        message = str(info.value)
        assert message.startswith("train.batch_size=1000000000 needs about") and "train.max_memory_gb" in message
        assert "activations" in message and "lower train.batch_size" in message
        wide = resolve_spec(spec.to_dict(), ["model.hidden_size=1000000"])
        with pytest.raises(UsageError, match=r"parameters\) needs about .* lower the model size"):
            check_training_memory(model_def, wide.model, task, wide.train.batch_size, None)
    task, model_def = _task_and_model(resolve_spec(tiny_spec()))
    need = check_training_memory(model_def, resolve_spec(tiny_spec()).model, task, 1000, None)
    with pytest.raises(UsageError, match=r"over the memory budget of 0\.0 GB"):
        check_training_memory(model_def, resolve_spec(tiny_spec()).model, task, 1000, need / 2)


def test_training_memory_grows_with_the_batch_and_the_sequence():
    from rnnkit.memory import check_training_memory

    spec = resolve_spec(tiny_spec())
    task, model_def = _task_and_model(spec)
    small = check_training_memory(model_def, spec.model, task, 100, 1e12)
    assert check_training_memory(model_def, spec.model, task, 1000, 1e12) > 5 * small
    longer = resolve_spec(tiny_spec(), ["task.length=50"])
    task, model_def = _task_and_model(longer)
    assert check_training_memory(model_def, longer.model, task, 100, 1e12) > 5 * small


def test_training_memory_falls_back_when_the_probe_cannot_run():
    from dataclasses import replace

    from rnnkit.memory import BYTES_PER_PARAMETER, check_training_memory

    spec = resolve_spec(tiny_spec())
    task, model_def = _task_and_model(spec)

    def build(config, **dims):
        raise RuntimeError("cannot build here")

    broken = replace(model_def, build=build)
    need = check_training_memory(broken, spec.model, task, 10, 1e12)
    params = model_def.parameter_count(spec.model, **task.dims)
    assert need >= params * BYTES_PER_PARAMETER  # parameters and the batch only
