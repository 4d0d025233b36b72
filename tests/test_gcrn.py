"""GCRN and its baselines on the epidemic task: the contract, shapes, the receptive field of k hops per
step, the task's sequences (reproducible, split by sequence, the process's rules, bounded sizes), a run
through the command line, and GCRN beating both baselines on held-out sequences."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.data.epidemic_task import (
    INFECTED,
    RECOVERED,
    SUSCEPTIBLE,
    EpidemicConfig,
    EpidemicTask,
    simulate_epidemic,
    split_generator,
)
from rnnkit.errors import UsageError
from rnnkit.kinds import KINDS
from rnnkit.models.gcrn import GCRN, GCRNConfig
from rnnkit.registry import get_model
from rnnkit.runner import train_run
from rnnkit.spec import load_spec
from rnnkit.testing import check_model
from tests.helpers import SHARED_DATA, run

MODELS = ("gcrn", "node-lstm", "gcn-last")
KIND = "node-sequence-classification"
CPU = torch.device("cpu")
#: a small epidemic: a few hundred sequences of a 200-node graph
SMALL = {"train_sequences": 32, "val_sequences": 8, "test_sequences": 8}


def _path_graph(n: int) -> torch.Tensor:
    """0-1-2-...-(n-1), every edge in both directions: (2, 2(n-1))."""
    src = torch.arange(n - 1)
    return torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])


def _spec(tmp_path, **overrides):
    values = {"device": "cpu", "out_dir": str(tmp_path), **{f"task.{k}": v for k, v in SMALL.items()}, **overrides}
    return load_spec("examples/gcrn.yaml", list(values.items()))


@pytest.mark.parametrize("name", MODELS)
def test_the_models_keep_the_contract(name):
    assert check_model(name) == [KIND]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch,steps,nodes", [(1, 1, 5), (3, 4, 9)])
def test_shapes_and_parameter_counts(name, batch, steps, nodes):
    model_def = get_model(name, KIND)
    config = model_def.make_config({"hops": 2} if name == "gcrn" else {})
    model = model_def.build(config, num_features=3, num_classes=4)
    out = model(torch.randn(batch, steps, nodes, 3), _path_graph(nodes))
    assert out.shape == (batch, nodes, 4)
    assert model_def.parameter_count(config, num_features=3, num_classes=4) == sum(
        p.numel() for p in model.parameters()
    )


def test_the_kind_is_declared_once_with_its_checks():
    kind = KINDS[KIND]
    x, edge_index = kind.tiny_inputs(dict(kind.tiny_dims))
    assert x.shape == (kind.batch, kind.steps, kind.nodes, kind.tiny_dims["num_features"])
    with pytest.raises(AssertionError, match=r"m: logits shape \(2, 3\), expected \(2, 6, 3\)"):
        kind.check_output(torch.zeros(2, 3), dict(kind.tiny_dims), "m")


@pytest.mark.parametrize("hops", [1, 2])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_a_prediction_sees_exactly_hops_times_steps_hops(hops, steps):
    """Node 0's logits on a path: changing the features of node d at step t (of `steps`) changes them
    when d <= hops x (steps - t), and leaves them exactly as they were when d is one hop further; at the
    first step that is hops x steps hops. The comparisons are exact (float64, the same operations in the
    same order): a node out of reach cannot move a logit by even one rounding, one in reach always does,
    though by little after many hops of gates."""
    reach = hops * steps
    n = reach + 3
    edge_index = _path_graph(n)
    torch.manual_seed(0)
    model = GCRN(2, 3, GCRNConfig(hidden_size=4, hops=hops)).double().eval()
    x = torch.rand(1, steps, n, 2, dtype=torch.float64)
    with torch.no_grad():
        base = model(x, edge_index)[0, 0]
        for t in range(steps):
            near, far = x.clone(), x.clone()
            near[0, t, hops * (steps - t)] += 1.0  # at the edge of what node 0 sees from step t
            far[0, t, hops * (steps - t) + 1] += 1.0  # one hop beyond it
            assert not torch.equal(model(near, edge_index)[0, 0], base), (t, "within reach")  # float64: exact
            assert torch.equal(model(far, edge_index)[0, 0], base), (t, "beyond reach")
        beyond = x.clone()
        beyond[0, :, reach + 1 :] = torch.rand(steps, n - reach - 1, 2, dtype=torch.float64)  # every step
        assert torch.equal(model(beyond, edge_index)[0, 0], base)


def test_the_sequences_are_reproducible_and_split_by_sequence():
    a = EpidemicTask(EpidemicConfig(**SMALL), CPU, seed=0)
    b = EpidemicTask(EpidemicConfig(**SMALL), CPU, seed=7)  # the run's seed leaves the data alone
    for split in ("train", "val", "test"):
        assert torch.equal(a.states[split], b.states[split])
        assert a.states[split].shape == (SMALL[f"{split}_sequences"], 9, 200)  # T + 1 snapshots
    more = EpidemicTask(EpidemicConfig(**{**SMALL, "train_sequences": 64}), CPU, seed=0)
    assert torch.equal(more.states["test"], a.states["test"]) and torch.equal(more.states["val"], a.states["val"])
    other = EpidemicTask(EpidemicConfig(**{**SMALL, "data_seed": 1}), CPU, seed=0)
    assert not torch.equal(other.states["test"], a.states["test"])
    train = a.states["train"].flatten(1)
    for split in ("val", "test"):  # no held-out sequence is a training sequence
        assert not (a.states[split].flatten(1)[:, None] == train[None]).all(-1).any()
    x, y = a.train_batch(5)
    assert x.shape == (5, 8, 200, 2) and y.shape == (5, 200) and x.sum(-1).eq(1).all()
    assert a.dims == {"num_features": 2, "num_classes": 2}
    state = a.state_dict()
    first = a.train_batch(3)
    a.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(first, a.train_batch(3), strict=True))


def test_the_process_follows_its_rules():
    """Infections last exactly infectious_steps; a node is infected only next to a node infected the
    step before (contagious_steps = 1); with immune_steps, R lasts that long and then S again."""
    edge_index = _path_graph(30)
    src, dst = edge_index
    for immune in (0, 2):
        states = simulate_epidemic(
            edge_index,
            30,
            64,
            12,
            infection=0.9,
            infectious_steps=3,
            contagious_steps=1,
            immune_steps=immune,
            initial_infected=0.2,
            generator=split_generator(0, 0),
        ).long()  # (sequences, 13, nodes)
        assert (states == INFECTED).any() and ((states == RECOVERED).any() == (immune > 0))
        new = (states[:, 1:] == INFECTED) & (states[:, :-1] == SUSCEPTIBLE)  # (sequences, 12, nodes)
        for t in range(2, 13):
            onset = new[:, t - 2].double()  # infected at t - 1: contagious at t - 1
            contagious_neighbours = torch.zeros_like(onset).index_add_(1, dst, onset[:, src])
            assert (contagious_neighbours[new[:, t - 1]] > 0).all(), t
        for s in range(64):
            for node in range(30):
                runs = torch.unique_consecutive(states[s, :, node], return_counts=True)
                for value, length in list(zip(*runs, strict=True))[1:-1]:  # runs seen from start to end
                    if value == INFECTED:
                        assert length == 3
                    elif value == RECOVERED:
                        assert length == immune
        after = RECOVERED if immune else SUSCEPTIBLE
        ends = (states[:, :-1] == INFECTED) & (states[:, 1:] != INFECTED)
        assert (states[:, 1:][ends] == after).all()


def test_sizes_are_checked_before_anything_is_made():
    huge = EpidemicConfig(nodes=10_000_000, degree=1000, train_sequences=10_000_000)
    with pytest.raises(UsageError, match="node states, over the 200,000,000"):
        EpidemicTask(huge, CPU, seed=0)
    with pytest.raises(UsageError, match="contagious_steps .* at most task.infectious_steps"):
        EpidemicTask(EpidemicConfig(infectious_steps=2, contagious_steps=3, **SMALL), CPU, seed=0)
    with pytest.raises(UsageError, match="is not a node-sequence-classification model"):
        load_spec("examples/gcrn.yaml", [("model.name", "gcn-pyg")])


@pytest.mark.skipif(not (SHARED_DATA / "planetoid" / "Cora" / "raw").is_dir(), reason="no shared data")
def test_an_epidemic_on_coras_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = EpidemicConfig(dataset="cora", data_dir=str(SHARED_DATA), snapshots=3, immune_steps=2, **SMALL)
    task = EpidemicTask(config, CPU, seed=0)
    assert task.meta()["nodes"] == 2708 and task.meta()["edges"] == 10556 and task.dims["num_classes"] == 3
    x, y = task.train_batch(2)
    assert x.shape == (2, 3, 2708, 3)
    loss, correct = task.loss_and_correct(get_model("gcrn").build(GCRNConfig(hidden_size=4), **task.dims), x, y)
    assert loss.isfinite() and 0 <= int(correct) <= y.numel()


def test_a_run_through_the_command_line(tmp_path):
    sizes = [f"task.{k}={v}" for k, v in SMALL.items()]
    options = ["--device", "cpu", "--out-dir", str(tmp_path), "--no-progress"]
    result = run("train", "examples/gcrn.yaml", *sizes, "train.max_steps=6", "train.eval_every=3", *options)
    assert result.exit_code == 0, result.output
    assert "test_accuracy" in result.stdout
    run_dir = tmp_path / "gcrn"
    for name in ("config.yaml", "metrics.jsonl", "meta.json", "checkpoint/model.safetensors", "best/meta.json"):
        assert (run_dir / name).exists(), name
    record = json.loads((run_dir / "meta.json").read_text())
    assert record["task"] == "epidemic" and record["model_kind"] == KIND and record["steps"] == 6
    assert 0 <= record["final_metrics"]["test_accuracy"] <= 1


def test_resume_continues_exactly(tmp_path):
    straight = train_run(_spec(tmp_path / "a", **{"train.max_steps": 10}), tmp_path / "a" / "run")
    train_run(_spec(tmp_path / "b", **{"train.max_steps": 4}), tmp_path / "b" / "run")
    resumed = train_run(_spec(tmp_path / "b", **{"train.max_steps": 10}), tmp_path / "b" / "run", resume=True)
    assert resumed["final_metrics"] == straight["final_metrics"]


def test_gcrn_beats_both_baselines_on_held_out_sequences(tmp_path):
    """The graph and time both matter: an LSTM per node cannot see who is contagious next to it, a GCN
    on the last snapshot cannot see who became infected when; GCRN sees both."""
    sizes = {"task.train_sequences": 128, "task.val_sequences": 16, "task.test_sequences": 64}
    accuracy = {}
    for name in MODELS:
        spec = _spec(tmp_path, **sizes, **{"model.name": name, "train.max_steps": 150, "train.eval_every": 0})
        meta = train_run(spec, tmp_path / name)
        accuracy[name] = meta["final_metrics"]["test_accuracy"]
    assert accuracy["gcrn"] > max(accuracy["node-lstm"], accuracy["gcn-last"]) + 0.05, accuracy


def test_a_fixed_target_step_keeps_the_target_and_shortens_the_history():
    full = EpidemicTask(EpidemicConfig(snapshots=8, **SMALL), CPU, seed=0).states["test"]  # steps 0 ... 8
    short = EpidemicTask(EpidemicConfig(snapshots=3, target_step=8, **SMALL), CPU, seed=0).states["test"]
    assert torch.equal(short, full[:, 5:])  # steps 5 ... 8: the same sequences, seen from step 5
    with pytest.raises(UsageError, match="target_step .* at least task.snapshots"):
        EpidemicTask(EpidemicConfig(snapshots=8, target_step=4, **SMALL), CPU, seed=0)
