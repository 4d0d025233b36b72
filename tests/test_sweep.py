from __future__ import annotations

from pathlib import Path

import pytest

from rnnkit.errors import SpecError, UsageError
from rnnkit.sweep import (
    SweepInterrupted,
    SweepPlan,
    load_sweep_spec,
    parse_lengths,
    plan_sweep,
    read_results,
    run_sweep,
)

TINY = {
    "device": "cpu",
    "model": {"hidden_size": 8},
    "train": {"batch_size": 16, "max_steps": 12, "log_every": 4, "eval_batches": 1, "lr": 0.01},
}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("5-35", list(range(5, 36))),
        ("5-35:5", [5, 10, 15, 20, 25, 30, 35]),
        ("5,10,20", [5, 10, 20]),
        ("7", [7]),
        ("20,5-6", [5, 6, 20]),
    ],
)
def test_parse_lengths(text, expected):
    assert parse_lengths(text) == expected


@pytest.mark.parametrize("text", ["35-5", "0-3", "abc", "1", "5-10:0", "", "5-"])
def test_parse_lengths_rejects(text):
    with pytest.raises(UsageError):
        parse_lengths(text)


def _plan(tmp_path, **kw):
    return SweepPlan(
        models=kw.pop("models", ["rnn", "lstm"]),
        lengths=kw.pop("lengths", [4, 5]),
        out=tmp_path / "sweep",
        base=TINY,
        **kw,
    )


def test_sweep_writes_results_and_resumes(tmp_path):
    seen = []
    rows = run_sweep(_plan(tmp_path), workers=1, on_result=lambda row, skipped: seen.append(skipped))
    assert len(rows) == 4 and seen == [False] * 4
    saved = read_results(tmp_path / "sweep" / "results.csv")
    assert [(r["model"], r["length"], r["seed"]) for r in saved] == [
        ("rnn", 4, 0),
        ("rnn", 5, 0),
        ("lstm", 4, 0),
        ("lstm", 5, 0),
    ]
    assert all(r["status"] == "max_steps" and r["steps"] == 12 and 0 <= r["best_accuracy"] <= 1 for r in saved)
    run_dir = Path(saved[0]["run_dir"])
    assert run_dir.name.startswith("model=rnn_length=4_seed=0_") and len(run_dir.name.rsplit("_", 1)[1]) == 8
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()

    seen.clear()
    run_sweep(_plan(tmp_path), workers=1, on_result=lambda row, skipped: seen.append(skipped))
    assert seen == [True] * 4  # everything finished is skipped

    # a changed spec is not "the same run": it gets other directories (another hash), the first runs stay
    before = {p: p.read_bytes() for p in (tmp_path / "sweep").glob("*/checkpoint/*")}
    other = run_sweep(_plan(tmp_path, overrides=["train.max_steps=8"]), workers=1)
    assert all(r["steps"] == 8 for r in other) and {r["run_dir"] for r in other}.isdisjoint(r["run_dir"] for r in saved)
    assert {p: p.read_bytes() for p in before} == before


def test_per_length_overrides(tmp_path):
    plan = _plan(tmp_path, models=["lstm"], per_length={4: {"train.lr": 0.05}})
    specs = {r.values["length"]: r.spec for r in plan.run_specs()}
    assert specs[4].train.lr == 0.05 and specs[5].train.lr == 0.01


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import rnnkit.sweep_job as sweep_module

    original = sweep_module.run_one

    def flaky(spec, run_dir, threads):
        if spec.task.length == 4 and spec.model_name == "rnn":
            raise RuntimeError("simulated crash")
        return original(spec, run_dir, threads)

    monkeypatch.setattr(sweep_module, "run_one", flaky)
    rows = run_sweep(_plan(tmp_path), workers=1)
    by_key = {(r["model"], r["length"]): r for r in rows}
    assert by_key[("rnn", 4)]["status"] == "failed" and "simulated crash" in by_key[("rnn", 4)]["error"]
    assert all(by_key[k]["status"] == "max_steps" for k in by_key if k != ("rnn", 4))

    monkeypatch.setattr(sweep_module, "run_one", original)
    done = []
    run_sweep(_plan(tmp_path), workers=1, on_result=lambda row, skipped: done.append((row["model"], skipped)))
    assert done.count(("rnn", False)) == 1  # only the failed run runs again


def test_interrupt_keeps_finished_runs_and_rerun_completes(tmp_path, monkeypatch):
    from rnnkit.training import Trainer

    original = Trainer.train_step
    calls = {"n": 0}

    def interrupt_third_run(self):
        calls["n"] += 1
        if calls["n"] == 12 * 2 + 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", interrupt_third_run)
    with pytest.raises(SweepInterrupted):
        run_sweep(_plan(tmp_path), workers=1)
    rows = read_results(tmp_path / "sweep" / "results.csv")
    assert [r["status"] for r in rows] == ["max_steps", "max_steps", "interrupted", "pending"]

    monkeypatch.setattr(Trainer, "train_step", original)
    skipped = []
    rows = run_sweep(_plan(tmp_path), workers=1, on_result=lambda row, s: skipped.append(s))
    assert skipped == [True, True, False, False]
    assert all(r["status"] == "max_steps" for r in rows)


def test_parallel_workers(tmp_path):
    rows = run_sweep(_plan(tmp_path, models=["lstm"]), workers=2)
    assert [r["status"] for r in rows] == ["max_steps", "max_steps"]


def test_sweep_spec_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "models: [lstm]\nlengths: 5-6\nper_length:\n  5: {train.lr: 0.02}\nspec:\n  train: {max_steps: 3}\n"
    )
    data = load_sweep_spec(path)
    assert data.per_length == {5: {"train.lr": 0.02}} and data.spec["train"]["max_steps"] == 3
    path.write_text("modles: [lstm]\n")
    with pytest.raises(SpecError, match="unknown key"):
        load_sweep_spec(path)


@pytest.mark.parametrize(
    "text,words",
    [
        ("seeds: abc\n", ["seeds: must be an integer", "line 1"]),
        ("seeds: 1.5\n", ["seeds: must be an integer"]),
        ("seeds: 0\n", ["seeds: must be at least 1"]),
        ("out: [1]\n", ["out: must be a string"]),
        ("models: 3\n", ["models"]),
        ("name: ../../x\n", ["name: must be a plain directory name"]),
        ("per_length:\n  five: {train.lr: 0.1}\n", ["per_length.five"]),
        ("spec: 3\n", ["spec: must be a mapping"]),
    ],
)
def test_sweep_spec_errors(tmp_path, text, words):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_sweep_spec(path)
    for word in words:
        assert word in str(info.value)


def test_sweep_spec_accepts_a_list_of_lengths(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("models: [lstm]\nlengths: [5, 10]\n")
    plan, _ = plan_sweep(path)
    assert plan.lengths == [5, 10] and plan.models == ["lstm"]


@pytest.mark.parametrize(
    "override", ["name=x", "seed=3", "task.length=7", "model.name=rnn", "out_dir=/tmp/x", "task=x"]
)
def test_sweep_keys_cannot_be_overridden(tmp_path, override):
    with pytest.raises(UsageError, match="the sweep sets it"):
        _plan(tmp_path, overrides=[override])


def test_example_sweep_spec_resolves():
    plan, _ = plan_sweep("examples/sweep-palindrome.yaml")
    specs = {(r.values["model"], r.values["length"]): r.spec for r in plan.run_specs()}
    assert specs[("lstm", 5)].train.lr == 0.01 and specs[("lstm", 7)].train.lr == 0.015
