"""Faults injected on purpose: a kill at every file operation of a run and of a sweep, signals to a
sweep, a killed sweep or worker, two sweeps on one directory, a run locked by another process, a
damaged checkpoint, a copied checkpoint, a partial metrics line. Each checks a promise of
docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnkit.checkpoint import CHECKPOINT_LINK, STATE_FILE, checkpoint_dir
from rnnkit.errors import CheckpointError, RunLockedError
from rnnkit.rundir import RunLock
from rnnkit.runner import METRICS_FILE, train_run
from rnnkit.spec import resolve_spec
from rnnkit.sweep import SweepPlan, read_results, run_sweep
from tests.helpers import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "crash_driver.py"


def _scratch(tmp_path: Path) -> Path:
    """A work folder on tmpfs where there is one (hundreds of fsyncs cost nothing there)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        return Path(tempfile.mkdtemp(dir=shm, prefix="rnnkit-crash-"))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "sweep"])
def test_a_kill_at_every_file_operation_is_resumable_and_changes_nothing(tmp_path, mode):
    import shutil

    work = _scratch(tmp_path)
    try:
        proc = subprocess.run(
            [sys.executable, str(DRIVER), mode, str(work)], capture_output=True, text=True, timeout=400, cwd=ROOT
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kill_points"] == result["file_ops"] >= 60, result
    assert result["failures"] == [], result["failures"][:5]


# ---------------------------------------------------------------------------------------------
# One run


def test_a_locked_run_is_refused_naming_its_owner(tmp_path):
    spec = resolve_spec(tiny_spec())
    run_dir = tmp_path / "run"
    train_run(spec, run_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from rnnkit.rundir import RunLock; import time; lock = RunLock.acquire({str(run_dir)!r}); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} on "):
            train_run(resolve_spec(tiny_spec({"train.max_steps": 60})), run_dir, resume=True)
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process: nothing to clean by hand
    assert train_run(resolve_spec(tiny_spec({"train.max_steps": 60})), run_dir, resume=True)["steps"] == 60


def test_two_new_runs_of_one_name_get_two_directories(tmp_path):
    first = RunLock.try_acquire(tmp_path / "tiny")
    try:
        meta = train_run(resolve_spec(tiny_spec({"out_dir": str(tmp_path)})))
    finally:
        first.release()
    assert meta["run_dir"] == str(tmp_path / "tiny-2")


@pytest.mark.parametrize("damage", [b"", b"garbage, not a zip file", "truncate"])
def test_a_damaged_trainer_state_is_one_clear_error(tmp_path, damage):
    spec = resolve_spec(tiny_spec({"train.checkpoint_every": 10, "train.max_steps": 30}))
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _interrupted_run(spec, run_dir, at_step=15)
    state = checkpoint_dir(run_dir) / STATE_FILE
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncate" else damage)
    with pytest.raises(CheckpointError) as info:
        train_run(spec, run_dir, resume=True)
    message = str(info.value)
    assert "state.pt" in message and "\n" not in message and "weights_only" not in message


def test_a_checkpoint_copied_from_another_run_is_refused(tmp_path):
    import shutil

    spec = resolve_spec(tiny_spec({"train.checkpoint_every": 10, "train.max_steps": 30}))
    for name in ("a", "b"):
        with pytest.raises(KeyboardInterrupt):
            _interrupted_run(spec, tmp_path / name, at_step=15)
    b = tmp_path / "b"
    target = checkpoint_dir(b).resolve()
    shutil.rmtree(target)
    shutil.copytree(checkpoint_dir(tmp_path / "a").resolve(), target)  # same shapes, same spec, another run
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train_run(spec, b, resume=True)


def test_a_partial_metrics_line_is_dropped_with_a_note(tmp_path):
    spec = resolve_spec(tiny_spec({"train.checkpoint_every": 10, "train.max_steps": 30}))
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _interrupted_run(spec, run_dir, at_step=15)
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write('{"step": 16, "lo')
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        meta = train_run(spec, run_dir, resume=True)
    assert meta["steps"] == 30
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_a_new_run_never_overwrites_a_run(tmp_path):
    spec = resolve_spec(tiny_spec())
    train_run(spec, tmp_path / "run")
    before = (tmp_path / "run" / CHECKPOINT_LINK / "model.safetensors").read_bytes()
    with pytest.raises(Exception, match="already holds a run"):
        train_run(spec, tmp_path / "run")
    assert (tmp_path / "run" / CHECKPOINT_LINK / "model.safetensors").read_bytes() == before


def test_a_run_that_fails_before_its_first_step_is_marked_failed(tmp_path, monkeypatch):
    from rnnkit.training import Trainer

    def boom(self):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(Trainer, "train_step", boom)
    with pytest.raises(RuntimeError):
        train_run(resolve_spec(tiny_spec()), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert record["status"] == "failed" and "simulated failure" in record["error"]


def _interrupted_run(spec, run_dir: Path, at_step: int) -> None:
    """Train ``spec`` into ``run_dir`` and stop it as Ctrl-C would, after step ``at_step``."""
    from rnnkit.training import Trainer

    original = Trainer.train_step

    def step(self):
        if self.step == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    Trainer.train_step = step
    try:
        train_run(spec, run_dir)
    finally:
        Trainer.train_step = original


# ---------------------------------------------------------------------------------------------
# Sweeps in their own processes

SWEEP_SPEC = """
name: life
models: rnn,lstm
lengths: "4,5"
workers: 2
spec:
  device: cpu
  model: {hidden_size: 8}
  train: {batch_size: 16, max_steps: %d, log_every: 50, checkpoint_every: 50, eval_batches: 1, plateau: {patience: 0},
          early_stop: {threshold: 0}}
"""


def _sweep_file(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP_SPEC % steps)
    return path


def _start_sweep(tmp_path: Path, steps: int, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnnkit",
            "sweep",
            str(_sweep_file(tmp_path, steps)),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait_for_training(out: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in out.glob("*/metrics.jsonl")):
            return
        time.sleep(0.2)
    raise AssertionError("no run started training")


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "State:\tZ" in status.read_text())


@pytest.mark.slow
def test_sigterm_stops_a_sweep_like_ctrl_c_and_its_workers_with_it(tmp_path):
    out = tmp_path / "out"
    proc = _start_sweep(tmp_path, 100_000, out)
    _wait_for_training(out)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert _gone_within(workers, 5)
    statuses = {r["status"] for r in read_results(out / "results.csv")}
    assert "interrupted" in statuses and "failed" not in statuses


@pytest.mark.slow
def test_workers_exit_when_the_sweep_is_killed(tmp_path):
    out = tmp_path / "out"
    proc = _start_sweep(tmp_path, 100_000, out)
    _wait_for_training(out)
    workers = _children(proc.pid)
    assert workers
    proc.kill()
    proc.wait()
    assert _gone_within(workers, 5), "workers outlived the sweep by more than 5 s"


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_own_run(tmp_path):
    out = tmp_path / "out"
    proc = _start_sweep(tmp_path, 3000, out)
    _wait_for_training(out)
    time.sleep(0.5)
    workers = [w for w in _children(proc.pid) if "resource_tracker" not in Path(f"/proc/{w}/cmdline").read_text()]
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr  # one run failed: the sweep says so
    rows = read_results(out / "results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "worker process died (killed by SIGKILL)" in failed[0]["error"]
    assert sum(r["status"] == "max_steps" for r in rows) == 3


@pytest.mark.slow
def test_two_sweeps_on_one_directory_train_each_run_once(tmp_path):
    out = tmp_path / "out"
    first = _start_sweep(tmp_path, 300, out, "--workers", "1")
    second = _start_sweep(tmp_path, 300, out, "--workers", "1")
    for proc in (first, second):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    runs = list(out.glob("model=*"))
    assert len(runs) == 4
    for run in runs:
        records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
        final_evals = [r for r in records if "eval_accuracy" in r]
        assert len(final_evals) == 1, f"{run.name} was trained more than once"
    rows = read_results(out / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "max_steps" for r in rows)


def test_a_sweep_rerun_with_other_settings_overwrites_nothing(tmp_path):
    base = {"device": "cpu", "model": {"hidden_size": 8}, "train": {"batch_size": 16, "max_steps": 6, "log_every": 3}}
    plan = SweepPlan(models=["rnn"], lengths=[4], out=tmp_path / "s", base=base)
    run_sweep(plan, workers=1)
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "s").rglob("*") if p.is_file())
    other = SweepPlan(models=["rnn"], lengths=[4], out=tmp_path / "s", base=base, overrides=["train.lr=0.5"])
    (row,) = run_sweep(other, workers=1)  # another spec: another directory (its hash), trained anew
    assert row["status"] == "max_steps" and len(list((tmp_path / "s").glob("model=*"))) == 2
    kept = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    for name, data in before:
        if name not in ("results.csv", "sweep.json"):
            assert any(path.name == name and kept[path] == data for path in kept), name


def test_a_solved_run_is_not_trained_again_by_resume(tmp_path):
    spec = resolve_spec(
        tiny_spec({"train.max_steps": 500, "train.early_stop.threshold": 0.3, "train.early_stop.window": 5})
    )
    meta = train_run(spec, tmp_path / "run")
    assert meta["status"] == "solved" and meta["steps"] < 500
    before = (tmp_path / "run" / CHECKPOINT_LINK / "model.safetensors").read_bytes()
    with pytest.raises(Exception, match="already finished"):
        train_run(spec, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / CHECKPOINT_LINK / "model.safetensors").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# The best weights, kept in memory and published throttled

THROTTLED = {
    "train.eval_every": 2,
    "train.checkpoint_every": 10,
    "train.max_steps": 30,
    "train.early_stop.threshold": 0,
}

#: A run of the spec given in argv[2] (JSON overrides of tiny_spec) into argv[1] whose best weights are
#: published only when flushed (before a checkpoint and at the end), SIGKILLed at the point argv[3] names.
KILLED_CHILD = """
import json, math, os, signal, sys
import torch
from rnnkit import runner
from rnnkit.checkpoint import CHECKPOINT_LINK
from rnnkit.spec import resolve_spec
from tests.helpers import tiny_spec

run_dir, overrides, where = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)  # as the tests' own runs (conftest), so that both runs compute alike
runner.Checkpointer.BEST_EVERY_S = math.inf
on_eval, publish = runner.Checkpointer.on_eval, runner.publish

def killing_on_eval(self, trainer, metrics):
    on_eval(self, trainer, metrics)
    if where == "in-memory" and trainer.step > 10 and self.best.pending is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # a better model than best/ holds is only in memory

def killing_publish(run, link, files):
    if where == "between" and link == CHECKPOINT_LINK and json.loads(files["meta.json"])["steps"] == 20:
        os.kill(os.getpid(), signal.SIGKILL)  # best/ flushed for step 20, the checkpoint of step 20 not yet
    return publish(run, link, files)

runner.Checkpointer.on_eval, runner.publish = killing_on_eval, killing_publish
runner.train_run(resolve_spec(tiny_spec(overrides)), run_dir)
"""


def _best_and_recorded(run_dir: Path) -> tuple[dict, float, int]:
    """best/'s meta, and the best validation loss and step of the checkpoint's trainer state."""
    from rnnkit.checkpoint import BEST_LINK, load_state

    best = json.loads((checkpoint_dir(run_dir, BEST_LINK) / "meta.json").read_text())
    state = load_state(checkpoint_dir(run_dir) / STATE_FILE)["trainer"]
    return best, state["best_eval_loss"], state["step"]


@pytest.mark.parametrize("where", ["in-memory", "between"])
def test_a_kill_before_the_best_weights_are_published_keeps_best_and_state_agreeing(tmp_path, where):
    """Killed while a better model is only in memory ("in-memory"), or after best/ got it but before
    the checkpoint that records it ("between"): best/ is never behind the checkpoint's recorded best
    loss, and the resumed run ends with the best/ of a run never killed, its loss the one recorded."""
    import torch

    from rnnkit.checkpoint import BEST_LINK, load_checkpoint

    spec = resolve_spec(tiny_spec(THROTTLED))
    train_run(spec, tmp_path / "reference")
    run_dir = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(run_dir), json.dumps(THROTTLED), where],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    best, recorded, step = _best_and_recorded(run_dir)
    assert step == 10
    if where == "in-memory":  # best/ is the one flushed with the checkpoint: exactly what it records
        assert best["steps"] <= 10 and best["eval_loss"] == recorded
    else:  # best/ is ahead of the checkpoint (the resumed run reaches it again), never behind
        assert 10 < best["steps"] <= 20 and best["eval_loss"] < recorded

    train_run(spec, run_dir, resume=True)
    best, recorded, step = _best_and_recorded(run_dir)
    expected, _, _ = _best_and_recorded(tmp_path / "reference")
    assert step == 30 and best["eval_loss"] == recorded == expected["eval_loss"]
    assert best["steps"] == expected["steps"]
    got = load_checkpoint(checkpoint_dir(run_dir, BEST_LINK))[0]
    want = load_checkpoint(checkpoint_dir(tmp_path / "reference", BEST_LINK))[0]
    assert all(torch.equal(got[k], want[k]) for k in want)
