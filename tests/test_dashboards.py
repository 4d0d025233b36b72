"""Dashboards and provenance: TensorBoard event files read back with tensorboard's own reader (a run, a
resumed run, a sweep, text samples), Weights & Biases in offline mode read back from its run file, the
``log:`` section of a spec, and the provenance that meta.json records."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.dashboards import scalars
from rnnkit.errors import SpecError, UsageError
from rnnkit.provenance import git_commit, mark_ended, resumed_provenance
from rnnkit.rundir import read_jsonl
from rnnkit.runner import spec_differences, train_run
from rnnkit.spec import LogConfig, load_spec, resolve_spec
from rnnkit.sweep import plan_sweep, run_sweep, spec_hash
from rnnkit.training import Callback
from tests.helpers import assert_one_line_error, run, small_text, tiny_spec

TB = {"log.tensorboard": True}


def board(run_dir: Path):
    """TensorBoard's own reader over ``run_dir`` (the test is skipped where TensorBoard is not installed)."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalar_steps(accumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


class Boom(Callback):
    """Fails the run after step ``at`` (a crash that leaves the steps since the last checkpoint logged)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, stats) -> None:
        if stats.step == self.at:
            raise RuntimeError(f"boom at step {stats.step}")


@pytest.fixture
def tensorboard():
    return pytest.importorskip("tensorboard")


def test_a_run_logs_every_metric_to_tensorboard(tmp_path, tensorboard):
    spec = resolve_spec(tiny_spec({**TB, "out_dir": str(tmp_path), "train.eval_every": 10, "train.log_every": 5}))
    meta = train_run(spec)
    run_dir = Path(meta["run_dir"])
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    records, _ = read_jsonl(run_dir / "metrics.jsonl")
    acc = board(run_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "train/lr", "train/grad_norm", "eval/loss", "eval/accuracy"} <= tags
    for key in ("loss", "accuracy", "lr", "grad_norm"):
        logged = [(r["step"], r[key]) for r in records if key in r and "eval_loss" not in r]
        read = [(e.step, e.value) for e in acc.Scalars(f"train/{key}")]
        assert [s for s, _ in read] == [s for s, _ in logged] == list(range(5, 31, 5))
        assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert scalar_steps(acc, "eval/loss") == [10, 20, 30]
    assert "spec/text_summary" in acc.Tags()["tensors"]


def test_a_text_run_logs_bits_per_character_and_its_samples(tmp_path, tensorboard):
    text = small_text(tmp_path)
    spec = load_spec(
        "examples/christie.yaml",
        [
            f"task.text={text}",
            "model.hidden_size=8",
            "model.embedding_size=4",
            "train.max_steps=12",
            "train.batch_size=4",
            "train.eval_every=6",
            "train.eval_chars=300",
            "train.sample_every=6",
            "train.sample_length=20",
            "train.log_every=3",
            "device=cpu",
            f"out_dir={tmp_path / 'runs'}",
            "log.tensorboard=true",
        ],
    )
    run_dir = Path(train_run(spec)["run_dir"])
    acc = board(run_dir)
    assert scalar_steps(acc, "eval/bpc") == [6, 12]
    assert "eval/chars" not in acc.Tags()["scalars"]  # a count, not a metric
    samples = acc.Tensors("samples/text_summary")
    assert [e.step for e in samples] == [6, 12]
    assert all(len(e.tensor_proto.string_val[0].decode().strip()) > 0 for e in samples)


def test_a_resumed_run_continues_its_board_without_duplicates(tmp_path, tensorboard):
    overrides = {**TB, "out_dir": str(tmp_path), "train.max_steps": 40, "train.log_every": 5}
    overrides |= {"train.checkpoint_every": 20, "train.eval_every": 10}
    spec = resolve_spec(tiny_spec(overrides))
    with pytest.raises(RuntimeError, match="boom"):
        train_run(spec, callbacks=[Boom(27)])  # steps 25 logged, checkpoint at 20
    run_dir = tmp_path / "tiny"
    assert scalar_steps(board(run_dir), "train/loss") == [5, 10, 15, 20, 25]
    train_run(spec, run_dir, resume=True)
    acc = board(run_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    steps = scalar_steps(acc, "train/loss")
    assert steps == list(range(5, 41, 5))  # step 25 once: the first process's is purged
    records, _ = read_jsonl(run_dir / "metrics.jsonl")
    logged = [r["loss"] for r in records if "loss" in r]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
    assert scalar_steps(acc, "eval/loss") == [10, 20, 30, 40]
    assert len(acc.Tensors("spec/text_summary")) == 1


def test_a_board_added_when_resuming_starts_at_the_resumed_step(tmp_path, tensorboard):
    spec = resolve_spec(tiny_spec({"out_dir": str(tmp_path), "train.log_every": 5, "train.max_steps": 20}))
    run_dir = Path(train_run(spec)["run_dir"])
    assert not list(run_dir.glob("events.out.tfevents.*"))
    more = resolve_spec(tiny_spec({**TB, "out_dir": str(tmp_path), "train.log_every": 5, "train.max_steps": 30}))
    train_run(more, run_dir, resume=True)
    acc = board(run_dir)
    assert scalar_steps(acc, "train/loss") == [25, 30] and len(acc.Tensors("spec/text_summary")) == 1


def test_a_new_run_drops_the_events_of_an_attempt_that_never_reached_a_checkpoint(tmp_path, tensorboard):
    spec = resolve_spec(tiny_spec({**TB, "out_dir": str(tmp_path), "train.log_every": 5}))
    with pytest.raises(RuntimeError, match="boom"):
        train_run(spec, callbacks=[Boom(12)])
    run_dir = tmp_path / "tiny"
    assert scalar_steps(board(run_dir), "train/loss") == [5, 10]
    train_run(spec, run_dir)  # what a sweep does with a run that has no checkpoint: start it again
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert scalar_steps(board(run_dir), "train/loss") == list(range(5, 31, 5))


def test_a_sweep_writes_one_tensorboard_run_per_sweep_run(tmp_path, tensorboard):
    plan, _ = plan_sweep(
        None,
        lengths="4",
        models="rnn,lstm",
        out=tmp_path / "sweep",
        overrides=["train.max_steps=10", "train.log_every=5", "model.hidden_size=8", "device=cpu"]
        + ["log.tensorboard=true"],
    )
    rows = run_sweep(plan, workers=1)
    assert all(r["status"] == "max_steps" for r in rows)
    event_multiplexer = pytest.importorskip("tensorboard.backend.event_processing.event_multiplexer")
    multiplexer = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "sweep"))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == sorted(Path(r["run_dir"]).name for r in rows)
    for name in multiplexer.Runs():
        assert [e.step for e in multiplexer.Scalars(name, "train/loss")] == [5, 10]


def test_a_missing_tensorboard_is_one_line_naming_the_extra_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    spec = resolve_spec(tiny_spec({**TB, "out_dir": str(tmp_path / "runs")}))
    with pytest.raises(UsageError, match=r'pip install "rnnkit\[tensorboard\]"'):
        train_run(spec)
    assert not (tmp_path / "runs").exists()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec({"out_dir": str(tmp_path / "runs")})))
    result = run("train", str(spec_file), "log.tensorboard=true", "--no-progress")
    assert_one_line_error(result, 2, 'pip install "rnnkit[tensorboard]"')


def test_scalars_name_training_and_validation_metrics():
    record = {"step": 5, "elapsed": 1.0, "loss": 0.5, "lr": 1e-3, "eval_bpc": 2.0, "eval_chars": 100}
    assert scalars(record) == {"train/loss": 0.5, "train/lr": 1e-3, "eval/bpc": 2.0}
    assert scalars({"step": 1, "loss": float("nan"), "flag": True, "name": "x"}) == {}


def _wandb_records(path: Path) -> list:
    """The records of a W&B run file (LevelDB's log format: 32 KiB blocks of checksummed chunks)."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data = path.read_bytes()
    position, chunk, records = 7, b"", []  # after the ":W&B" header
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += left - 7
            continue
        chunk += data[position : position + length]
        position += length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_weights_and_biases_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = resolve_spec(
        tiny_spec({"log.wandb": True, "log.wandb_project": "rnnkit-test", "out_dir": str(tmp_path / "runs")})
        | {"train": {**tiny_spec()["train"], "eval_every": 10}}
    )
    meta = train_run(spec)
    files = list((tmp_path / "wandb_dir").glob(f"wandb/offline-run-*-{meta['run_id']}/run-{meta['run_id']}.wandb"))
    assert len(files) == 1, list((tmp_path / "wandb_dir").rglob("*"))
    records = _wandb_records(files[0])
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].run_id == meta["run_id"] and runs[0].project == "rnnkit-test"
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            history.setdefault(r.history.step.num, {}).update(items)
    assert [s for s, h in sorted(history.items()) if "train/loss" in h] == [10, 20, 30]
    assert [s for s, h in sorted(history.items()) if "eval/accuracy" in h] == [10, 20, 30]
    records_logged, _ = read_jsonl(Path(meta["run_dir"]) / "metrics.jsonl")
    assert history[30]["train/loss"] == pytest.approx(records_logged[-2]["loss"])


# ---------------------------------------------------------------------------------------------
# The log section of a spec


def test_the_log_section_is_validated_and_written_only_when_used():
    plain = resolve_spec(tiny_spec())
    assert plain.log == LogConfig() and "log" not in plain.to_dict()  # old specs and their hashes unchanged
    logged = resolve_spec(tiny_spec({"log.tensorboard": True}))
    assert logged.to_dict()["log"] == {"tensorboard": True, "wandb": False, "wandb_project": "rnnkit"}
    assert resolve_spec(logged.to_dict()).log.tensorboard
    assert spec_hash(plain) == spec_hash(resolve_spec(plain.to_dict()))
    assert spec_differences(plain.to_dict(), logged.to_dict()) == []  # logging changes no run
    assert spec_differences(logged.to_dict(), plain.to_dict()) == []
    with pytest.raises(SpecError, match="log.tensorbord.*tensorboard"):
        resolve_spec(tiny_spec({"log.tensorbord": True}))
    with pytest.raises(SpecError, match="log.wandb"):
        resolve_spec(tiny_spec({"log.wandb": "sometimes"}))
    with pytest.raises(SpecError, match="log.wandb_project"):
        resolve_spec(tiny_spec({"log.wandb_project": " "}))
    with pytest.raises(SpecError, match="log"):
        resolve_spec(tiny_spec() | {"log": [1]})


# ---------------------------------------------------------------------------------------------
# Provenance


def _fake_repository(folder: Path, sha: str) -> None:
    """A git repository as git reads it for `rev-parse HEAD` (a branch pointing at ``sha``)."""
    (folder / ".git" / "refs" / "heads").mkdir(parents=True)
    (folder / ".git" / "objects").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    (folder / ".git" / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")


def test_meta_json_records_provenance(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec({"out_dir": str(tmp_path / "runs")})))
    meta = train_run(load_spec(spec_file))
    record = json.loads((Path(meta["run_dir"]) / "meta.json").read_text())
    p = record["provenance"]
    assert p["rnnkit_version"] == record["rnnkit_version"] and p["torch_version"] == torch.__version__
    assert p["command"] == sys.argv and p["device"] == "cpu" and p["threads"] == torch.get_num_threads()
    assert p["host"] and p["python_version"] and p["spec_file"] == str(spec_file.absolute())
    assert p["started_at"] <= p["ended_at"] and p["started_at"].endswith("+00:00")
    assert "git_commit" not in p  # tmp_path is in no repository
    checkpoint_meta = json.loads((Path(meta["run_dir"]) / "checkpoint" / "meta.json").read_text())
    assert checkpoint_meta["provenance"] == p


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_git_commit_of_the_spec_s_repository(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    _fake_repository(tmp_path / "project", sha)
    (tmp_path / "project" / "specs").mkdir()
    spec_file = tmp_path / "project" / "specs" / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec({"out_dir": str(tmp_path / "runs")})))
    meta = train_run(load_spec(spec_file))
    assert meta["provenance"]["git_commit"] == sha
    assert git_commit(tmp_path) is None and git_commit(tmp_path / "no-such-folder") is None


def test_a_git_that_hangs_or_is_missing_is_left_out(tmp_path, monkeypatch):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout", 0))

    monkeypatch.setattr(subprocess, "run", hang)
    assert git_commit(tmp_path) is None

    def missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    assert git_commit(tmp_path) is None


def test_a_resumed_run_keeps_its_first_start_and_lists_each_resume(tmp_path):
    spec = resolve_spec(tiny_spec({"out_dir": str(tmp_path), "train.checkpoint_every": 10}))
    with pytest.raises(RuntimeError, match="boom"):
        train_run(spec, callbacks=[Boom(15)])
    run_dir = tmp_path / "tiny"
    failed = json.loads((run_dir / "meta.json").read_text())
    assert failed["status"] == "failed" and failed["provenance"]["ended_at"]
    meta = train_run(spec, run_dir, resume=True)
    p = meta["provenance"]
    assert p["started_at"] == failed["provenance"]["started_at"]
    assert len(p["resumed_at"]) == 1 and p["resumed_at"][0] <= p["ended_at"]


def test_provenance_helpers_tolerate_old_records():
    current = {"started_at": "2026-01-02T00:00:00+00:00"}
    assert resumed_provenance(current, None) == current
    assert resumed_provenance(current, {"started_at": 3}) == current
    earlier = {"started_at": "2026-01-01T00:00:00+00:00", "resumed_at": "garbage"}
    assert resumed_provenance(current, earlier)["resumed_at"] == ["2026-01-02T00:00:00+00:00"]
    assert mark_ended({"status": "x"}) == {"status": "x"}


def test_gcn_writes_one_tensorboard_run_per_implementation_and_seed(tmp_path, tensorboard):
    out = tmp_path / "gcn"
    result = run(
        "gcn", "--dataset", "karate", "--impl", "dense,pyg", "--runs", "1", "--epochs", "4", "--out", str(out),
        "--tensorboard", "--no-progress", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    event_multiplexer = pytest.importorskip("tensorboard.backend.event_processing.event_multiplexer")
    multiplexer = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(out))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["dense-s0", "pyg-s0"]
    for name in multiplexer.Runs():
        assert [e.step for e in multiplexer.Scalars(name, "eval/accuracy")][-1] == 4


def test_a_gcn_run_spec_with_a_board_turns_it_on_for_every_run(tmp_path):
    from rnnkit.gcn import load_gcn_spec, run_spec

    spec_file = tmp_path / "g.yaml"
    spec_file.write_text("task: {name: graph, dataset: karate}\nmodel: {name: gcn-pyg}\nlog: {tensorboard: true}\n")
    comparison = load_gcn_spec(spec_file, {})
    assert comparison.tensorboard and not comparison.wandb
    assert run_spec(comparison, "pyg", 0, tmp_path).log == LogConfig(tensorboard=True)
    assert run_spec(load_gcn_spec(None, {"dataset": "karate"}), "pyg", 0, tmp_path).log == LogConfig()
