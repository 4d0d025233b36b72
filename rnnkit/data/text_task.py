"""Next-character prediction on a corpus: random training windows, a validation stream, samples.

Training batches are ``batch_size`` windows of ``seq_len + 1`` characters at random offsets of the
training part (the first 90% by default); targets are the inputs shifted by one. Validation reads the
held-out tail as ``batch_size`` contiguous streams, carrying the LSTM state across chunks of
``seq_len`` as generation does, and reports loss, accuracy and bits per character.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from rnnkit.data.text import TextConfig, Vocabulary, load_corpus
from rnnkit.sampling import generate
from rnnkit.task import EvalBudget, Task


class TextTask(Task):
    """Character windows of a corpus for a char-lm model; validation on the held-out tail."""

    name = "text"
    kind = "char-lm"
    config_type = TextConfig

    def __init__(self, config: TextConfig, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        text = load_corpus(config)
        self.vocab = Vocabulary.from_text(text)
        data = torch.tensor(self.vocab.encode(text), dtype=torch.long)
        split = int(len(data) * (1 - config.val_fraction))
        self.train_data = data[:split]  # (train_chars,)
        self.val_data = data[split:]  # (val_chars,)
        self.generator = torch.Generator().manual_seed(seed)
        self.sample_seed = seed

    @property
    def dims(self) -> dict[str, int]:
        return {"vocab_size": len(self.vocab)}

    def meta(self) -> dict[str, Any]:
        """Saved with every checkpoint: the vocabulary and the split sizes."""
        return {"vocabulary": self.vocab.chars, "train_chars": len(self.train_data), "val_chars": len(self.val_data)}

    def units_per_step(self, batch_size: int) -> tuple[str, int] | None:
        """Progress counts characters: ``batch_size`` windows of ``seq_len`` per step."""
        return "chars", batch_size * self.config.seq_len

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"train": self.generator.get_state(), "sample_seed": torch.tensor(self.sample_seed)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["train"])
        self.sample_seed = int(state.get("sample_seed", self.sample_seed))

    def train_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.config.seq_len
        starts = torch.randint(0, len(self.train_data) - seq, (batch_size,), generator=self.generator)
        windows = self.train_data[starts[:, None] + torch.arange(seq + 1)]  # (batch, seq+1)
        windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]  # (batch, seq), (batch, seq)

    def loss_and_correct(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = model(x)  # (batch, seq, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        correct = (logits.argmax(-1) == y).sum()
        return loss, correct

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, budget: EvalBudget) -> dict[str, float]:
        """Loss, accuracy and bits per character over the whole validation text, state carried."""
        was_training = model.training
        model.eval()
        streams = max(1, min(budget.batch_size, (len(self.val_data) - 1) // self.config.seq_len))
        per_stream = (len(self.val_data) - 1) // streams
        data = self.val_data[: streams * per_stream + 1]
        inputs = data[:-1].view(streams, per_stream).to(self.device)  # (streams, per_stream)
        targets = data[1:].view(streams, per_stream).to(self.device)
        state = None
        total_loss, correct = 0.0, 0
        for start in range(0, per_stream, self.config.seq_len):
            x = inputs[:, start : start + self.config.seq_len]
            y = targets[:, start : start + self.config.seq_len]
            logits, state = model(x, state)  # (streams, chunk, vocab)
            total_loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
        model.train(was_training)
        count = inputs.numel()
        loss = total_loss / count
        return {"loss": loss, "accuracy": correct / count, "bpc": loss / math.log(2)}

    def sample(self, model: torch.nn.Module, length: int) -> str | None:
        """A short sample (temperature 1, from a newline) to watch training progress."""
        self.sample_seed += 1
        return generate(model, self.vocab, prompt=[], length=length, temperature=1.0, seed=self.sample_seed)[0]
