"""The Task contract: what the training loop asks of the data a run trains on.

A task (palindromes, a text corpus, a graph) owns its data and its random generators. It hands the
loop a fresh training batch, scores a batch (loss and number correct), evaluates the model on data
training never sees, and saves and restores its own state so a resumed run draws exactly what the
uninterrupted run would have drawn. Each task names the model kind its models must be
(``rnnkit.kinds``) and the config dataclass its ``task:`` section is validated against.

The optional members have defaults here, so the loop and the runner call them on every task
without probing: ``meta`` (saved with each checkpoint), ``units_per_step`` (what the progress bar
counts), ``sample`` (text to watch while training), ``check_memory`` (refuse a run that cannot fit),
``measures_gradient_flow`` and ``gradient_flow`` (``train.record_gradients``, ``rnnkit.gradient_flow``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from rnnkit.errors import UsageError
from rnnkit.gradient_flow import GradientFlow
from rnnkit.memory import check_training_memory


@dataclass(frozen=True)
class EvalBudget:
    """How much held-out data one evaluation may use, from the run's ``train:`` settings; each task
    reads the parts that apply to it (palindromes: ``batches`` of ``batch_size``; text: ``chars``;
    a graph: the whole validation and test masks)."""

    batch_size: int
    batches: int
    chars: int = 0  # characters of held-out text; 0: all of it


class Task(ABC):
    """One data task. Subclasses set ``name``, ``kind`` and ``config_type`` and are built as
    ``Task(config, device, seed)``."""

    #: the name a spec's ``task.name`` selects
    name: ClassVar[str]
    #: the model kind (``rnnkit.kinds.KINDS``) a model must declare to train on this task
    kind: ClassVar[str]
    #: the dataclass the spec's ``task:`` section is validated against
    config_type: ClassVar[type]
    #: ``train:`` settings this task needs other defaults for (a spec's own values still win)
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: whether ``gradient_flow`` measures anything (what ``train.record_gradients`` records; sweeps turn
    #: it on by default where it does)
    measures_gradient_flow: ClassVar[bool] = False

    device: torch.device

    @abstractmethod
    def __init__(self, config: Any, device: torch.device, seed: int) -> None: ...

    @property
    @abstractmethod
    def dims(self) -> dict[str, int]:
        """The keyword arguments a model of this task's kind is built with (e.g. ``vocab_size``)."""

    @abstractmethod
    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh training batch ``(x, y)``; ``y.numel()`` is the number of predictions scored."""

    @abstractmethod
    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss to minimise (a scalar with a gradient) and the number of correct predictions."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        """Metrics on held-out data within ``budget``: at least ``loss`` and ``accuracy``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The task's own state (random generators, anything it tracks), restored on resume."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # -- optional, with defaults ------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """Saved in every checkpoint's meta.json (e.g. a vocabulary); none by default."""
        return {}

    def units_per_step(self, batch_size: int) -> tuple[str, int] | None:
        """What progress counts per training step (``("chars", 6400)``); None counts steps."""
        return None

    def sample(self, model: torch.nn.Module, length: int) -> str | None:
        """A short sample to watch while training (text tasks); None for tasks that do not generate."""
        return None

    def check_memory(self, model_def: Any, model_config: Any, batch_size: int, budget_bytes: float | None) -> int:
        """Raise UsageError when training ``model_def`` on this task would not fit ``budget_bytes``;
        returns the estimate. By default a probe of one small batch (``rnnkit.memory``)."""
        return check_training_memory(model_def, model_config, self, batch_size, budget_bytes)

    def gradient_flow(self, model: torch.nn.Module, batch_size: int) -> GradientFlow:
        """‖∂L/∂s_t‖ of the task's loss against the model's state after each step t, on a fixed batch of
        ``batch_size`` that neither training nor evaluation draws (``rnnkit.gradient_flow``), for a task
        with ``measures_gradient_flow`` and a model that shows its states; none by default."""
        raise UsageError(f"the {self.name} task has no gradient-flow measurement (train.record_gradients)")
