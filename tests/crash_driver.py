"""Kill a training run or a sweep at every file operation in turn, resume it, compare with a run that
was never interrupted. Run as a script by tests/test_crash_safety.py:

    python tests/crash_driver.py train|sweep WORKDIR

torch and rnnkit are imported once; each attempt is a forked child that counts the file operations
(os.replace, os.rename, os.symlink, os.fsync, os.mkdir, os.unlink, shutil.rmtree, and each metrics
line written) and SIGKILLs itself at the n-th, so the kill lands exactly between two of them. Another
forked child then resumes (``rnnkit train --resume`` semantics, or the same sweep again) and the
parent compares weights, metrics and status with the uninterrupted reference. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from rnnkit.checkpoint import checkpoint_dir, load_checkpoint
from rnnkit.rundir import read_jsonl
from rnnkit.runner import METRICS_FILE, MetricsWriter, finished_meta, train_run
from rnnkit.spec import resolve_spec
from rnnkit.sweep import SweepPlan, read_results, run_sweep

SPEC = {
    "name": "run",
    "seed": 3,
    "device": "cpu",
    "task": {"name": "palindrome", "length": 5},
    "model": {"name": "lstm", "hidden_size": 12},
    "train": {
        "batch_size": 16,
        "max_steps": 30,
        "log_every": 5,
        "eval_every": 10,
        "eval_batches": 1,
        "checkpoint_every": 10,
        "lr": 0.01,
    },
}
SWEEP_BASE = {
    "device": "cpu",
    "model": {"hidden_size": 8},
    "train": {"batch_size": 16, "max_steps": 20, "log_every": 5, "checkpoint_every": 10, "eval_batches": 1},
}
PATCHED = ("replace", "rename", "symlink", "fsync", "mkdir", "unlink")


def _on_file_ops(tick, split_metrics_lines: bool) -> None:  # noqa: ANN001
    """Call ``tick()`` before every file operation from now on (and, with ``split_metrics_lines``,
    halfway through every metrics line, where a real kill may land)."""

    def wrap(fn):  # noqa: ANN001, ANN202
        def patched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            tick()
            return fn(*args, **kwargs)

        return patched

    for name in PATCHED:
        setattr(os, name, wrap(getattr(os, name)))
    shutil.rmtree = wrap(shutil.rmtree)

    def on_log(self, record):  # noqa: ANN001, ANN202
        line = json.dumps(record)
        half = len(line) // 2 if split_metrics_lines else len(line)
        self.file.write(line[:half])
        self.file.flush()
        tick()
        self.file.write(line[half:] + "\n")
        self.file.flush()

    MetricsWriter.on_log = on_log


def _install_kill_at(n: int) -> None:
    """Count file operations from now on and SIGKILL this process at the n-th (1-based)."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    _on_file_ops(tick, split_metrics_lines=True)


def _count_ops(action) -> int:  # noqa: ANN001
    """How many file operations ``action`` performs (run in a child, to keep this process clean)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        count = [0]
        _on_file_ops(lambda: count.__setitem__(0, count[0] + 1), split_metrics_lines=False)
        action()
        os.write(write, str(count[0]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    value = int(os.read(read, 64) or b"0")
    os.close(read)
    return value


def _in_child(action, kill_at: int | None = None) -> int:  # noqa: ANN001
    """Run ``action`` in a forked child (killed at the kill_at-th file operation); its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if kill_at is not None:
                _install_kill_at(kill_at)
            action()
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code and stderr
            print(f"child error: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _weights(run_dir: Path) -> dict[str, list]:
    state, meta = load_checkpoint(run_dir)
    return {"status": meta["status"], "steps": meta["steps"], **{k: v.tolist() for k, v in state.items()}}


def _metrics(run_dir: Path) -> list[dict]:
    records, bad = read_jsonl(run_dir / METRICS_FILE)
    assert bad == 0, f"{bad} unreadable metrics lines left in {run_dir}"
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in records]


def train_case(work: Path) -> dict:
    spec = resolve_spec(SPEC)
    reference = work / "reference"
    train_run(spec, reference)  # here, so that every import and cache is warm in the forked children
    expected = (_weights(reference), _metrics(reference))
    total = _count_ops(lambda: train_run(spec, work / "count"))
    failures, points = [], 0
    for n in range(1, total + 1):
        run_dir = work / f"kill-{n}"
        code = _in_child(lambda: train_run(spec, run_dir), kill_at=n)  # noqa: B023 - run at once, in the loop
        if code != -signal.SIGKILL:
            failures.append(f"op {n}: not killed (exit {code})")
            continue
        points += 1
        if checkpoint_dir(run_dir) is None:  # killed before the first checkpoint: start it again there
            code = _in_child(lambda: train_run(spec, run_dir))  # noqa: B023 - run at once, in the loop
        elif finished_meta(run_dir) is not None:  # killed after the final checkpoint: nothing left to do
            code = 0
        else:
            code = _in_child(lambda: train_run(spec, run_dir, resume=True))  # noqa: B023 - run at once, in the loop
        if code != 0:
            failures.append(f"op {n}: resume failed (exit {code})")
            continue
        got = (_weights(run_dir), _metrics(run_dir))
        if got != expected:
            what = "weights" if got[0] != expected[0] else "metrics"
            failures.append(f"op {n}: resumed {what} differ from the uninterrupted run")
        shutil.rmtree(run_dir)
    return {"kill_points": points, "file_ops": total, "failures": failures}


def _sweep_plan(out: Path) -> SweepPlan:
    return SweepPlan(models=["rnn", "lstm"], lengths=[4], out=out, base=SWEEP_BASE)


def _sweep_rows(out: Path) -> list[tuple]:
    return [
        (r["model"], r["length"], r["status"], r["steps"], r["best_accuracy"], r["final_accuracy"])
        for r in read_results(out / "results.csv")
    ]


def sweep_case(work: Path) -> dict:
    reference = work / "reference"
    run_sweep(_sweep_plan(reference), workers=1, threads=1)
    expected_rows = _sweep_rows(reference)
    names = [run.spec.name for run in _sweep_plan(reference).run_specs()]
    expected = {name: (_weights(reference / name), _metrics(reference / name)) for name in names}
    total = _count_ops(lambda: run_sweep(_sweep_plan(work / "count"), workers=1, threads=1))
    failures, points = [], 0
    for n in range(1, total + 1):
        out = work / f"kill-{n}"
        code = _in_child(lambda: run_sweep(_sweep_plan(out), workers=1, threads=1), kill_at=n)  # noqa: B023 - run at once, in the loop
        if code != -signal.SIGKILL:
            failures.append(f"op {n}: not killed (exit {code})")
            continue
        points += 1
        code = _in_child(lambda: run_sweep(_sweep_plan(out), workers=1, threads=1))  # noqa: B023 - run at once, in the loop
        if code != 0:
            failures.append(f"op {n}: the sweep run again failed (exit {code})")
            continue
        if _sweep_rows(out) != expected_rows:
            failures.append(f"op {n}: results.csv differs from the uninterrupted sweep")
        for name in names:
            if (_weights(out / name), _metrics(out / name)) != expected[name]:
                failures.append(f"op {n}: {name} differs from the uninterrupted sweep")
        shutil.rmtree(out)
    return {"kill_points": points, "file_ops": total, "failures": failures}


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")  # the notes a resume gives (a dropped partial line) are expected here
    torch.set_num_threads(1)
    mode, work = sys.argv[1], Path(sys.argv[2])
    result = train_case(work) if mode == "train" else sweep_case(work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
