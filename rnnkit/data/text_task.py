"""Next-character prediction on a corpus: random training windows, a validation stream, samples.

The corpus is held as ids in the smallest unsigned type its vocabulary allows, memory-mapped from the
corpus cache for a text file (``rnnkit.data.corpus``), so a corpus of any size costs about its size on
disk and little memory. Training batches are ``batch_size`` windows of ``seq_len + 1`` characters at
random offsets of the training part (the first 90% by default), gathered from the ids and widened to
int64 only for the (batch, seq + 1) window; targets are the inputs shifted by one. Validation reads the
first ``train.eval_chars`` characters of the held-out tail (0: all of it) as ``batch_size`` contiguous
streams, carrying the LSTM state across chunks of ``seq_len`` as generation does, and reports loss,
accuracy, bits per character and ``chars``, the number of characters it scored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.data.corpus import load_encoded
from rnnkit.data.text import TextConfig
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
        corpus = load_encoded(config)
        self.vocab = corpus.vocab
        self.corpus_file = corpus.cache_file  # the memory-mapped cache entry, if any
        data = np.asarray(corpus.data)  # (chars,) uint8 | uint16 | uint32; a view of the map
        split = int(len(data) * (1 - config.val_fraction))
        self.train_data = data[:split]  # (train_chars,) numpy ids
        self.val_data = data[split:]  # (val_chars,) numpy ids
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
        starts = torch.randint(0, len(self.train_data) - seq, (batch_size,), generator=self.generator)  # (batch,)
        index = starts.numpy()[:, None] + np.arange(seq + 1)  # (batch, seq+1)
        windows = torch.from_numpy(self.train_data[index].astype(np.int64)).to(self.device)  # (batch, seq+1)
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
        """Loss, accuracy and bits per character over the first ``budget.chars`` characters of the
        validation text (0: all of it; at least one window of ``seq_len + 1``), state carried; ``chars``
        says how many characters were scored, so a report shows what a figure stands on."""
        was_training = model.training
        model.eval()
        seq = self.config.seq_len
        available = len(self.val_data)
        length = available if budget.chars == 0 else min(available, max(budget.chars, seq + 1))
        streams = max(1, min(budget.batch_size, (length - 1) // seq))
        per_stream = (length - 1) // streams
        data = torch.from_numpy(self.val_data[: streams * per_stream + 1].astype(np.int64))  # (scored + 1,)
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
        return {"loss": loss, "accuracy": correct / count, "bpc": loss / math.log(2), "chars": count}

    def sample(self, model: torch.nn.Module, length: int) -> str | None:
        """A short sample (temperature 1, from a newline) to watch training progress."""
        self.sample_seed += 1
        return generate(model, self.vocab, prompt=[], length=length, temperature=1.0, seed=self.sample_seed)[0]
