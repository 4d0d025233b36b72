"""Time the same small sweep on the local executor and on a local Ray instance, in one run.

16 palindrome runs (rnn and lstm x lengths 5-12, one seed, ``train.max_steps`` 200, the sweep's other
defaults) run twice, each time into a fresh temporary sweep directory: once with
``LocalExecutor(workers=2, threads=1)`` (two worker processes), once with ``RayExecutor(threads=1)`` on
a local Ray instance of 2 CPUs (``ray.init(num_cpus=2)``), so both run two at a time. Printed: both
wall times, the Ray time without starting and stopping Ray, and the ratios ray / local (the aim is
at most 1.2 for the sweep itself). Ray's start-up (a few seconds) is a fixed cost per sweep; with
longer runs (``--max-steps``) it matters less.

    .venv/bin/python bench/sweep_executors.py                      # about half a minute here
    .venv/bin/python bench/sweep_executors.py --max-steps 2000     # longer runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from rnnkit.runner import FINISHED_STATUSES
from rnnkit.spec import resolve_spec
from rnnkit.sweep import LocalExecutor
from rnnkit.sweep_job import Executor, Job


def make_jobs(out: Path, models: list[str], lengths: list[int], max_steps: int) -> list[Job]:
    """One job per (model, length), seed 0, the sweep's defaults but ``train.max_steps``, into ``out``."""
    jobs = []
    for model in models:
        for length in lengths:
            name = f"{model}-T{length:02d}-s0"
            data = {
                "name": name,
                "seed": 0,
                "device": "cpu",
                "out_dir": str(out),
                "task": {"name": "palindrome", "length": length},
                "model": {"name": model},
                "train": {"max_steps": max_steps},
            }
            jobs.append(Job(len(jobs), resolve_spec(data).to_dict(), out / name))
    return jobs


def parse_range(text: str) -> list[int]:
    """``5-12`` or ``5,8,12``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(t) for t in text.split(",")]


def timed_sweep(executor: Executor, jobs: list[Job]) -> tuple[float, dict[str, dict[str, Any]]]:
    """Wall seconds of ``executor.run(jobs)`` and the answer of each run (by name); all must finish."""
    answers: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    interrupted = executor.run(jobs, lambda job, meta: answers.__setitem__(job.spec["name"], meta))
    seconds = time.perf_counter() - start
    bad = [a for a in answers.values() if a.get("status") not in FINISHED_STATUSES]
    if interrupted or bad or len(answers) != len(jobs):
        raise SystemExit(f"the sweep did not finish: {len(answers)}/{len(jobs)} answers, {bad[:2]}")
    return seconds, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="rnn,lstm")
    parser.add_argument("--lengths", default="5-12")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2, help="local workers, and the Ray instance's CPUs")
    args = parser.parse_args()

    import ray

    from rnnkit.ray_executor import RayExecutor

    with tempfile.TemporaryDirectory(prefix="sweep-executors-") as tmp:
        models, lengths = args.models.split(","), parse_range(args.lengths)
        local_jobs = make_jobs(Path(tmp) / "local", models, lengths, args.max_steps)
        ray_jobs = make_jobs(Path(tmp) / "ray", models, lengths, args.max_steps)
        print(f"{len(local_jobs)} runs ({args.models} x lengths {args.lengths}, max_steps {args.max_steps})")

        local_s, local_answers = timed_sweep(LocalExecutor(workers=args.cpus, threads=1), local_jobs)
        print(f"local  ({args.cpus} workers):      {local_s:6.2f} s")

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, log_to_driver=False, include_dashboard=False, configure_logging=False)
        init_s = time.perf_counter() - start
        try:
            ray_s, ray_answers = timed_sweep(RayExecutor(threads=1), ray_jobs)
        finally:
            start = time.perf_counter()
            ray.shutdown()
            shutdown_s = time.perf_counter() - start
        total_s = init_s + ray_s + shutdown_s
        print(f"ray    ({args.cpus} CPUs), sweep:   {ray_s:6.2f} s   ray/local {ray_s / local_s:.2f}x")
        print(
            f"ray    with start/stop:    {total_s:6.2f} s   ray/local {total_s / local_s:.2f}x "
            f"(ray.init {init_s:.1f} s, ray.shutdown {shutdown_s:.1f} s)"
        )
        run_s = {
            k: sum(a.get("seconds", 0.0) for a in v.values())
            for k, v in (("local", local_answers), ("ray", ray_answers))
        }
        print(f"sum of the runs' own seconds: local {run_s['local']:.1f} s, ray {run_s['ray']:.1f} s")
        same = all(local_answers[name]["steps"] == ray_answers[name]["steps"] for name in local_answers)
        print(f"same steps in every run on both: {same}")


if __name__ == "__main__":
    main()
