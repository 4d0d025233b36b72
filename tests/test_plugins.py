"""Third-party plugins as users install them: a package built from docs/plugins.md, a misbehaving one,
the two plugins in plugins/, and the environment switches."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RNNKIT = [sys.executable, "-m", "rnnkit"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True, timeout=300)


def _rnnkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*RNNKIT, *args], capture_output=True, text=True, timeout=300, env=full_env, cwd=ROOT)


def _docs_example(target: Path) -> Path:
    """The two files of docs/plugins.md's complete plugin, written as a user would copy them."""
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = page[page.index("## A complete plugin in two files") :]
    toml = re.search(r"`pyproject.toml`:\s*```toml\n(.*?)```", section, re.S).group(1)
    module = re.search(r"`rnnkit_torchrnn.py`:\s*```python\n(.*?)```", section, re.S).group(1)
    package = target / "rnnkit-torchrnn"
    package.mkdir()
    (package / "pyproject.toml").write_text(toml)
    (package / "rnnkit_torchrnn.py").write_text(module)
    return package


def test_the_docs_document_every_model_kind():
    from rnnkit.kinds import KINDS

    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    for name, kind in KINDS.items():
        assert name in rows, f"docs/plugins.md has no row for the model kind {name}"
        assert all(f"`{dim}`" in rows[name] for dim in kind.dims), rows[name]


CLASH_TOML = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"
[project]
name = "rnnkit-clash"
version = "0.0.1"
[project.entry-points."rnnkit.models"]
lstm = "rnnkit_clash:MODEL"
broken = "rnnkit_clash:MISSING"
[tool.setuptools]
py-modules = ["rnnkit_clash"]
"""
CLASH_MODULE = (
    "from rnnkit.models.rnn import MODEL as _RNN\nimport dataclasses\nMODEL = dataclasses.replace(_RNN, name='lstm')\n"
)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    example = _docs_example(tmp)
    clash = tmp / "rnnkit-clash"
    clash.mkdir()
    (clash / "pyproject.toml").write_text(CLASH_TOML)
    (clash / "rnnkit_clash.py").write_text(CLASH_MODULE)
    _pip("install", "--no-deps", "--no-build-isolation", str(example), str(clash))
    yield
    _pip("uninstall", "-y", "rnnkit-torchrnn", "rnnkit-clash")


def test_a_plugin_written_from_the_docs_installs_and_works(installed_plugins, tmp_path):
    listed = _rnnkit("models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["torchrnn"]["distribution"] == "rnnkit-torchrnn" and rows["torchrnn"]["status"] == "ok"
    assert rows["torchrnn"]["parameters"] == 64 * (10 + 64 + 2) + 10 * 65
    trained = _rnnkit(
        "train",
        "examples/palindrome-rnn.yaml",
        "model.name=torchrnn",
        "train.max_steps=5",
        "task.length=5",
        "--device",
        "cpu",
        "--out-dir",
        str(tmp_path),
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "palindrome-rnn" / "meta.json").read_text())["model"] == "torchrnn"


def test_a_misbehaving_plugin_is_isolated(installed_plugins):
    listed = _rnnkit("models", "--json")
    assert listed.returncode == 0
    all_rows = json.loads(listed.stdout)
    rows = {r["name"]: r for r in all_rows if r["status"] == "ok"}
    failed = {r["name"]: r for r in all_rows if r["status"] != "ok"}
    assert rows["lstm"]["distribution"] == "rnnkit"  # the built-in wins
    assert failed["lstm"]["distribution"] == "rnnkit-clash"
    assert failed["broken"]["status"].startswith("failed") and failed["broken"]["distribution"] == "rnnkit-clash"
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert any("rnnkit-clash" in w and "built-in" in w for w in warnings)
    assert any("rnnkit-clash" in w and "broken" in w and "AttributeError" in w for w in warnings)
    assert _rnnkit("train", "examples/palindrome-lstm.yaml", "--print-config").returncode == 0


def test_environment_switches(installed_plugins):
    raised = _rnnkit("models", env={"RNNKIT_RAISE_PLUGIN_ERRORS": "1"})
    assert raised.returncode == 1 and "error:" in raised.stderr and "rnnkit-clash" in raised.stderr
    assert "Traceback" not in raised.stderr
    builtins = _rnnkit("models", "--json", env={"RNNKIT_DISABLE_PLUGINS": "1"})
    assert builtins.returncode == 0 and "warning" not in builtins.stderr
    assert {r["distribution"] for r in json.loads(builtins.stdout)} == {"rnnkit"}


def test_listing_models_imports_no_torch_geometric():
    code = (
        "import sys\nfrom rnnkit.models_table import list_models\nlist_models([])\n"
        "print('torch_geometric' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# The plugins in plugins/ are installed by the README's commands and .ci/run.


def test_gru_plugin_in_a_sweep(tmp_path):
    pytest.importorskip("rnnkit_gru")
    result = _rnnkit(
        "sweep",
        "--models",
        "gru,lstm",
        "--lengths",
        "5-8",
        "--workers",
        "1",
        "--no-progress",
        "-s",
        "train.max_steps=30",
        "-s",
        "model.hidden_size=16",
        "-s",
        "device=cpu",
        "--out",
        str(tmp_path / "sweep"),
    )
    assert result.returncode == 0, result.stderr
    assert "gru" in result.stdout
    (run_dir,) = (tmp_path / "sweep").glob("model=gru_length=8_seed=0_*")
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()


def test_graphsage_plugin_beside_the_gcns(tmp_path):
    pytest.importorskip("rnnkit_graphsage")
    result = _rnnkit(
        "gcn",
        "--dataset",
        "karate",
        "--impl",
        "dense,pyg,graphsage",
        "--runs",
        "1",
        "--epochs",
        "10",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "gcn"),
    )
    assert result.returncode == 0, result.stderr
    impls = [r["impl"] for r in json.loads((tmp_path / "gcn" / "results.json").read_text())["results"]]
    assert impls == ["dense", "pyg", "graphsage"]


def test_chargru_trains_samples_and_completes(tmp_path):
    pytest.importorskip("rnnkit_gru")
    corpus = tmp_path / "small.txt"
    corpus.write_text("Poirot said that the little grey cells would find the answer. " * 80)
    trained = _rnnkit(
        "train",
        "examples/christie.yaml",
        "model.name=chargru",
        "model.hidden_size=16",
        "model.embedding_size=8",
        "train.max_steps=20",
        "train.batch_size=8",
        "train.eval_every=10",
        "--text",
        str(corpus),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out-dir",
        str(tmp_path),
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "christie"
    assert json.loads((run / "meta.json").read_text())["model"] == "chargru"
    sampled = _rnnkit("sample", str(run), "--length", "30", "--seed", "0")
    assert sampled.returncode == 0 and len(sampled.stdout.strip()) > 0, sampled.stderr
    completed = _rnnkit("complete", "Poirot said", "--checkpoint", str(run), "--length", "20")
    assert completed.returncode == 0 and completed.stdout.startswith("Poirot said"), completed.stderr


def test_repository_plugins_are_listed():
    pytest.importorskip("rnnkit_gru")
    pytest.importorskip("rnnkit_graphsage")
    rows = {r["name"]: r for r in json.loads(_rnnkit("models", "--json").stdout) if r["status"] == "ok"}
    assert rows["gru"]["distribution"] == "rnnkit-gru" and rows["chargru"]["kinds"] == ["char-lm"]
    assert rows["graphsage"]["distribution"] == "rnnkit-graphsage"
    assert rows["gru"]["parameters"] == 3 * 128 * (10 + 128 + 2) + 10 * 129
