"""Time one palindrome training step of rnnkit's from-scratch RNN and LSTM against torch.nn baselines.

For each palindrome length T, one full training step is timed: forward over the T-1 one-hot digits,
cross-entropy on the last step, backward, ``clip_grad_norm_`` to 10 and an RMSprop step. Pairs:

    rnn   rnnkit.models.rnn.VanillaRNN   vs  torch.nn.RNN(tanh) + torch.nn.Linear on the last hidden state
    lstm  rnnkit.models.lstm.LSTM        vs  torch.nn.LSTM + torch.nn.Linear on the last hidden state

Both sides of a pair train on the same pre-drawn batches, are warmed up first, and are timed in
alternating blocks (the order flips every repeat) so machine noise hits both alike; each number is
the median over repeats of the mean ms/step of a block. The headline is the ratio scratch/torch: on
a noisy machine a ratio holds where an absolute time does not.

A second section shows why the models take their steps with ``unbind``: the backward pass of an LSTM
loop that reads ``x_proj[:, t]`` (each slice's backward writes a full-size zero gradient, so backward
grows as T^2) against the same loop over ``x_proj.unbind(1)`` (one gradient for all steps).

Run (CPU, one thread by default):

    .venv/bin/python bench/palindrome_step.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.data.palindrome import NUM_DIGITS, PalindromeConfig, PalindromeTask
from rnnkit.models.lstm import LSTM, lstm_cell
from rnnkit.models.rnn import VanillaRNN

Batch = tuple[torch.Tensor, torch.Tensor]


class TorchRNN(nn.Module):
    """Baseline: torch.nn.RNN (tanh) and a linear read-out of the last hidden state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(NUM_DIGITS, hidden, nonlinearity="tanh", batch_first=True)
        self.out = nn.Linear(hidden, NUM_DIGITS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x)  # h: (1, batch, hidden)
        return self.out(h[-1])  # (batch, classes)


class TorchLSTM(nn.Module):
    """Baseline: torch.nn.LSTM and a linear read-out of the last hidden state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(NUM_DIGITS, hidden, batch_first=True)
        self.out = nn.Linear(hidden, NUM_DIGITS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)  # h: (1, batch, hidden)
        return self.out(h[-1])  # (batch, classes)


def make_step(model: nn.Module) -> Callable[[Batch], None]:
    """One training step as in rnnkit.training.Trainer: CE on the last step, clip to 10, RMSprop."""
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)

    def step(batch: Batch) -> None:
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    return step


def interleaved_ms(blocks: list[Callable[[], float]], per_block: int, repeats: int) -> list[float]:
    """Median over repeats of ms per call for each block (a block returns the seconds it measured).

    The blocks alternate and their order flips every repeat, so drift and noise hit all of them alike.
    """
    times: list[list[float]] = [[] for _ in blocks]
    for r in range(repeats):
        for i in range(len(blocks)) if r % 2 == 0 else reversed(range(len(blocks))):
            times[i].append(blocks[i]() * 1e3 / per_block)
    return [statistics.median(t) for t in times]


@dataclass
class Row:
    length: int
    model: str
    scratch_ms: float
    torch_ms: float

    @property
    def ratio(self) -> float:
        return self.scratch_ms / self.torch_ms


def bench_pair(
    name: str, scratch: nn.Module, baseline: nn.Module, batches: list[Batch], length: int, warmup: int, repeats: int
) -> Row:
    """ms/step of the scratch model and its baseline, each block one pass over the same batches."""
    steps = [make_step(scratch), make_step(baseline)]
    for step in steps:
        for i in range(warmup):
            step(batches[i % len(batches)])

    def block(step: Callable[[Batch], None]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            return time.perf_counter() - start

        return run

    scratch_ms, torch_ms = interleaved_ms([block(s) for s in steps], len(batches), repeats)
    return Row(length, name, scratch_ms, torch_ms)


def lstm_loop_sliced(x_proj: torch.Tensor, W_gh_t: torch.Tensor, hidden: int) -> torch.Tensor:
    """The LSTM loop reading x_proj[:, t]: each slice's backward writes a full-size (batch, T, 4h) gradient."""
    h = c = x_proj.new_zeros(x_proj.shape[0], hidden)
    for t in range(x_proj.shape[1]):
        h, c = lstm_cell(x_proj[:, t], h, c, W_gh_t)
    return h


def lstm_loop_unbind(x_proj: torch.Tensor, W_gh_t: torch.Tensor, hidden: int) -> torch.Tensor:
    """The LSTM loop as rnnkit.models.lstm runs it: steps from x_proj.unbind(1), one gradient for all."""
    h = c = x_proj.new_zeros(x_proj.shape[0], hidden)
    for x_t in x_proj.unbind(1):
        h, c = lstm_cell(x_t, h, c, W_gh_t)
    return h


def bench_unbind(hidden: int, batch: Batch, calls: int, repeats: int) -> tuple[float, float]:
    """Backward-only ms of the sliced and the unbind loop; each forward is rebuilt, untimed, first."""
    model = LSTM(NUM_DIGITS, hidden, NUM_DIGITS)
    x, y = batch

    def block(loop: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], n: int) -> float:
        seconds = 0.0
        for _ in range(n):
            x_proj = torch.addmm(model.b_g, x.flatten(0, 1), model.W_gx.t()).view(x.shape[0], -1, 4 * hidden)
            h = loop(x_proj, model.W_gh.t(), hidden)
            loss = F.cross_entropy(torch.addmm(model.b_p, h, model.W_ph.t()), y)
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss.backward()
            seconds += time.perf_counter() - start
        return seconds

    loops = [lstm_loop_sliced, lstm_loop_unbind]
    for loop in loops:
        block(loop, 2)  # warm-up
    sliced_ms, unbind_ms = interleaved_ms([partial(block, lp, calls) for lp in loops], calls, repeats)
    return sliced_ms, unbind_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lengths", default="5,20,35", help="comma-separated palindrome lengths T")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per model (median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per model")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--unbind-length", type=int, default=35, help="T of the slicing-vs-unbind section")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(t) for t in args.lengths.split(",")]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
        f"hidden {args.hidden}, batch {args.batch}, {args.steps} steps x {args.repeats} repeats (median), "
        f"{args.warmup} warm-up steps"
    )

    rows: list[Row] = []
    for length in lengths:
        task = PalindromeTask(PalindromeConfig(length=length), torch.device("cpu"), seed=0)
        batches = [task.train_batch(args.batch) for _ in range(args.steps)]
        torch.manual_seed(0)
        pairs: list[tuple[str, nn.Module, nn.Module]] = [
            ("rnn", VanillaRNN(NUM_DIGITS, args.hidden, NUM_DIGITS), TorchRNN(args.hidden)),
            ("lstm", LSTM(NUM_DIGITS, args.hidden, NUM_DIGITS), TorchLSTM(args.hidden)),
        ]
        for name, scratch, baseline in pairs:
            rows.append(bench_pair(name, scratch, baseline, batches, length, args.warmup, args.repeats))

    print(f"\n{'T':>4}  {'model':<6} {'scratch ms/step':>16} {'torch ms/step':>14} {'scratch/torch':>14}")
    for row in rows:
        print(f"{row.length:>4}  {row.model:<6} {row.scratch_ms:>16.2f} {row.torch_ms:>14.2f} {row.ratio:>14.2f}")

    task = PalindromeTask(PalindromeConfig(length=args.unbind_length), torch.device("cpu"), seed=0)
    torch.manual_seed(0)
    sliced_ms, unbind_ms = bench_unbind(args.hidden, task.train_batch(args.batch), args.steps, args.repeats)
    print(
        f"\nLSTM backward only, T={args.unbind_length}: x_proj[:, t] {sliced_ms:.2f} ms, "
        f"x_proj.unbind(1) {unbind_ms:.2f} ms, sliced/unbind {sliced_ms / unbind_ms:.2f}"
    )

    if args.json:
        result = {
            "torch": torch.__version__,
            "args": vars(args),
            "steps": [asdict(row) | {"ratio": row.ratio} for row in rows],
            "unbind": {
                "length": args.unbind_length,
                "sliced_ms": sliced_ms,
                "unbind_ms": unbind_ms,
                "ratio": sliced_ms / unbind_ms,
            },
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
