"""Palindrome digits: predict the last digit of a palindrome from the digits before it.

A palindrome of length T has its first ceil(T/2) digits uniform in 0-9 (leading zeros allowed) and
the rest mirrored. The input is the first T-1 digits, the target the last one (equal to the first),
so the model must carry the first digit across T-1 steps. Every batch is fresh, drawn as whole
tensors from a seeded generator. The gradient flow through time (``rnnkit.gradient_flow``) is measured
on one fixed batch from a third generator, so its records over a run are comparable step to step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from rnnkit.errors import KindNotSupportedError
from rnnkit.gradient_flow import GradientFlow, measure, shows_states
from rnnkit.task import EvalBudget, Task

NUM_DIGITS = 10
#: Seed offsets of the evaluation generator and of the gradient-flow measurement's fixed batch: neither
#: ever draws what training draws.
EVAL_SEED_OFFSET = 1_000_003
GRADIENT_SEED_OFFSET = 2_000_003


@dataclass
class PalindromeConfig:
    """The palindrome task: sequence length and how digits are encoded."""

    # the study runs T = 5 ... 35; beyond 10,000 a step is minutes and no recurrent net carries a digit
    length: int = field(default=20, metadata={"ge": 2, "le": 10_000})
    input: Literal["onehot", "scalar"] = "onehot"


def palindrome_digits(batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Random palindromes as digits, (batch, length) int64."""
    half = math.ceil(length / 2)
    first = torch.randint(0, NUM_DIGITS, (batch_size, half), generator=generator)  # (batch, half)
    mirror = first[:, : length - half].flip(1)  # (batch, length - half)
    return torch.cat([first, mirror], dim=1)  # (batch, length)


def encode_digits(digits: torch.Tensor, encoding: str) -> torch.Tensor:
    """(batch, seq) digits -> (batch, seq, 10) one-hot or (batch, seq, 1) scalar floats."""
    if encoding == "onehot":
        return F.one_hot(digits, NUM_DIGITS).float()
    return digits.unsqueeze(-1).float()


class PalindromeTask(Task):
    """Fresh batches of (inputs, last digit) and the last-step cross-entropy and accuracy."""

    name = "palindrome"
    kind = "sequence-classification"
    config_type = PalindromeConfig
    measures_gradient_flow = True

    def __init__(self, config: PalindromeConfig, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        self.train_generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"train": self.train_generator.get_state(), "eval": self.eval_generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.train_generator.set_state(state["train"])
        self.eval_generator.set_state(state["eval"])

    @property
    def dims(self) -> dict[str, int]:
        """Keyword arguments a sequence-classification model is built with."""
        return {"input_size": NUM_DIGITS if self.config.input == "onehot" else 1, "num_classes": NUM_DIGITS}

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        digits = palindrome_digits(batch_size, self.config.length, generator).to(self.device)
        x = encode_digits(digits[:, :-1], self.config.input)  # (batch, length-1, input)
        y = digits[:, -1]  # (batch,)
        return x, y

    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(batch_size, self.train_generator)

    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the last-step prediction and the number of correct predictions."""
        logits = model(x)  # (batch, classes)
        loss = F.cross_entropy(logits, y)
        correct = (logits.argmax(dim=1) == y).sum()
        return loss, correct

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        """Loss and accuracy on fresh palindromes from a generator training never draws from."""
        was_training = model.training
        model.eval()
        total_loss, total_correct, total = 0.0, 0, 0
        for _ in range(budget.batches):
            x, y = self.batch(budget.batch_size, self.eval_generator)
            loss, correct = self.loss_and_correct(model, x, y)
            total_loss += loss.item() * len(y)
            total_correct += int(correct)
            total += len(y)
        model.train(was_training)
        return {"loss": total_loss / total, "accuracy": total_correct / total}

    def gradient_flow(self, model: torch.nn.Module, batch_size: int) -> GradientFlow:
        """‖∂L/∂s_t‖ of the last-step cross-entropy (the training loss) against the state after each of
        the T-1 steps, on the same ``batch_size`` palindromes every time (their own generator, seeded
        from the run's seed): ``rnnkit.gradient_flow``."""
        if not shows_states(model):
            raise KindNotSupportedError(
                f"{type(model).__name__} declares no step_states(x): no gradient flow to measure "
                "(rnnkit.kinds.StepStates)"
            )
        x, y = self.batch(batch_size, torch.Generator().manual_seed(self.seed + GRADIENT_SEED_OFFSET))
        return measure(model, x, lambda logits: F.cross_entropy(logits, y))  # x (batch, length-1, input)
