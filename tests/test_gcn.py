"""GCNs: the dense equation against torch-geometric, receptive fields, graphs, and the comparison."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.graphs import Graph, load_graph, stochastic_block_model
from rnnkit.errors import TaskNotSupportedError, UsageError
from rnnkit.gcn import GCNSpec, check_memory, compare, model_name
from rnnkit.models.gcn_dense import DenseGCN, GCNConfig, count_parameters, normalized_adjacency
from rnnkit.models.gcn_pyg import PygGCN, PygGCNConfig
from tests.helpers import SHARED_DATA


def _path_graph(n: int = 5) -> torch.Tensor:
    """A-B-C-D-E as an undirected edge list, (2, 2(n-1))."""
    src = torch.arange(n - 1)
    return torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])


def test_normalized_adjacency_matches_the_equation():
    edge_index = _path_graph(4)
    a = torch.zeros(4, 4)
    a[edge_index[1], edge_index[0]] = 1
    a_tilde = a + torch.eye(4)
    d = torch.diag(a_tilde.sum(1).pow(-0.5))
    torch.testing.assert_close(normalized_adjacency(edge_index, 4), d @ a_tilde @ d)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_dense_and_pyg_agree_on_copied_weights(layers):
    graph = stochastic_block_model(60, 4.0, 3, 8, seed=1)
    torch.manual_seed(0)
    dense = DenseGCN(8, 3, GCNConfig(hidden_size=5, layers=layers, dropout=0.0)).double()
    pyg = PygGCN(8, 3, PygGCNConfig(hidden_size=5, layers=layers, dropout=0.0, cached=False)).double()
    assert dense.state_dict().keys() == pyg.state_dict().keys()
    pyg.load_state_dict(dense.state_dict())
    x = graph.x.double()
    out_dense, out_pyg = dense(x, graph.edge_index), pyg(x, graph.edge_index)
    torch.testing.assert_close(out_dense, out_pyg)
    out_dense.square().sum().backward()
    out_pyg.square().sum().backward()
    grads = dict(pyg.named_parameters())
    for name, p in dense.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)
    assert count_parameters(GCNConfig(hidden_size=5, layers=layers), num_features=8, num_classes=3) == sum(
        p.numel() for p in dense.parameters()
    )


@pytest.mark.parametrize("impl", ["dense", "pyg"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_layers_see_exactly_k_hops(impl, k):
    """The report's question 3.1(b): on A-B-C-D-E, node A's output with k layers changes when the node k
    hops away changes, and not when the node k+1 hops away does."""
    edge_index = _path_graph(5)
    torch.manual_seed(0)
    cfg = dict(hidden_size=4, layers=k, dropout=0.0)
    model = DenseGCN(3, 2, GCNConfig(**cfg)) if impl == "dense" else PygGCN(3, 2, PygGCNConfig(cached=False, **cfg))
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)  # positive weights: ReLU never hides a change
    x = torch.rand(5, 3) + 0.1
    base = model(x, edge_index)[0]
    near, far = x.clone(), x.clone()
    near[k] += 1.0  # k hops from A
    if k + 1 < 5:
        far[k + 1] += 1.0  # k+1 hops from A
    assert not torch.allclose(model(near, edge_index)[0], base)
    if k + 1 < 5:
        torch.testing.assert_close(model(far, edge_index)[0], base)


def test_synthetic_graph_is_seeded_and_split():
    a = stochastic_block_model(500, 6.0, 4, 16, seed=3)
    b = stochastic_block_model(500, 6.0, 4, 16, seed=3)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)
    assert a.train_mask.sum() == 80 and not (a.train_mask & a.test_mask).any()
    assert a.edge_index.shape[1] == pytest.approx(500 * 6.0, rel=0.05)
    homophily = (a.y[a.edge_index[0]] == a.y[a.edge_index[1]]).float().mean()
    assert homophily > 0.7


def test_karate_ships_with_torch_geometric():
    graph = load_graph("karate")
    assert graph.num_nodes == 34 and graph.num_classes == 4 and graph.train_mask.sum() == 4


@pytest.mark.skipif(not (SHARED_DATA / "planetoid" / "Cora" / "raw").is_dir(), reason="no shared data")
def test_cora_from_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    graph = load_graph("cora", data_dir=SHARED_DATA)
    assert (graph.num_nodes, graph.num_features, graph.num_classes) == (2708, 1433, 7)
    assert (graph.train_mask.sum(), graph.val_mask.sum(), graph.test_mask.sum()) == (140, 500, 1000)


def test_unknown_dataset_and_impls():
    with pytest.raises(UsageError, match="unknown dataset"):
        load_graph("imagenet")
    assert model_name("dense") == "gcn-dense" and model_name("pyg") == "gcn-pyg"
    with pytest.raises(TaskNotSupportedError):
        compare(GCNSpec(dataset="karate", impl="lstm", runs=1, epochs=1), isolate=False)


def test_dense_memory_budget_is_checked_before_building():
    with pytest.raises(UsageError, match=r"needs about 80\.0 GB .* --impl pyg"):
        check_memory(GCNSpec(impl="dense,pyg"), 100_000, budget_gb=10)
    check_memory(GCNSpec(impl="pyg"), 100_000, budget_gb=10)  # pyg declares no dense memory


def test_compare_trains_both_and_they_agree(tmp_path):
    spec = GCNSpec(
        dataset="synthetic", nodes=300, classes=3, runs=2, epochs=30, out=str(tmp_path / "gcn"), device="cpu"
    )
    summary = compare(spec, isolate=False)
    dense, pyg = summary["results"]
    assert dense["impl"] == "dense" and pyg["impl"] == "pyg"
    assert dense["test_accuracy_mean"] > 0.6  # well above chance (1/3) on a homophilous graph
    assert abs(dense["test_accuracy_mean"] - pyg["test_accuracy_mean"]) < 0.02
    assert (tmp_path / "gcn" / "results.json").is_file()


def test_graph_to_device_keeps_fields():
    g = stochastic_block_model(40, 3.0, 2, 4, seed=0)
    assert isinstance(g.to("cpu"), Graph) and g.to("cpu").num_classes == 2
