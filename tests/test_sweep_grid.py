"""Sweeps over any key of any task: grids, run identity, the aggregation over seeds, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rnnkit.errors import UsageError
from rnnkit.stats import aggregate, confidence_half_width
from rnnkit.sweep import SweepPlan, default_workers, parse_values, plan_sweep, read_results, run_sweep
from tests.helpers import assert_one_line_error, run, small_text

TINY_TRAIN = ["train.batch_size=16", "train.max_steps=10", "train.log_every=5", "train.eval_batches=1"]


@pytest.mark.parametrize(
    "key,text,expected",
    [
        ("model.name", "rnn,lstm", ["rnn", "lstm"]),
        ("model.layers", "1-3", [1, 2, 3]),
        ("task.length", "5-15:5", [5, 10, 15]),
        ("train.lr", "1e-4:1e-2:3log", [1e-4, 1e-3, 1e-2]),
        ("model.dropout", "0:0.5:6", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        ("model.dropout", "0.1,0.2", [0.1, 0.2]),
        ("train.optimizer", "adam", ["adam"]),
        ("model.hidden_size", [8, 16], [8, 16]),
    ],
)
def test_values_of_a_swept_key(key, text, expected):
    assert parse_values(key, text) == pytest.approx(expected) if isinstance(expected[0], float) else expected
    assert parse_values(key, text) == expected or isinstance(expected[0], float)


@pytest.mark.parametrize("text", ["1e-4:1e-2:0", "0:1e-2:3log", "5-3", ""])
def test_bad_values_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_values("train.lr" if ":" in text else "model.layers", text)


def test_a_two_by_two_by_two_seed_grid_on_palindromes(tmp_path):
    out = tmp_path / "grid"
    args = ["sweep", "-p", "model.name=rnn,lstm", "-p", "model.hidden_size=8,12", "--lengths", "4", "--seeds", "2"]
    result = run(
        *args, *(x for s in TINY_TRAIN for x in ("-s", s)), "-s", "device=cpu", "--workers", "1", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = read_results(out / "results.csv")
    assert len(rows) == 8
    assert {(r["model"], r["hidden_size"], r["seed"]) for r in rows} == {
        (m, h, s) for m in ("rnn", "lstm") for h in (8, 12) for s in (0, 1)
    }
    assert all(r["status"] == "max_steps" and r["host"] and isinstance(r["eval_loss"], float) for r in rows)
    names = sorted(Path(r["run_dir"]).name for r in rows)
    assert names[0].startswith("length=4_model=lstm_hidden_size=12_seed=0_")  # shorthands first
    assert json.loads((out / "sweep.json").read_text())["keys"] == {
        "length": "task.length",
        "model": "model.name",
        "hidden_size": "model.hidden_size",
    }
    assert "mean ± CI" in result.stdout and "hidden_size" in result.stdout
    again = run(
        *args, *(x for s in TINY_TRAIN for x in ("-s", s)), "-s", "device=cpu", "--workers", "1", "--out", str(out)
    )
    assert again.exit_code == 0 and again.stderr.count("skipped (done)") == 8
    plotted = run("plot", str(out), "--x", "hidden_size", "--metric", "eval_loss")
    assert plotted.exit_code == 0, plotted.output
    assert (out / "eval_loss_vs_hidden_size.png").stat().st_size > 1000


def test_a_text_sweep_over_two_hidden_sizes(tmp_path):
    text = small_text(tmp_path)
    plan, _ = plan_sweep(
        "examples/christie.yaml",
        params=["model.hidden_size=8,16"],
        overrides=[
            f"task.text={text}",
            "task.corpus=christie",
            "model.embedding_size=4",
            "model.dropout=0",
            "train.max_steps=6",
            "train.batch_size=4",
            "train.sample_every=0",
            "device=cpu",
        ],
        out=tmp_path / "text",
    )
    rows = run_sweep(plan, workers=1)
    assert [r["hidden_size"] for r in rows] == [8, 16]
    assert all(r["status"] == "max_steps" and r["eval_bpc"] > 0 for r in rows)


def test_a_gcn_sweep_over_two_datasets_and_two_models(tmp_path):
    plan, _ = plan_sweep(
        "examples/gcn-cora.yaml",
        params=["task.dataset=karate,synthetic", "model.name=gcn-dense,graphsage"],
        overrides=["train.max_steps=5", "task.nodes=120", "task.classes=3", "device=cpu"],
        out=tmp_path / "gcn",
    )
    rows = run_sweep(plan, workers=1)
    assert {(r["dataset"], r["model"]) for r in rows} == {
        (d, m) for d in ("karate", "synthetic") for m in ("gcn-dense", "graphsage")
    }
    assert all(r["status"] == "max_steps" and 0 <= r["eval_test_accuracy_at_best_val"] <= 1 for r in rows)


def test_aggregation_against_hand_computed_values():
    rows = [
        {"model": "rnn", "length": 5, "seed": 0, "status": "solved", "best_accuracy": 1.0},
        {"model": "rnn", "length": 5, "seed": 1, "status": "plateau", "best_accuracy": 0.5},
        {"model": "rnn", "length": 5, "seed": 2, "status": "solved", "best_accuracy": 0.9},
        {"model": "rnn", "length": 5, "seed": 3, "status": "failed", "best_accuracy": None},
        {"model": "lstm", "length": 5, "seed": 0, "status": "solved", "best_accuracy": 1.0},
    ]
    rnn, lstm = aggregate(rows, ["model", "length"], "best_accuracy", threshold=0.9)
    assert rnn.values == {"model": "rnn", "length": 5} and rnn.n == 3 and rnn.runs == 4 and rnn.failed == 1
    assert rnn.mean == pytest.approx(0.8)
    # sample std of 1.0, 0.5, 0.9: sqrt(((0.2)^2 + (0.3)^2 + (0.1)^2) / 2) = sqrt(0.07)
    assert rnn.std == pytest.approx(math.sqrt(0.07))
    # t(0.975, 2) = 4.302653 (tables); half-width = t * s / sqrt(3)
    assert rnn.ci == pytest.approx(4.302653 * math.sqrt(0.07) / math.sqrt(3), rel=1e-6)
    assert rnn.success_rate == pytest.approx(2 / 4)  # 1.0 and 0.9 reach 0.9; the failed run does not
    assert lstm.n == 1 and lstm.std == 0 and math.isnan(lstm.ci) and lstm.success_rate == 1
    assert confidence_half_width([1.0, 3.0]) == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2), rel=1e-6)


def test_the_default_workers_are_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_workers() == 1


def test_nothing_to_sweep_and_bad_params_are_one_line(tmp_path):
    result = run("sweep", "-p", "train.lr", "--out", str(tmp_path / "x"))
    assert_one_line_error(result, 2, "invalid -p", "KEY=VALUES")
    result = run("sweep", "-p", "model.nope=1,2", "--models", "rnn", "--lengths", "4", "--out", str(tmp_path / "x"))
    assert_one_line_error(result, 2, "nope")
    with pytest.raises(UsageError, match="nothing to sweep"):
        SweepPlan(out=tmp_path)
    result = run("sweep", "--executor", "slurm", "--out", str(tmp_path / "x"))
    assert_one_line_error(result, 2, "--executor must be local or ray")


def test_the_sweep_bar_lists_the_runs_in_flight(tmp_path):
    from rnnkit.progress import SweepProgress
    from rnnkit.rundir import RunLock

    busy, idle = tmp_path / "model=rnn_seed=0_aaaa", tmp_path / "model=lstm_seed=0_bbbb"
    with RunLock.acquire(busy):  # held by this process, as a run in training is by its worker
        (busy / "metrics.jsonl").write_text('{"step": 40, "loss": 2.0, "accuracy": 0.25}\n{"step": 50, "lo')
        idle.mkdir()
        bar = SweepProgress(2, [busy, idle], enabled=False)
        assert bar.in_flight() == ["model=rnn_seed=0_aaaa: step 40, accuracy 0.250"]
        bar.finished(busy)
        assert bar.in_flight() == []


def test_run_names_stay_when_settings_are_added_at_their_defaults(tmp_path):
    """A sweep directory made before a setting existed keeps its run names (pinned here), and turning
    a dashboard on changes no name; a setting away from its default does."""
    from rnnkit.sweep import SweepPlan

    def names(*overrides: str, models: tuple[str, ...] = ("rnn", "lstm")) -> list[str]:
        plan = SweepPlan(models=list(models), lengths=[5], out=tmp_path, overrides=list(overrides))
        return [run.spec.name for run in plan.run_specs()]

    pinned = ["model=rnn_length=5_seed=0_b55e1832", "model=lstm_length=5_seed=0_d77d8ec9"]
    assert names() == pinned
    assert names("log.tensorboard=true", "train.precision=fp32") == pinned
    assert names("train.precision=bf16")[0] != pinned[0]
    assert names("model.impl=fused", models=("lstm",)) == pinned[1:]
    assert names("model.impl=autograd", models=("lstm",)) != pinned[1:]


def test_a_swept_key_named_like_a_results_column_keeps_its_whole_name():
    from rnnkit.sweep import label

    assert label("train.seed", ["train.seed"]) == "train.seed"
    assert label("task.steps", ["task.steps", "model.name"]) == "task.steps"
    assert label("train.lr", ["train.lr"]) == "lr"


def test_a_sweep_over_names_alone_is_drawn_with_named_ticks(tmp_path):
    from rnnkit.plotting import sweep_figure

    rows = [
        {"model": m, "seed": s, "best_accuracy": a}
        for m, accs in (("gcrn", (0.95, 0.96)), ("node-lstm", (0.75, 0.74)))
        for s, a in enumerate(accs)
    ]
    fig = sweep_figure(rows, ["model"], x="model", metric="best_accuracy")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gcrn", "node-lstm"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.955, 0.745])
