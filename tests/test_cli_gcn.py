"""`rnnkit gcn` as a user drives it, and its bad input."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_one_line_error, run

QUICK = ["--runs", "1", "--epochs", "5", "--device", "cpu", "--no-progress"]


def test_karate_side_by_side_and_plot(tmp_path):
    out = tmp_path / "gcn"
    result = run("gcn", "--dataset", "karate", "--impl", "dense,pyg", *QUICK, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "dense" in result.stdout and "pyg" in result.stdout and "test accuracy" in result.stdout
    summary = json.loads((out / "results.json").read_text())
    assert [r["impl"] for r in summary["results"]] == ["dense", "pyg"]
    assert summary["results"][0]["peak_memory_mb"] >= 0
    plotted = run("plot", str(out))
    assert plotted.exit_code == 0 and (out / "comparison.png").stat().st_size > 1000


def test_spec_file_with_overrides(tmp_path):
    result = run(
        "gcn",
        "examples/gcn-cora.yaml",
        "--dataset",
        "synthetic",
        "--nodes",
        "200",
        *QUICK,
        "--out",
        str(tmp_path / "g"),
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g" / "results.json").read_text())["nodes"] == 200


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["--dataset", "imagenet"], 2, ["dataset", "karate, cora"]),
        (["--layers", "0"], 2, ["layers", "greater than 0"]),
        (["--hidden", "0"], 2, ["hidden", "greater than 0"]),
        (["--impl", "dense,nope"], 2, ["unknown implementation 'nope'", "Graph models: dense"]),
        (["--impl", "lstm"], 2, ["model 'lstm' is not a node-classification model"]),
        (["--dataset", "synthetic", "--nodes", "100000", "--max-dense-gb", "1"], 2, ["GB", "--impl pyg"]),
    ],
)
def test_bad_input(tmp_path, args, code, words):
    base = ["--dataset", "karate"] if "--dataset" not in args else []
    assert_one_line_error(run("gcn", *base, *args, *QUICK, "--out", str(tmp_path)), code, *words)


def test_missing_planetoid_files_offline(tmp_path, monkeypatch):
    from torch_geometric.datasets import Planetoid

    def offline(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(Planetoid, "download", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNKIT_DATA_DIR", raising=False)
    result = run("gcn", "--dataset", "citeseer", "--data-dir", str(tmp_path / "empty"), *QUICK, "--out", str(tmp_path))
    assert_one_line_error(result, 1, "cannot load citeseer", "raw files", "--data-dir")


def test_too_small_synthetic_graph_and_broken_local_data(tmp_path):
    result = run("gcn", "--dataset", "synthetic", "--nodes", "8", *QUICK, "--out", str(tmp_path))
    assert_one_line_error(result, 2, "needs at least 83 nodes")
    partial = tmp_path / "data" / "planetoid" / "Cora" / "raw"
    partial.mkdir(parents=True)
    (partial / "ind.cora.x").write_bytes(b"junk")
    result = run("gcn", "--dataset", "cora", "--data-dir", str(tmp_path / "data"), *QUICK, "--out", str(tmp_path))
    assert_one_line_error(result, 1, "lacks", "ind.cora.graph")
