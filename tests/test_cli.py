"""The command line as a user drives it: outputs, files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import assert_one_line_error, run

TINY = [
    "train.max_steps=20",
    "train.batch_size=16",
    "train.log_every=5",
    "train.eval_batches=1",
    "model.hidden_size=8",
    "task.length=5",
    "--device",
    "cpu",
]


def test_help_and_version():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "sweep", "plot", "models"):
        assert command in result.output
        assert run(command, "--help").exit_code == 0
    assert run("--version").output.strip() == "rnnkit 0.1.0"


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv = ['rnnkit', '--help']\n"
        "from rnnkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().endswith("NO-TORCH"), proc.stderr


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "rnnkit", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "rnnkit" in proc.stdout


def test_train_end_to_end_and_plot(tmp_path):
    result = run("train", "examples/palindrome-lstm.yaml", *TINY, "--out-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "palindrome-lstm"
    assert str(run_dir) in result.stdout and "steps" in result.stdout
    assert {"config.yaml", "metrics.jsonl", "checkpoint", "meta.json"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((run_dir / "meta.json").read_text())["steps"] == 20

    again = run("train", "examples/palindrome-lstm.yaml", *TINY, "--out-dir", str(tmp_path), "--no-progress")
    assert again.exit_code == 0 and (tmp_path / "palindrome-lstm-2").is_dir()  # nothing overwritten

    plotted = run("plot", str(run_dir))
    assert plotted.exit_code == 0 and (run_dir / "curves.png").stat().st_size > 1000
    svg = tmp_path / "curves.svg"
    assert run("plot", str(run_dir), "--out", str(svg)).exit_code == 0 and svg.read_text().startswith("<?xml")


def test_print_config_shows_the_resolved_spec():
    result = run("train", "examples/palindrome-rnn.yaml", "train.lr=0.02", "--seed", "7", "--print-config")
    assert result.exit_code == 0
    assert "lr: 0.02" in result.stdout and "seed: 7" in result.stdout and "early_stop:" in result.stdout


def test_models_lists_builtins_with_parameter_counts():
    result = run("models", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    h, i, d = 128, 10, 10
    assert rows["lstm"]["parameters"] == 4 * h * (i + h + 1) + d * (h + 1)
    assert rows["lstm"]["distribution"] == "rnnkit" and "sequence-classification" in rows["lstm"]["kinds"]
    assert rows["lstm"]["tasks"] == rows["lstm"]["kinds"]  # deprecated key, kept for one release
    small = json.loads(run("models", "--json", "-s", "hidden_size=4", "--input-size", "1").stdout)
    assert {r["name"]: r["parameters"] for r in small}["lstm"] == 4 * 4 * (1 + 4 + 1) + 10 * 5
    table = run("models")
    assert table.exit_code == 0 and "72,458" in table.stdout
    assert "kinds" in table.stdout and "Christie vocabulary (88)" in table.stdout


def test_sweep_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--lengths",
        "4-5",
        "--workers",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "-s",
        "train.max_steps=10",
        "-s",
        "model.hidden_size=8",
        "-s",
        "train.batch_size=16",
        "-s",
        "device=cpu",
    ]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert (out / "results.csv").is_file() and (out / "accuracy_vs_length.png").is_file()
    assert "Best accuracy" in result.stdout
    rerun = run(*args)
    assert rerun.exit_code == 0 and rerun.stderr.count("skipped (done)") == 4
    assert run("plot", str(out)).exit_code == 0


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2 for usage errors, 1 for runtime failures


def test_missing_spec():
    assert_one_line_error(run("train", "no-such.yaml"), 2, "not found", "no-such.yaml")


def test_malformed_spec(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: lstm\n  hidden_size: [12\ntrain: {}\n")
    assert_one_line_error(run("train", str(bad)), 2, "malformed YAML", "line")


def test_spec_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert_one_line_error(run("train", str(bad)), 2, "mapping")


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.learing_rate=0.1", ["train.learing_rate: unknown key", "Valid keys", "lr"]),
        ("train.lr=fast", ["train.lr", "must be a number"]),
        ("train.lr=-0.1", ["train.lr", "greater than 0"]),
        ("train.lr=0", ["train.lr", "greater than 0"]),
        ("train.batch_size=0", ["train.batch_size", "greater than 0"]),
        ("model.hidden_size=0", ["model.hidden_size", "greater than 0"]),
        ("model.name=lstn", ["unknown model 'lstn'", "Did you mean 'lstm'"]),
        ("trainlr", ["key.sub=value"]),
    ],
)
def test_bad_overrides(override, words):
    assert_one_line_error(run("train", "examples/palindrome-lstm.yaml", override), 2, *words)


def test_model_of_another_kind(monkeypatch):
    from dataclasses import dataclass

    from rnnkit.registry import ModelDef, default_registry

    @dataclass
    class Cfg:
        hidden: int = 4

    default_registry().add(ModelDef("graph-only", ("node-classification",), Cfg, lambda c, **k: None))
    try:
        result = run("train", "examples/palindrome-lstm.yaml", "model.name=graph-only")
        assert_one_line_error(result, 2, "model 'graph-only' is not a sequence-classification model")
    finally:
        del default_registry().entries["graph-only"]


@pytest.mark.parametrize("lengths", ["35-5", "0-3", "abc"])
def test_bad_lengths(lengths, tmp_path):
    assert_one_line_error(run("sweep", "--lengths", lengths, "--out", str(tmp_path)), 2, "lengths")


def test_bad_sweep_values(tmp_path):
    assert_one_line_error(run("sweep", "--models", "rnn,gru2", "--out", str(tmp_path)), 2, "unknown model 'gru2'")
    assert_one_line_error(run("sweep", "--workers", "0", "--out", str(tmp_path)), 2, "--workers")
    assert_one_line_error(run("sweep", "--seeds", "0", "--out", str(tmp_path)), 2, "--seeds")
    assert_one_line_error(run("sweep", "-s", "train.lr=-1", "--out", str(tmp_path)), 2, "train.lr")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("train", "examples/palindrome-lstm.yaml", *TINY, "--out-dir", str(blocker / "runs"))
    assert_one_line_error(result, 1, "cannot create run directory")
    result = run("sweep", "--lengths", "5", "--out", str(blocker / "sweep"))
    assert_one_line_error(result, 1, "cannot create run directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_output_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    result = run("train", "examples/palindrome-lstm.yaml", *TINY, "--out-dir", str(ro))
    assert_one_line_error(result, 1, "cannot create run directory")


def test_plot_errors(tmp_path):
    assert_one_line_error(run("plot", str(tmp_path / "nothing")), 2, "does not exist")
    assert_one_line_error(run("plot", str(tmp_path)), 2, "is not a sweep directory")


def test_cuda_requested_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("train", "examples/palindrome-lstm.yaml", *TINY[:-2], "--device", "cuda", "--out-dir", str(tmp_path))
    assert_one_line_error(result, 1, "CUDA is not available")
    assert not any(tmp_path.iterdir())


def test_bad_device_value():
    assert_one_line_error(
        run("train", "examples/palindrome-lstm.yaml", "--device", "tpu"), 2, "device", "auto, cpu, cuda"
    )


def test_ctrl_c_during_train_exits_130_and_keeps_the_weights(tmp_path, monkeypatch):
    from rnnkit.training import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    result = run("train", "examples/palindrome-lstm.yaml", *TINY, "--out-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 130
    assert "interrupted at step 0" in result.stderr and "Traceback" not in result.output
    meta = json.loads((tmp_path / "palindrome-lstm" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["final_accuracy"] is None


def test_broken_plugin_is_a_warning_and_the_rest_works(monkeypatch):
    from importlib import metadata

    from rnnkit.registry import ModelEntry, default_registry

    registry = default_registry()
    broken = metadata.EntryPoint("broken", "rnnkit_missing_plugin:MODEL", "rnnkit.models")
    monkeypatch.setitem(registry.entries, "broken", ModelEntry("broken", broken.value, "rnnkit-broken", "0.1", broken))
    monkeypatch.setattr(registry, "failures", [])
    result = run("models", "--json")
    assert result.exit_code == 0
    assert {r["name"] for r in json.loads(result.stdout)} >= {"rnn", "lstm"}
    assert "warning:" in result.stderr and "rnnkit-broken" in result.stderr and "broken" in result.stderr
    trained = run("train", "examples/palindrome-lstm.yaml", "--print-config")
    assert trained.exit_code == 0
