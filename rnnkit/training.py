"""A model-agnostic training loop: optimiser, gradient clipping, schedule, evaluation, stopping rules.

The loop knows nothing about the model or the data: a task hands it fresh batches, scores a batch
(loss and number correct) and evaluates the model. Callbacks see every step (progress bars), every
logged record (``metrics.jsonl``), every evaluation (best checkpoint), every sample and every
checkpoint point. The loop's whole state (step, optimiser, schedule, random generators, stopping
counters) round-trips through ``state_dict`` so a resumed run continues exactly as if never stopped.
Ctrl-C (or SIGTERM) finishes the step in flight, then ends the loop with status ``interrupted``. A
second Ctrl-C stops at once unless it lands inside a training step (which always completes, so the
saved state is a state the uninterrupted run also went through); an evaluation it cuts short is
remembered as pending and done first on resume, with the random state it would have had.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnkit.distributed import Distributed
from rnnkit.errors import RunError
from rnnkit.spec import RunSpec, TrainConfig
from rnnkit.task import EvalBudget, Task


@dataclass(frozen=True)
class StepStats:
    """What a callback hears after each training step."""

    step: int
    loss: float
    accuracy: float  # mean training accuracy of the early-stop window
    steps_per_s: float  # since this process started training
    seconds: float  # this step alone (batch, forward, backward, update)


class Callback:
    """Hooks the runner and the loop call; every one is optional (the defaults do nothing), so a
    callback subclasses this and overrides what it needs."""

    def on_start(self, spec: RunSpec, run_dir: Path, resumed: bool) -> None:
        """Before the first step, once the run directory is set up (``resumed``: continuing one)."""

    def on_step(self, stats: StepStats) -> None:
        """After every training step."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Every record written to metrics.jsonl (training window means and evaluations)."""

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After every evaluation, with its metrics (``loss``, ``accuracy``, ...)."""

    def on_sample(self, step: int, text: str) -> None:
        """A training sample of a task that generates text."""

    def on_checkpoint(self, trainer: Trainer) -> None:
        """Every ``checkpoint_every`` steps: time to save."""


@dataclass
class TrainResult:
    status: str
    steps: int
    best_accuracy: float
    final_accuracy: float | None  # None when interrupted before the final evaluation
    final_loss: float | None
    seconds: float
    final_metrics: dict[str, float] | None = None

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


def gradient_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of ``grads`` taken together as one vector: a 0-d tensor on their device (no sync).

    The value ``clip_grad_norm_`` returns: every tensor's norm in one fused kernel, then the norm of
    those. Written out because ``clip_grad_norm_`` also groups the tensors by device and dtype and, when
    nothing is to be clipped, multiplies every gradient by 1: 0.05 ms a step against 0.01 ms here on a
    small model, where a whole step (a GCN epoch on 1,000 nodes) takes 2.5 ms.
    """
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # (): norm of the (tensors,) norms


def clip_gradients(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale ``grads`` in place so that their norm (``norm``, from ``gradient_norm``) is at most
    ``max_norm``: ``clip_grad_norm_``'s arithmetic (the factor min(1, max_norm / (norm + 1e-6)), kept
    on the device), on a norm already computed."""
    if grads:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))


class _StopOnSignal:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step
    (so the run is saved whole); a second Ctrl-C interrupts at once, except inside a training step
    (``critical``), which always completes. Installed even where SIGINT was ignored (a job started in
    the background), so ``kill -INT`` stops a run cleanly too."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.critical = False  # inside a training step: a second Ctrl-C waits for its end
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT and not self.critical:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class StoppingPolicy:
    """The rules that end a run before ``max_steps``, in the order they are checked after a step:
    ``diverged`` (the loss is NaN or infinite), ``solved`` (the mean accuracy of the last
    ``early_stop.window`` training batches reached ``early_stop.threshold``) and ``plateau`` (the best
    windowed accuracy has not improved by ``plateau.min_delta`` in ``plateau.patience`` steps).

    ``observe`` takes each step's accuracy as soon as it is known (so a checkpoint saved after it holds
    it); ``verdict`` decides once the step's callbacks have run. Its state is part of the trainer's.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.early_stop, self.plateau = cfg.early_stop, cfg.plateau
        self.window: deque[float] = deque(maxlen=cfg.early_stop.window)
        self.best_accuracy = 0.0  # best windowed training accuracy (a full window only)
        self.plateau_best, self.plateau_step = -1.0, 0

    def observe(self, accuracy: float) -> float:
        """Add one step's training accuracy; returns the window's mean."""
        self.window.append(accuracy)
        windowed = sum(self.window) / len(self.window)
        if len(self.window) == self.window.maxlen:
            self.best_accuracy = max(self.best_accuracy, windowed)
        return windowed

    def verdict(self, step: int, loss: float) -> str | None:
        """The status the run stops with after ``step``, or None to go on."""
        if not math.isfinite(loss):
            return "diverged"
        full = len(self.window) == self.window.maxlen
        if self.early_stop.threshold > 0 and full and sum(self.window) / len(self.window) >= self.early_stop.threshold:
            return "solved"
        if self.best_accuracy > self.plateau_best + self.plateau.min_delta:
            self.plateau_best, self.plateau_step = self.best_accuracy, step
        elif self.plateau.patience and step - self.plateau_step >= self.plateau.patience:
            return "plateau"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_accuracy": self.best_accuracy,
            "window": list(self.window),
            "plateau": [self.plateau_best, self.plateau_step],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_accuracy = float(state["best_accuracy"])
        self.window.clear()
        self.window.extend(state["window"])
        self.plateau_best, self.plateau_step = float(state["plateau"][0]), int(state["plateau"][1])


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast for ``precision="bf16"`` (matrix products in
    bfloat16, reductions and the loss in float32; weights, gradients and optimiser state stay float32),
    nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Trains ``model`` on fresh batches from ``task`` under ``cfg`` until a stopping rule fires.

    With ``distributed`` (a torchrun group, see ``rnnkit.distributed``), the model trains wrapped in
    DistributedDataParallel, every step's statistics and stop requests are agreed between the ranks,
    and ``state_dict`` gathers each rank's own random state (a collective: every rank calls it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        cfg: TrainConfig,
        callbacks: Iterable[Callback] = (),
        distributed: Distributed | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.cfg = cfg
        self.distributed = distributed
        self.train_model = model  # what training steps call: the model, or its DDP wrapper once running
        self.callbacks = list(callbacks)
        self.optimizer = make_optimizer(model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self._params = list(model.parameters())  # what the gradient norm reads (listed once, not every step)
        self.stopping_policy = StoppingPolicy(cfg)
        self.eval_budget = EvalBudget(cfg.batch_size, cfg.eval_batches, cfg.eval_chars)
        self.step = 0
        self.elapsed = 0.0  # seconds of training before this process (resumed runs)
        self.best_eval_loss = math.inf
        self._start = time.perf_counter()
        self._running = False
        #: the log window's running sums: kept in the state, so a resumed run logs alike
        self._sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "grad_norm": 0.0, "n": 0}
        #: an evaluation due at ``step`` that a second Ctrl-C cut short: done first when resumed
        self.eval_pending = False
        #: the status a run had stopped with when its final evaluation was cut short (resume finishes it)
        self.stopping: str | None = None
        self._lr_logged = self.optimizer.param_groups[0]["lr"]  # the rate the steps being logged used

    @property
    def best_accuracy(self) -> float:
        """The best mean training accuracy over a full early-stop window so far."""
        return self.stopping_policy.best_accuracy

    def seconds_so_far(self) -> float:
        """Training seconds of this run so far, earlier processes included (resume)."""
        return self.elapsed + (time.perf_counter() - self._start if self._running else 0.0)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: optimiser, schedule, RNGs, counters; in a distributed
        run also ``ranks``, each rank's own task state and torch RNG (complete on rank 0 only)."""
        ranks = {}
        if self.distributed is not None:
            own = {"task_state": self.task.state_dict(), "torch_rng": torch.get_rng_state()}
            ranks = {"ranks": self.distributed.gather(own)}
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "task_state": self.task.state_dict(),
            **ranks,
            "best_eval_loss": self.best_eval_loss,
            **self.stopping_policy.state_dict(),
            "log_sums": dict(self._sums),
            "eval_pending": self.eval_pending,
            "stopping": self.stopping or "",
            **({"cuda_rng": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s output (also the state rnnkit 0.1 saved, whose task part was
        called ``task_rng``). A distributed run's state restores only into as many ranks as saved it."""
        saved_ranks = len(state.get("ranks") or [None])
        ranks = self.distributed.world_size if self.distributed is not None else 1
        if saved_ranks != ranks:
            how = f"torchrun with {saved_ranks} processes in all" if saved_ranks > 1 else "one process (no torchrun)"
            raise RunError(f"this run was trained by {saved_ranks} process(es); resume it with {how}")
        if self.distributed is not None:
            state = {**state, **state["ranks"][self.distributed.rank]}
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.task.load_state_dict(state["task_state"] if "task_state" in state else state["task_rng"])
        self.best_eval_loss = float(state["best_eval_loss"])
        self.stopping_policy.load_state_dict(state)
        self._sums.update(state.get("log_sums", {}))
        self.eval_pending = bool(state.get("eval_pending", False))
        self.stopping = state.get("stopping") or None
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- the loop -----------------------------------------------------------------------------

    def train_step(self) -> tuple[float, float, float]:
        """One optimisation step on a fresh batch: (loss, accuracy, gradient norm before clipping)."""
        x, y = self.task.train_batch(self.cfg.batch_size)
        with autocast(self.task.device, self.cfg.precision):
            loss, correct = self.task.loss_and_correct(self.train_model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self._params if p.grad is not None]
        grad_norm = gradient_norm(grads)  # (): before clipping, as logged
        if self.cfg.max_norm > 0:
            clip_gradients(grads, self.cfg.max_norm, grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), correct.item() / y.numel(), float(grad_norm)

    def evaluate(self) -> dict[str, float]:
        """Evaluate, log ``eval_*`` metrics, and tell the callbacks (best checkpoints).

        Cut short by Ctrl-C, it restores the random state it started from and leaves ``eval_pending``
        set, so that the saved state repeats this evaluation exactly when the run is resumed.
        """
        rng = self.task.state_dict(), torch.get_rng_state()
        self.eval_pending = True
        try:
            with autocast(self.task.device, self.cfg.precision):
                metrics = self.task.evaluate(self.model, self.eval_budget)
        except KeyboardInterrupt:
            self.task.load_state_dict(rng[0])
            torch.set_rng_state(rng[1])
            raise
        finally:
            self.model.train()
        self.eval_pending = False
        self._log({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()}})
        for cb in self.callbacks:
            cb.on_eval(self, metrics)
        self.best_eval_loss = min(self.best_eval_loss, metrics["loss"])
        return metrics

    def _log(self, record: dict[str, Any]) -> None:
        record.setdefault("elapsed", round(self.seconds_so_far(), 4))
        for cb in self.callbacks:
            cb.on_log(record)

    def _flush_log(self) -> None:
        """Log the means of the steps since the last log record, at the current learning rate."""
        sums = self._sums
        if sums["n"]:
            n = sums["n"]
            self._log(
                {
                    "step": self.step,
                    "loss": sums["loss"] / n,
                    "accuracy": sums["accuracy"] / n,
                    "lr": self._lr_logged,
                    "grad_norm": sums["grad_norm"] / n,
                }
            )
        sums.update(loss=0.0, accuracy=0.0, grad_norm=0.0, n=0)

    def _after_step(self, loss: float, accuracy: float, grad_norm: float, seconds: float, rate: float) -> None:
        """The bookkeeping of one finished step: window, log sums, callbacks, log record."""
        windowed = self.stopping_policy.observe(accuracy)
        sums = self._sums
        sums.update(
            loss=sums["loss"] + loss,
            accuracy=sums["accuracy"] + accuracy,
            grad_norm=sums["grad_norm"] + grad_norm,
            n=sums["n"] + 1,
        )
        stats = StepStats(self.step, loss, windowed, rate, seconds)
        for cb in self.callbacks:
            cb.on_step(stats)
        if self.step % self.cfg.log_every == 0:
            self._flush_log()

    def _periodic(self) -> None:
        """Evaluation, sample and checkpoint, when their interval falls on this step (none at the last
        step: the run's end evaluates and saves)."""
        cfg, step = self.cfg, self.step
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
            self.evaluate()
        if cfg.sample_every and step % cfg.sample_every == 0:
            text = self.task.sample(self.model, cfg.sample_length)
            if text is not None:
                for cb in self.callbacks:
                    cb.on_sample(step, text)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            for cb in self.callbacks:
                cb.on_checkpoint(self)

    def run(self) -> TrainResult:
        """Train until ``max_steps`` or a stopping rule, then evaluate once more; Ctrl-C ends it as
        ``interrupted`` (see the module docstring)."""
        status = "max_steps"
        self._start = start = time.perf_counter()
        self._running = True
        first_step = self.step
        self.model.train()
        if self.distributed is not None and self.train_model is self.model:
            self.train_model = self.distributed.wrap(self.model)  # after a resume loaded rank 0's weights
        try:
            with _StopOnSignal() as stop:
                if self.eval_pending and self.stopping is None:  # cut short before the last save
                    self.evaluate()
                while self.stopping is None and self.step < self.cfg.max_steps:
                    self._lr_logged = self.optimizer.param_groups[0]["lr"]
                    stop.critical = True
                    began = time.perf_counter()
                    loss, accuracy, grad_norm = self.train_step()
                    if self.distributed is not None:  # one loss, accuracy and stop decision for all ranks
                        loss, accuracy, stop.requested = self.distributed.agree(loss, accuracy, stop.requested)
                    now = time.perf_counter()
                    self.step += 1
                    rate = (self.step - first_step) / (now - start) if now > start else 0.0
                    self._after_step(loss, accuracy, grad_norm, now - began, rate)
                    stop.critical = False
                    self._periodic()
                    if stop.requested:
                        status = "interrupted"
                        break
                    verdict = self.stopping_policy.verdict(self.step, loss)
                    if verdict is not None:
                        status = verdict
                        break
        except KeyboardInterrupt:
            status = "interrupted"
        if self.stopping is not None:  # resumed after a cut-short final evaluation
            status = self.stopping
        if status != "interrupted":
            status, final = self._finish(status)
        self.elapsed += time.perf_counter() - start
        self._running = False
        if status == "interrupted":
            return TrainResult(status, self.step, self.best_accuracy, None, None, self.elapsed)
        best = max(self.best_accuracy, final["accuracy"])
        return TrainResult(status, self.step, best, final["accuracy"], final["loss"], self.elapsed, final)

    def _finish(self, status: str) -> tuple[str, dict[str, float]]:
        """The last log record and the final evaluation; a second Ctrl-C during it leaves the run
        ``interrupted`` with the evaluation pending (``stopping`` remembers how it ended)."""
        self._lr_logged = self.optimizer.param_groups[0]["lr"]
        self._flush_log()
        self.stopping = status
        try:
            with _StopOnSignal():
                final = self.evaluate()
        except KeyboardInterrupt:
            return "interrupted", {}
        self.stopping = None
        return status, final
