"""The Ray executor on a real two-node Ray cluster on loopback: runs spread over both nodes and give the
same numbers as in this process, a rerun skips them, a run another process owns waits for its lock,
Ctrl-C saves the runs in flight (a rerun resumes them), and without Ray the error says how to get it."""

from __future__ import annotations

import _thread
import importlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from rnnkit import ray_executor  # noqa: E402
from rnnkit.checkpoint import checkpoint_dir  # noqa: E402
from rnnkit.errors import UsageError  # noqa: E402
from rnnkit.ray_executor import RayExecutor  # noqa: E402
from rnnkit.rundir import RunLock  # noqa: E402
from rnnkit.runner import FINISHED_STATUSES  # noqa: E402
from rnnkit.spec import resolve_spec  # noqa: E402
from rnnkit.sweep_job import Job, run_job  # noqa: E402


@pytest.fixture(scope="module")
def cluster(request):
    """Two Ray nodes of one CPU each on this machine, this process connected as the driver."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})

    def teardown() -> None:
        ray.shutdown()
        cluster.shutdown()

    request.addfinalizer(teardown)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    return cluster


def _spec(out: Path, name: str, model: str, seed: int, **train: Any) -> dict[str, Any]:
    train = {"max_steps": 20, "batch_size": 16, "log_every": 10, "eval_batches": 2, "lr": 0.01, **train}
    data = {
        "name": name,
        "seed": seed,
        "device": "cpu",
        "out_dir": str(out),
        "task": {"name": "palindrome", "length": 5},
        "model": {"name": model, "hidden_size": 8},
        "train": train,
    }
    return resolve_spec(data).to_dict()


def _jobs(out: Path, **train: Any) -> list[Job]:
    """Four tiny palindrome runs: rnn and lstm, seeds 0 and 1."""
    runs = [(model, seed) for model in ("rnn", "lstm") for seed in (0, 1)]
    return [
        Job(key, _spec(out, f"{model}-s{seed}", model, seed, **train), out / f"{model}-s{seed}")
        for key, (model, seed) in enumerate(runs)
    ]


def _run(executor: RayExecutor, jobs: list[Job]) -> tuple[bool, dict[int, dict[str, Any]], list[int]]:
    """Run ``jobs``; (interrupted, answer per job key, keys in the order recorded)."""
    answers: dict[int, dict[str, Any]] = {}
    order: list[int] = []

    def record(job: Job, meta: dict[str, Any]) -> None:
        assert job.key not in answers, f"job {job.key} recorded twice"
        answers[job.key] = meta
        order.append(job.key)

    interrupted = executor.run(jobs, record)
    return interrupted, answers, order


def test_runs_spread_over_both_nodes_with_the_numbers_of_this_process(cluster, tmp_path):
    jobs = _jobs(tmp_path / "ray")
    interrupted, answers, _ = _run(RayExecutor(threads=1), jobs)

    assert interrupted is False
    assert sorted(answers) == [job.key for job in jobs]
    assert all(a["status"] in FINISHED_STATUSES for a in answers.values()), answers
    assert all(not a.get("skipped") for a in answers.values())
    assert len({a["node"] for a in answers.values()}) == 2, [a["node"] for a in answers.values()]
    assert ray.is_initialized()  # a connection the executor did not open stays open

    for job in _jobs(tmp_path / "local"):
        here = run_job(job.spec, str(job.run_dir), 1)
        assert (answers[job.key]["final_accuracy"], answers[job.key]["steps"]) == (
            here["final_accuracy"],
            here["steps"],
        ), job.spec["name"]

    _, again, _ = _run(RayExecutor(threads=1), jobs)
    assert sorted(again) == sorted(answers)
    assert all(a.get("skipped") is True for a in again.values()), again
    assert {k: a["steps"] for k, a in again.items()} == {k: a["steps"] for k, a in answers.items()}


def test_a_run_another_process_owns_waits_for_its_lock(cluster, tmp_path, monkeypatch):
    jobs = _jobs(tmp_path)[:2]
    held = RunLock.acquire(jobs[0].run_dir)  # this process owns the first run for a while
    real_is_locked = ray_executor.is_locked
    looked: set[Path] = set()

    def first_look_misses(path: Path) -> bool:  # so the run is submitted and answers "busy"
        if path not in looked:
            looked.add(path)
            return False
        return real_is_locked(path)

    monkeypatch.setattr(ray_executor, "is_locked", first_look_misses)
    timer = threading.Timer(2.0, held.release)
    timer.start()
    try:
        start = time.monotonic()
        interrupted, answers, order = _run(RayExecutor(threads=1), jobs)
    finally:
        timer.cancel()
        held.release()

    assert interrupted is False
    assert sorted(answers) == [0, 1]
    assert all(a["status"] in FINISHED_STATUSES for a in answers.values()), answers
    assert order[-1] == 0 or answers[1]["seconds"] > 2.0  # the owned run went last, once its lock was free
    assert time.monotonic() - start >= 2.0
    assert looked == {job.run_dir for job in jobs}


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_the_runs_in_flight_and_a_rerun_resumes_them(cluster, tmp_path, stop):
    never_stop = {"early_stop": {"threshold": 0}, "plateau": {"patience": 0}}
    jobs = _jobs(tmp_path, max_steps=1_000_000, checkpoint_every=20, **never_stop)[:2]

    def interrupt_once_both_saved() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(checkpoint_dir(job.run_dir) is None for job in jobs):
            time.sleep(0.1)
        if any(checkpoint_dir(job.run_dir) is None for job in jobs):
            return  # the runs never got going: the test fails on their answers
        if stop == "ctrl-c":
            _thread.interrupt_main()
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_once_both_saved, daemon=True).start()
    interrupted, answers, _ = _run(RayExecutor(threads=1), jobs)

    assert interrupted is True
    assert sorted(answers) == [0, 1], answers
    assert all(a["status"] == "interrupted" and a["steps"] > 0 for a in answers.values()), [
        (a["status"], a.get("steps")) for a in answers.values()
    ]

    # the same runs with a budget a little past where they stopped: they resume (same run id) and finish
    resumed_jobs = [
        Job(job.key, _spec(tmp_path, job.spec["name"], job.spec["model"]["name"], job.spec["seed"],
                           max_steps=answers[job.key]["steps"] + 20, checkpoint_every=20, **never_stop), job.run_dir)
        for job in jobs
    ]  # fmt: skip
    interrupted, again, _ = _run(RayExecutor(threads=1), resumed_jobs)
    assert interrupted is False
    for key, meta in again.items():
        assert meta["status"] == "max_steps", meta
        assert meta["steps"] == answers[key]["steps"] + 20
        assert meta["run_id"] == answers[key]["run_id"]


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "rnnkit.ray_executor")
    module = importlib.import_module("rnnkit.ray_executor")  # imports without Ray

    with pytest.raises(UsageError) as excinfo:
        module.RayExecutor(threads=1).run(_jobs(tmp_path)[:1], lambda job, meta: None)
    assert str(excinfo.value) == '--executor ray needs Ray: pip install "rnnkit[ray]"'
