"""Time the default palindrome sweep and compare it with the naive course recipe measured in the same run.

The default sweep (``rnnkit sweep --lengths 5-35``: rnn and lstm, one seed, course defaults, early
stop, plateau stop, one worker process per core) runs into a temporary directory and its wall time is
taken. The baseline is the naive recipe: 10,000 steps for every run, one after another in one
process. Its time is estimated from per-step times measured here, in the same run, with the same
models (one thread, T = 5, 20 and 35, a straight line in T in between, which is how the cost of a
step grows). The ratio naive / sweep is the headline; the sweep must also fit in 10 minutes.

    .venv/bin/python bench/palindrome_sweep.py            # the whole default sweep: about 5 minutes here
    .venv/bin/python bench/palindrome_sweep.py --lengths 5-12   # a quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rnnkit.data.palindrome import PalindromeConfig, PalindromeTask
from rnnkit.registry import get_model
from rnnkit.spec import TrainConfig
from rnnkit.stats import aggregate
from rnnkit.sweep import SweepPlan, parse_lengths, run_sweep
from rnnkit.training import Trainer

NAIVE_STEPS = 10_000
PROBE_LENGTHS = (5, 20, 35)


def ms_per_step(model_name: str, length: int, steps: int = 15) -> float:
    """Median ms of one training step (as the sweep trains it) at palindrome length ``length``."""
    torch.manual_seed(0)
    task = PalindromeTask(PalindromeConfig(length=length), torch.device("cpu"), seed=0)
    model_def = get_model(model_name, "sequence-classification")
    model = model_def.build(model_def.make_config(), **task.dims)
    trainer = Trainer(model, task, TrainConfig())
    for _ in range(3):
        trainer.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def naive_seconds(models: list[str], lengths: list[int]) -> tuple[float, dict[str, dict[int, float]]]:
    """Estimated seconds of NAIVE_STEPS steps per run, sequentially, from a line through the probes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    probes = {m: {t: ms_per_step(m, t) for t in PROBE_LENGTHS} for m in models}
    torch.set_num_threads(threads)
    total = 0.0
    for m in models:
        t0, t1 = PROBE_LENGTHS[0], PROBE_LENGTHS[-1]
        a, b = probes[m][t0], probes[m][t1]
        for t in lengths:
            total += (a + (b - a) * (t - t0) / (t1 - t0)) * NAIVE_STEPS / 1e3
    return total, probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="5-35")
    parser.add_argument("--models", default="rnn,lstm")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    models, lengths = args.models.split(","), parse_lengths(args.lengths)

    with tempfile.TemporaryDirectory() as tmp:
        plan = SweepPlan(models=models, lengths=lengths, out=Path(tmp) / "sweep")
        start = time.perf_counter()
        rows = run_sweep(plan, workers=args.workers)
        sweep_s = time.perf_counter() - start
    naive_s, probes = naive_seconds(models, lengths)

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.workers} workers, lengths {args.lengths}")
    print("\nms per training step (1 thread):")
    print("  T   " + "".join(f"{m:>10}" for m in models))
    for t in PROBE_LENGTHS:
        print(f"  {t:<4}" + "".join(f"{probes[m][t]:>10.2f}" for m in models))
    for m in models:
        accs = [a.mean for a in aggregate([r for r in rows if r["model"] == m], ["length"], "best_accuracy")]
        steps = sum(r["steps"] or 0 for r in rows if r["model"] == m)
        solved = sum(1 for r in rows if r["model"] == m and r["status"] == "solved")
        print(f"\n{m}: min best accuracy {min(accs):.3f}, solved {solved}/{len(lengths)}, {steps:,} steps in all")
    print(f"\nsweep wall time        {sweep_s:8.1f} s  ({'within' if sweep_s <= 600 else 'OVER'} the 10-minute budget)")
    print(f"naive recipe, estimated {naive_s:8.1f} s  ({NAIVE_STEPS:,} steps per run, one process)")
    print(f"ratio naive / sweep    {naive_s / sweep_s:8.1f}x")


if __name__ == "__main__":
    main()
