"""A model-agnostic training loop: optimiser, gradient clipping, schedule, early stop and plateau stop.

The loop knows nothing about the model or the data: a task hands it fresh batches and scores a
batch (loss and number correct). Callbacks see every step (progress bars) and every logged record
(``metrics.jsonl``). Ctrl-C ends the loop with status ``interrupted`` so the caller can save.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rnnkit.spec import TrainConfig

#: How a run ended. ``solved``: early stop reached; ``plateau``: stopped without progress;
#: ``max_steps``: ran its full budget; ``interrupted``: Ctrl-C.
STATUSES = ("solved", "plateau", "max_steps", "interrupted")


class Task(Protocol):
    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate(self, model: torch.nn.Module, batch_size: int, batches: int) -> dict[str, float]: ...


class Callback(Protocol):
    def on_step(self, step: int, loss: float, accuracy: float, steps_per_s: float) -> None: ...

    def on_log(self, record: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    status: str
    steps: int
    best_accuracy: float
    final_accuracy: float | None  # None when interrupted before the final evaluation
    final_loss: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """sgd, momentum (SGD with ``cfg.momentum``), rmsprop or adam at ``cfg.lr``."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """constant; step (x lr_gamma every lr_decay_every steps); exponential (the same decay, smooth);
    cosine (to zero at max_steps). Stepped once per training step."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_decay_every, gamma=cfg.lr_gamma)
    if cfg.schedule == "exponential":
        gamma = cfg.lr_gamma ** (1.0 / cfg.lr_decay_every)
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


class Trainer:
    """Trains ``model`` on fresh batches from ``task`` under ``cfg`` until a stopping rule fires."""

    def __init__(
        self, model: torch.nn.Module, task: Task, cfg: TrainConfig, callbacks: Iterable[Callback] = ()
    ) -> None:
        self.model = model
        self.task = task
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.optimizer = make_optimizer(model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.step = 0

    def _log(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_log(record)

    def train_step(self) -> tuple[float, float, float]:
        """One optimisation step on a fresh batch: (loss, accuracy, gradient norm before clipping)."""
        x, y = self.task.train_batch(self.cfg.batch_size)
        loss, correct = self.task.loss_and_correct(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.cfg.max_norm if self.cfg.max_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), correct.item() / len(y), float(grad_norm)

    def run(self) -> TrainResult:
        cfg = self.cfg
        es, plateau = cfg.early_stop, cfg.plateau
        window: deque[float] = deque(maxlen=es.window)
        window_sum = 0.0
        best = 0.0
        plateau_best, plateau_step = -1.0, 0
        log_loss = log_acc = log_norm = 0.0
        log_n = 0
        status = "max_steps"
        start = time.perf_counter()
        self.model.train()
        try:
            while self.step < cfg.max_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                loss, acc, grad_norm = self.train_step()
                self.step += 1
                if len(window) == window.maxlen:
                    window_sum -= window[0]
                window.append(acc)
                window_sum += acc
                windowed = window_sum / len(window)
                if len(window) == window.maxlen:
                    best = max(best, windowed)
                log_loss, log_acc, log_norm, log_n = log_loss + loss, log_acc + acc, log_norm + grad_norm, log_n + 1
                elapsed = time.perf_counter() - start
                for cb in self.callbacks:
                    cb.on_step(self.step, loss, windowed, self.step / elapsed if elapsed > 0 else 0.0)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log(
                        {
                            "step": self.step,
                            "loss": log_loss / log_n,
                            "accuracy": log_acc / log_n,
                            "lr": lr,
                            "grad_norm": log_norm / log_n,
                            "elapsed": round(elapsed, 4),
                        }
                    )
                    log_loss = log_acc = log_norm = 0.0
                    log_n = 0
                if es.threshold > 0 and len(window) == window.maxlen and windowed >= es.threshold:
                    status = "solved"
                    break
                if best > plateau_best + plateau.min_delta:
                    plateau_best, plateau_step = best, self.step
                elif plateau.patience and self.step - plateau_step >= plateau.patience:
                    status = "plateau"
                    break
        except KeyboardInterrupt:
            status = "interrupted"
        seconds = time.perf_counter() - start
        if status == "interrupted":
            return TrainResult(status, self.step, best, None, None, seconds)
        if log_n:
            self._log(
                {
                    "step": self.step,
                    "loss": log_loss / log_n,
                    "accuracy": log_acc / log_n,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "grad_norm": log_norm / log_n,
                    "elapsed": round(seconds, 4),
                }
            )
        final = self.task.evaluate(self.model, cfg.batch_size, cfg.eval_batches)
        self._log(
            {
                "step": self.step,
                "eval_loss": final["loss"],
                "eval_accuracy": final["accuracy"],
                "elapsed": round(time.perf_counter() - start, 4),
            }
        )
        return TrainResult(status, self.step, max(best, final["accuracy"]), final["accuracy"], final["loss"], seconds)
