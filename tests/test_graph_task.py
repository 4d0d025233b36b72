"""The graph task: node classification trained by the shared Trainer, as `rnnkit train` and every run of
`rnnkit gcn` use it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rnnkit.checkpoint import read_meta
from rnnkit.data.graph_task import GraphConfig, GraphTask
from rnnkit.errors import UsageError
from rnnkit.registry import get_model
from rnnkit.runner import train_run
from rnnkit.spec import load_spec, resolve_spec
from tests.helpers import assert_one_line_error, run

KARATE = {"task.dataset": "karate", "device": "cpu"}


def _spec(tmp_path, **overrides):
    values = {**KARATE, "out_dir": str(tmp_path), **overrides}
    return load_spec("examples/gcn-cora.yaml", list(values.items()))


def kipf_loop(model, graph, epochs: int) -> tuple[float, float]:
    """Kipf & Welling's loop written out (what `rnnkit gcn` ran before it used the Trainer): the test
    accuracy at the best validation accuracy, and that validation accuracy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    best_val, test_at_best = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(graph.x, graph.edge_index)[graph.train_mask], graph.y[graph.train_mask]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(graph.x, graph.edge_index).argmax(dim=1)
        val = (pred[graph.val_mask] == graph.y[graph.val_mask]).float().mean().item()
        if val > best_val:
            best_val = val
            test_at_best = (pred[graph.test_mask] == graph.y[graph.test_mask]).float().mean().item()
    return test_at_best, best_val


@pytest.mark.parametrize("model", ["gcn-dense", "gcn-pyg"])
def test_the_trainer_gives_what_kipfs_loop_gives(tmp_path, model):
    spec = _spec(tmp_path, **{"model.name": model, "train.max_steps": 40})
    meta = train_run(spec, tmp_path / "run")
    task = GraphTask(GraphConfig(dataset="karate"), torch.device("cpu"), 0)
    torch.manual_seed(0)
    reference = get_model(model).build(spec.model, **task.dims)
    test_at_best, best_val = kipf_loop(reference, task.graph, 40)
    final = meta["final_metrics"]
    assert final["test_accuracy_at_best_val"] == test_at_best and final["best_val_accuracy"] == best_val
    assert meta["status"] == "max_steps" and meta["steps"] == 40


def test_a_graph_run_is_a_normal_run_directory(tmp_path):
    result = run(
        "train", "examples/gcn-cora.yaml", "task.dataset=karate", "train.max_steps=20", "--out-dir", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "test_accuracy_at_best_val" in result.stdout
    run_dir = tmp_path / "gcn-cora"
    for name in ("config.yaml", "metrics.jsonl", "meta.json", "checkpoint/model.safetensors", "best/meta.json"):
        assert (run_dir / name).exists(), name
    record = read_meta(run_dir / "meta.json")
    assert record["task"] == "graph" and record["model_kind"] == "node-classification"
    assert record["nodes"] == 34 and record["status"] == "max_steps"
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert len(evals) == 20  # every epoch
    assert run("plot", str(run_dir)).exit_code == 0 and (run_dir / "curves.png").is_file()


def test_resume_continues_exactly(tmp_path):
    straight = train_run(_spec(tmp_path / "a", **{"train.max_steps": 30}), tmp_path / "a" / "run")
    train_run(_spec(tmp_path / "b", **{"train.max_steps": 12}), tmp_path / "b" / "run")
    resumed = train_run(_spec(tmp_path / "b", **{"train.max_steps": 30}), tmp_path / "b" / "run", resume=True)
    assert resumed["final_metrics"] == straight["final_metrics"]


def test_the_graph_task_brings_its_training_defaults():
    spec = resolve_spec({"task": {"name": "graph", "dataset": "karate"}, "model": {"name": "gcn-dense"}})
    train = spec.train
    assert (train.optimizer, train.lr, train.max_steps, train.eval_every, train.max_norm) == ("adam", 0.01, 200, 1, 0)
    assert train.early_stop.threshold == 0 and train.plateau.patience == 0
    assert train.early_stop.window == 50  # keys a default leaves out keep the general default
    mine = resolve_spec(
        {"task": {"name": "graph"}, "model": {"name": "gcn-dense"}, "train": {"lr": 0.05, "early_stop": {"window": 5}}}
    )
    assert mine.train.lr == 0.05 and mine.train.early_stop.window == 5 and mine.train.early_stop.threshold == 0
    palindrome = resolve_spec({"model": {"name": "lstm"}})
    assert palindrome.train.optimizer == "rmsprop"  # other tasks keep the general defaults


def test_a_huge_synthetic_graph_is_refused_before_it_is_generated(tmp_path):
    with pytest.raises(UsageError, match="lower task.nodes"):
        GraphTask(GraphConfig(dataset="synthetic", nodes=1_000_000_000, degree=1000), torch.device("cpu"), 0)
    spec = _spec(tmp_path, **{"task.dataset": "synthetic", "task.nodes": 60_000, "train.max_memory_gb": 1})
    with pytest.raises(UsageError, match="dense 60,000x60,000 adjacency"):
        train_run(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_a_sequence_model_cannot_train_on_a_graph(tmp_path):
    result = run(
        "train", "examples/gcn-cora.yaml", "model.name=lstm", "task.dataset=karate", "--out-dir", str(tmp_path)
    )
    assert_one_line_error(result, 2, "lstm", "node-classification")


def test_gcn_compares_runs_of_a_run_spec_and_never_overwrites_them(tmp_path):
    out = tmp_path / "cmp"
    args = ["gcn", "examples/gcn-cora.yaml", "--dataset", "karate", "--runs", "1", "--epochs", "5", "--no-progress"]
    first = run(*args, "--impl", "dense", "--out", str(out))
    assert first.exit_code == 0, first.output
    again = run(*args, "--impl", "dense", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert (out / "dense-s0" / "checkpoint").exists() and (out / "dense-s0-2" / "checkpoint").exists()
    summary = json.loads((out / "results.json").read_text())
    assert summary["results"][0]["runs"][0]["run_dir"].endswith("dense-s0-2")
    assert summary["spec"]["epochs"] == 5 and summary["spec"]["hidden"] == 16
