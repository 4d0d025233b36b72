"""`rnnkit runs`: every run under a folder (sweeps included) as rows, sortable, as JSON; one run's
record, provenance and config; unreadable, partial and killed runs shown as such, never a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rnnkit.runner import train_run
from rnnkit.runs_table import find_runs, list_runs, main_metric, run_details, run_row
from rnnkit.spec import resolve_spec
from rnnkit.sweep import plan_sweep, run_sweep
from tests.helpers import assert_one_line_error, run, tiny_spec


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    """runs/: a finished run, a longer one, a sweep of two runs, a corrupt run, a partial one and one
    killed while recorded running."""
    root = tmp_path_factory.mktemp("listing") / "runs"
    train_run(resolve_spec(tiny_spec({"name": "short", "out_dir": str(root), "train.max_steps": 10})))
    train_run(resolve_spec(tiny_spec({"name": "long", "out_dir": str(root), "train.max_steps": 40})))
    plan, _ = plan_sweep(
        None,
        lengths="4",
        models="rnn,lstm",
        out=root / "sweep",
        overrides=["train.max_steps=10", "model.hidden_size=8", "device=cpu"],
    )
    run_sweep(plan, workers=1)
    shutil.copytree(root / "short", root / "corrupt", symlinks=True)
    (root / "corrupt" / "meta.json").write_text("{not json")
    (root / "partial").mkdir()
    shutil.copy(root / "short" / "config.yaml", root / "partial" / "config.yaml")
    (root / "partial" / ".lock").write_text("")
    shutil.copytree(root / "short", root / "killed", symlinks=True)
    record = json.loads((root / "killed" / "meta.json").read_text())
    (root / "killed" / "meta.json").write_text(json.dumps({**record, "status": "running"}))
    (root / "short" / "wandb" / "offline-run-x" / "files").mkdir(parents=True)  # another tool's files
    (root / "short" / "wandb" / "offline-run-x" / "files" / "config.yaml").write_text("a: 1\n")
    (root / "notes").mkdir()  # a folder with no run
    return root


def test_every_run_below_the_folder_is_found_once(runs_folder):
    names = [str(p.relative_to(runs_folder)) for p in find_runs(runs_folder)]
    sweep_runs = [n for n in names if n.startswith("sweep/")]
    assert len(sweep_runs) == 2
    assert sorted(set(names) - set(sweep_runs)) == ["corrupt", "killed", "long", "partial", "short"]
    assert find_runs(runs_folder / "short") == [runs_folder / "short"]


def test_rows_say_what_each_run_is(runs_folder):
    rows = {r.name: r for r in list_runs(runs_folder)}
    short = rows["short"]
    assert (short.model, short.task, short.status, short.steps) == ("lstm", "palindrome", "max_steps", 10)
    assert short.metric == "accuracy" and 0 <= short.value <= 1 and short.seconds > 0 and short.started
    assert rows["corrupt"].status == "unreadable" and "meta.json" in rows["corrupt"].error
    assert rows["partial"].status == "unreadable" and rows["partial"].error == "no meta.json"
    assert rows["partial"].model == "lstm"  # what its config says
    assert rows["killed"].status == "stopped"  # recorded running, owned by no process
    assert {rows[n].model for n in rows if n.startswith("sweep/")} == {"rnn", "lstm"}


def test_sorting(runs_folder):
    by_steps = list_runs(runs_folder, sort="steps")
    steps = [r.steps for r in by_steps if r.steps is not None]
    assert steps == sorted(steps) and by_steps[-1].steps is None  # rows without a value last
    assert [r.steps for r in list_runs(runs_folder, sort="steps", reverse=True)][0] == 40
    assert [r.name for r in list_runs(runs_folder)] == sorted(r.name for r in by_steps)


def test_the_main_metric_of_each_task(tmp_path):
    assert main_metric("text", {"final_metrics": {"bpc": 2.5, "accuracy": 0.4}}, tmp_path) == ("bpc", 2.5)
    graph = {"final_metrics": {"accuracy": 0.7, "test_accuracy_at_best_val": 0.8}}
    assert main_metric("graph", graph, tmp_path) == ("test_accuracy_at_best_val", 0.8)
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 10, "eval_bpc": 3.0}\n{"step": 20, "loss": 1.0}\n{"step": 20, "eval_bpc": 2.75}\n{"step": 2'
    )
    assert main_metric("text", {"status": "running"}, tmp_path) == ("bpc", 2.75)  # the latest evaluation
    assert main_metric("palindrome", {}, tmp_path) == ("accuracy", None)


def test_the_table_is_whole_when_piped(runs_folder):
    result = run("runs", str(runs_folder))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    sweep_name = next(p.name for p in find_runs(runs_folder / "sweep"))
    assert any(f"sweep/{sweep_name}" in line for line in lines)  # not cut to 80 columns
    assert any("short" in line and "max_steps" in line and "accuracy 0." in line for line in lines)
    assert any("corrupt" in line and "unreadable" in line for line in lines)
    assert any("killed" in line and "stopped" in line for line in lines)


def test_json_is_one_list(runs_folder):
    result = run("runs", str(runs_folder), "--json", "--sort", "steps", "--reverse")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 7 and rows[0]["name"] == "long" and rows[0]["steps"] == 40
    assert set(rows[0]) >= {"name", "model", "task", "status", "metric", "value", "steps", "seconds", "started"}


def test_one_run_shows_its_provenance_and_config(runs_folder):
    result = run("runs", str(runs_folder / "short"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for words in ("max_steps after 10 steps", "torch", "command", "started", "config.yaml", "hidden_size: 16"):
        assert words in out, words
    details = json.loads(run("runs", str(runs_folder / "short"), "--json").stdout)
    assert details["provenance"]["device"] == "cpu" and details["config"]["model"]["name"] == "lstm"
    assert details["run"]["status"] == "max_steps" and "spec" not in details["record"]
    assert run_details(runs_folder / "corrupt")["run"]["status"] == "unreadable"
    assert run("runs", str(runs_folder / "corrupt")).exit_code == 0


def test_bad_arguments_are_one_line(runs_folder, tmp_path):
    assert_one_line_error(run("runs", str(tmp_path / "nope")), 2, "does not exist")
    assert_one_line_error(run("runs", str(runs_folder), "--sort", "colour"), 2, "--sort colour", "steps")
    (tmp_path / "file.txt").write_text("x")
    assert_one_line_error(run("runs", str(tmp_path / "file.txt")), 2, "not a folder of runs")
    empty = run("runs", str(runs_folder / "notes"))
    assert empty.exit_code == 0 and "no runs under" in empty.stdout


def test_a_row_of_a_run_whose_config_is_garbage(runs_folder, tmp_path):
    shutil.copytree(runs_folder / "short", tmp_path / "garbled", symlinks=True)
    (tmp_path / "garbled" / "config.yaml").write_text("model: [unclosed\n")
    row = run_row(tmp_path / "garbled")
    assert row.status == "unreadable" and "config.yaml" in row.error
