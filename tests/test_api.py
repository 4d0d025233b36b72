"""The Python API: every code block of docs/api.md runs, in order, and does what the page says."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

import rnnkit
from rnnkit.errors import RunError, UsageError

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_example_of_the_api_page_runs(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNKIT_DISABLE_PLUGINS", "1")
    blocks = _blocks()
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    # what the page promises besides its own asserts
    run = namespace["run"]
    assert run.path == Path("runs/palindrome-lstm") and run.status in ("solved", "max_steps", "plateau")
    assert (tmp_path / "runs" / "tiny" / "config.yaml").is_file()
    assert namespace["gcn"].record["status"] == "max_steps" and namespace["gcn"].record["steps"] == 30
    assert [r["impl"] for r in namespace["summary"]["results"]] == ["dense", "pyg"]
    assert (tmp_path / "runs" / "gcn-karate" / "results.json").is_file()
    assert (tmp_path / "runs" / "gcn-karate" / "dense-s1" / "metrics.jsonl").is_file()


def test_the_api_is_what_the_cli_calls():
    from rnnkit import api

    assert rnnkit.train is api.train and rnnkit.load is api.load and rnnkit.Run is api.Run
    with pytest.raises(AttributeError):
        rnnkit.no_such_function  # noqa: B018


def test_bad_input_is_a_typed_error(tmp_path):
    with pytest.raises(UsageError, match="not a run directory"):
        rnnkit.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a run directory"):
        rnnkit.load(tmp_path / "empty")
    with pytest.raises(UsageError, match="unknown option 'epoch'"):
        rnnkit.compare_gcn(epoch=3)
    with pytest.raises(UsageError, match="train.lr"):
        rnnkit.train({"model": {"name": "rnn"}}, **{"train.lr": -1})


def test_a_run_without_checkpoint_says_so(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("name: r\nmodel:\n  name: rnn\n")
    run = rnnkit.load(tmp_path / "r")
    assert run.metrics == [] and run.status == "unknown"
    with pytest.raises(RunError, match="no checkpoint weights"):
        run.load_model()


def test_version_agrees_with_the_package_metadata():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert rnnkit.__version__ == pyproject["project"]["version"]
