"""Training across processes: characters per second of the character LSTM trained by one process
against two processes started by torchrun (DistributedDataParallel, gloo), measured in one run.

Each rank trains on batches of ``--batch`` windows, so two ranks process twice the characters per
step; the figure is characters trained per second of training (the run's own ``seconds``, which
leaves out start-up), and the headline is the ratio 2 processes / 1 process. Both use one torch
thread per process (torchrun's default), so on a machine with 2 cores the best possible is 2.0x.

    .venv/bin/python bench/distributed_speed.py [--data-dir ../shared/data] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def chars_per_second(processes: int, spec: dict, work: Path) -> float:
    """Train ``spec`` with ``processes`` processes; characters trained per second of training."""
    name = f"p{processes}"
    work.mkdir(parents=True, exist_ok=True)
    spec_file = work / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump({**spec, "name": name, "out_dir": str(work)}))
    if processes == 1:
        command = [sys.executable, "-m", "rnnkit", "train", "--threads", "1", "--no-progress", str(spec_file)]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command = [torchrun, "--standalone", "--nproc-per-node", str(processes), "-m", "rnnkit", "train"]
        command += ["--no-progress", str(spec_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    meta = json.loads((work / name / "meta.json").read_text())
    train = spec["train"]
    chars = meta["steps"] * train["batch_size"] * spec["task"]["seq_len"] * processes
    return chars / meta["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spec = {
        "seed": 0,
        "device": "cpu",
        "task": {"name": "text", "corpus": "christie", "data_dir": args.data_dir, "seq_len": 30},
        "model": {"name": "charlstm", "embedding_size": 64, "hidden_size": 128, "layers": 2},
        "train": {
            "optimizer": "adam",
            "lr": 0.002,
            "batch_size": args.batch,
            "max_steps": args.steps,
            "log_every": 50,
            "eval_chars": 10_000,
        },
    }
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # alternate, so drift hits both alike
            one.append(chars_per_second(1, spec, Path(tmp) / f"r{i}a"))
            two.append(chars_per_second(2, spec, Path(tmp) / f"r{i}b"))
    print(f"cpus usable: {len(os.sched_getaffinity(0))}, batch {args.batch} per process, {args.steps} steps")
    print(f"1 process : {max(one):>9,.0f} chars/s")
    print(f"2 processes: {max(two):>9,.0f} chars/s  ({max(two) / max(one):.2f}x)")


if __name__ == "__main__":
    main()
