from __future__ import annotations

import pytest

rnnkit_graphsage = pytest.importorskip("rnnkit_graphsage")

from rnnkit.testing import check_model  # noqa: E402


def test_contract():
    assert check_model("graphsage") == ["node-classification"]


def test_learns_a_homophilous_graph(tmp_path):
    from rnnkit.gcn import GCNSpec, compare

    spec = GCNSpec(
        dataset="synthetic", nodes=300, classes=3, impl="graphsage", runs=1, epochs=40, out=str(tmp_path), device="cpu"
    )
    (result,) = compare(spec, isolate=False)["results"]
    assert result["model"] == "graphsage" and result["test_accuracy_mean"] > 0.6
