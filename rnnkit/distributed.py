"""Training one run across processes and machines started by torchrun (DistributedDataParallel).

``torchrun --nproc-per-node N -m rnnkit train SPEC.yaml`` starts N copies of ``rnnkit train`` with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and a rendezvous address in their environment;
``Distributed.from_environment`` joins them into one process group (gloo on the CPU, nccl on CUDA,
each process on GPU ``LOCAL_RANK``). What each rank does (see ``rnnkit.runner`` and
``rnnkit.training``):

- every rank builds the task with its own seed (``rank_seed``: rank 0 keeps the spec's seed, so one
  process alone draws exactly the batches it always did), so the N ranks draw N different batches a
  step, and DDP averages their gradients: N ranks at batch b train like one process at batch N·b;
- the ranks agree on every step's loss, accuracy and on a stop request (one small all-reduce), so
  the stopping rules and Ctrl-C end every rank at the same step;
- rank 0 alone owns and writes the run directory (lock, config, metrics, checkpoints, progress bar);
  each checkpoint holds every rank's own random state (gathered to rank 0), so ``--resume`` with the
  same number of processes continues exactly; on resume rank 0 reads the checkpoint and sends the
  trainer state to the others (serialised with ``torch.save`` and read back with
  ``weights_only=True``, like a checkpoint file), and DDP copies rank 0's weights to every rank.

Nothing here runs without torchrun: ``launched_by_torchrun()`` is False and a run is one process.
"""

from __future__ import annotations

import datetime
import io
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rnnkit.errors import RunError, UsageError

#: How long a rank waits for the others at a collective before giving up (a crashed peer).
TIMEOUT = datetime.timedelta(minutes=10)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun (or another launcher) started together."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_seed(seed: int, rank: int) -> int:
    """The data seed of ``rank``: the spec's seed on rank 0, a distinct one on every other rank."""
    return (seed + rank * 1_000_000_007) % 2**63


@dataclass
class Distributed:
    """This process's place in the group: ``rank`` of ``world_size``, on local device ``local_rank``."""

    rank: int
    local_rank: int
    world_size: int
    backend: str

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """Join the process group torchrun describes in the environment, for a run on ``device``."""
        try:
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
            world_size = int(os.environ["WORLD_SIZE"])
        except (KeyError, ValueError) as exc:
            raise UsageError(
                f"a distributed run needs RANK and WORLD_SIZE in its environment (start it with torchrun): {exc}"
            ) from None
        if not dist.is_available():
            raise RunError("this torch build has no torch.distributed; a run across processes needs it")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=TIMEOUT)
            except (RuntimeError, ValueError) as exc:
                raise RunError(f"cannot join the torchrun process group ({backend}): {exc}") from exc
        return cls(rank, local_rank, world_size, backend)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and shows progress."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: GPU ``local_rank`` for a CUDA run, ``device`` otherwise."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def rank_seed(self, seed: int) -> int:
        """This rank's data seed (``rank_seed``)."""
        return rank_seed(seed, self.rank)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (which copies rank 0's weights to every rank)."""
        device_ids = [self.local_rank] if self.backend == "nccl" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def _tensor_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def agree(self, loss: float, accuracy: float, stop: bool) -> tuple[float, float, bool]:
        """Every rank's step, agreed: the mean loss and accuracy over the ranks, and whether any rank
        was asked to stop (so all stop after the same step)."""
        values = torch.tensor([loss, accuracy, float(stop)], dtype=torch.float64, device=self._tensor_device())
        dist.all_reduce(values)
        total_loss, total_accuracy, stops = values.tolist()
        return total_loss / self.world_size, total_accuracy / self.world_size, stops > 0

    def broadcast(self, value: Any | None) -> Any:
        """Rank 0's ``value`` on every rank (tensors, numbers, strings, lists and dicts of them),
        serialised with ``torch.save`` and read with ``weights_only=True``."""
        device = self._tensor_device()
        if self.is_main:
            data = _to_bytes(value)
            size = torch.tensor([len(data)], dtype=torch.int64, device=device)
        else:
            size = torch.zeros(1, dtype=torch.int64, device=device)
        dist.broadcast(size, 0)
        if self.is_main:
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
        else:
            payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        dist.broadcast(payload, 0)
        return value if self.is_main else _from_bytes(payload.cpu().numpy().tobytes())

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
        device = self._tensor_device()
        data = _to_bytes(value)
        size = torch.tensor([len(data)], dtype=torch.int64, device=device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        chunks = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(self.world_size)]
        dist.all_gather(chunks, padded)
        if not self.is_main:
            return None
        return [_from_bytes(c.cpu().numpy().tobytes()[: int(s.item())]) for c, s in zip(chunks, sizes, strict=True)]

    def barrier(self) -> None:
        """Wait until every rank is here."""
        dist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)
