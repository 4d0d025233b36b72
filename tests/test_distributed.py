"""Training across processes with torchrun (gloo, 2 CPU processes): the same weights as one process
at twice the batch on the same batches, resume with the same number of processes, and a clear error
with another; and bf16 autocast runs that train and resume exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rnnkit.checkpoint import load_checkpoint
from rnnkit.distributed import launched_by_torchrun, rank_seed
from rnnkit.registry import get_model
from rnnkit.runner import train_run
from rnnkit.spec import resolve_spec
from rnnkit.task import EvalBudget, Task
from rnnkit.tasks import TASK_TYPES
from rnnkit.training import Trainer
from tests.helpers import small_text

TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS, BATCH = 5, 4


def _spec(tmp_path: Path, **train: object) -> dict:
    return {
        "name": "ddp",
        "seed": 3,
        "device": "cpu",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "text", "text": str(small_text(tmp_path)), "seq_len": 12},
        "model": {"name": "charlstm", "embedding_size": 8, "hidden_size": 16, "layers": 1},
        "train": {
            "optimizer": "adam",
            "lr": 0.02,
            "max_norm": 0.5,  # clipping on: the clipped gradient is the averaged one in both runs
            "batch_size": BATCH,
            "max_steps": STEPS,
            "log_every": 1,
            "checkpoint_every": 2,
            **train,
        },
    }


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "rnnkit", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


class _TwoRanks(Task):
    """One process drawing, each step, rank 0's batch and rank 1's batch side by side."""

    def __init__(self, ranks: list[Task]) -> None:
        self.ranks, self.device = ranks, ranks[0].device
        self.name, self.kind = ranks[0].name, ranks[0].kind

    @property
    def dims(self) -> dict[str, int]:
        return self.ranks[0].dims

    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [task.train_batch(batch_size // 2) for task in self.ranks]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])  # (batch, seq) each

    def loss_and_correct(self, model, x, y):  # noqa: ANN001, ANN201
        return self.ranks[0].loss_and_correct(model, x, y)

    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        return self.ranks[0].evaluate(model, budget)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _one_process_double_batch(spec_dict: dict) -> dict[str, torch.Tensor]:
    """The weights after STEPS steps of one process at batch 2b on both ranks' batches."""
    spec = resolve_spec({**spec_dict, "train": {**spec_dict["train"], "batch_size": 2 * BATCH}})
    task_type = TASK_TYPES["text"]
    ranks = [task_type(spec.task, torch.device("cpu"), rank_seed(spec.seed, r)) for r in range(2)]
    torch.manual_seed(spec.seed)
    model = get_model("charlstm", task_type.kind).build(spec.model, **ranks[0].dims)
    Trainer(model, _TwoRanks(ranks), spec.train).run()
    return model.state_dict()


@pytest.mark.slow
def test_two_ranks_train_like_one_process_at_twice_the_batch_and_resume(tmp_path):
    spec_dict = _spec(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict))

    result = _torchrun(tmp_path, str(spec_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("max_steps after 5 steps") == 1  # rank 0 alone reports
    run_dir = tmp_path / "runs" / "ddp"
    weights, meta = load_checkpoint(run_dir)
    assert meta["processes"] == 2 and meta["steps"] == STEPS
    expected = _one_process_double_batch(spec_dict)
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not any(p.name.startswith("ddp-") for p in (tmp_path / "runs").iterdir())  # one run directory

    # Resumed to 2 x STEPS by two processes: the same as two processes running 2 x STEPS straight.
    resumed = _torchrun(tmp_path, "--resume", str(run_dir), f"train.max_steps={2 * STEPS}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight_spec = tmp_path / "straight.yaml"
    straight_spec.write_text(
        yaml.safe_dump({**spec_dict, "name": "straight", "train": {**spec_dict["train"], "max_steps": 2 * STEPS}})
    )
    straight = _torchrun(tmp_path, str(straight_spec))
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, _ = load_checkpoint(run_dir)
    b, _ = load_checkpoint(tmp_path / "runs" / "straight")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)

    # One process cannot resume what two trained: one line, exit 1.
    alone = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "--resume", str(run_dir), f"train.max_steps={3 * STEPS}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode == 1
    assert alone.stderr.strip().splitlines()[-1] == (
        "error: this run was trained by 2 process(es); resume it with torchrun with 2 processes in all"
    )


@pytest.mark.slow
def test_a_failure_before_training_stops_every_rank_with_one_message(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tmp_path)))
    first = _torchrun(tmp_path, str(spec_file))
    assert first.returncode == 0, first.stderr[-3000:]
    # rnnkit train --resume of a finished run: rank 0 refuses it and the other rank stops too
    result = _torchrun(tmp_path, "--resume", str(tmp_path / "runs" / "ddp"))
    assert result.returncode != 0
    assert result.stderr.count("already finished at step 5") == 2, result.stderr[-3000:]


def test_without_torchrun_a_run_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_torchrun()
    assert rank_seed(3, 0) == 3 and rank_seed(3, 1) != 3


def test_a_bf16_run_trains_and_resumes_exactly(tmp_path):
    spec = _spec(tmp_path, precision="bf16", max_steps=40, checkpoint_every=20, max_norm=5.0)
    straight = train_run(resolve_spec({**spec, "name": "straight"}))
    assert straight["final_loss"] < 0.8 * torch.log(torch.tensor(float(straight["task_dims"]["vocab_size"]))).item()

    half = resolve_spec({**spec, "name": "half", "train": {**spec["train"], "max_steps": 20}})
    train_run(half)
    full = resolve_spec({**spec, "name": "half"})
    train_run(full, Path(spec["out_dir"]) / "half", resume=True)
    a, meta = load_checkpoint(Path(spec["out_dir"]) / "half")
    b, _ = load_checkpoint(Path(spec["out_dir"]) / "straight")
    assert meta["steps"] == 40 and meta["spec"]["train"]["precision"] == "bf16"
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert a["head.weight"].dtype == torch.float32  # autocast computes in bf16; the weights stay float32
