"""Time one palindrome training step of rnnkit's from-scratch RNN and LSTM against torch.nn baselines.

For each palindrome length T, one full training step is timed: forward over the T-1 one-hot digits,
cross-entropy on the last step, backward, ``clip_grad_norm_`` to 10 and an RMSprop step. Pairs:

    rnn   rnnkit.models.rnn.VanillaRNN   vs  torch.nn.RNN(tanh) + torch.nn.Linear on the last hidden state
    lstm  rnnkit.models.lstm.LSTM        vs  torch.nn.LSTM + torch.nn.Linear on the last hidden state
          (its default impl, "fused")

A second table puts the LSTM step against its hardware limit:

    floor     the step's matrix multiplications alone, into preallocated outputs: the input projection
              (seq*batch, 10) x (10, 4h) plus bias and the read-out (batch, h) x (h, 10); per time step
              forward h_{t-1} W_hh^T (batch, h) x (h, 4h); per time step backward the two products
              da_t W_hh (batch, 4h) x (4h, h) and dW_hh += da_t^T h_{t-1} (4h, batch) x (batch, h);
              the read-out's two and the input projection's weight gradient x^T dx_proj. No
              elementwise work, no loss, no optimiser: what no implementation can go below.
    fused     rnnkit's lstm, impl="fused" (rnnkit.models.lstm_function: hand-derived backward)
    autograd  rnnkit's lstm, impl="autograd" (lstm_cell in a loop through autograd: the reference)
    torch     torch.nn.LSTM + torch.nn.Linear

and reports fused/floor (target <= 1.5) and fused/torch (target <= 0.75), and each model's page faults
per step.

Each model trains in a process of its own (a worker), as it would in a training run: how fast a step
is depends on the process's heap. torch.nn.LSTM at T=35 takes about 5,000 page faults per step in a
process of its own (its buffers go back to the system after every step and are faulted in again), and
none in a process whose heap other models' buffers have broken up, where its step is about a third
faster; which of the two a shared process gives depends on what was allocated before (``--in-process``
runs every model in this process, as earlier versions of this bench did, to show it). All workers
train on the same pre-drawn batches, are warmed up first, and are timed in alternating blocks (the
parent asks one worker at a time for a block; the order flips every repeat) so machine noise hits
them alike; each number is the median over repeats of the mean ms/step of a block. The headline is
the ratio: on a noisy machine a ratio holds where an absolute time does not.

A last section shows why the models take their steps with ``unbind``: the backward pass of an LSTM
loop that reads ``x_proj[:, t]`` (each slice's backward writes a full-size zero gradient, so backward
grows as T^2) against the same loop over ``x_proj.unbind(1)`` (one gradient for all steps).

Run (CPU, one thread by default; ``--clock cpu`` times blocks by CPU time, steadier on a shared machine):

    .venv/bin/python bench/palindrome_step.py [--clock cpu] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.data.palindrome import NUM_DIGITS, PalindromeConfig, PalindromeTask
from rnnkit.models.lstm import LSTM, lstm_cell
from rnnkit.models.rnn import VanillaRNN

Batch = tuple[torch.Tensor, torch.Tensor]

#: The clock every block is timed with: wall time by default; ``--clock cpu`` (this thread's CPU time)
#: leaves out the time the process waits for a core, which on a machine shared with other work is
#: most of the noise.
clock: Callable[[], float] = time.perf_counter


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


def interleaved(
    blocks: list[Callable[[], tuple[float, float]]], per_block: int, repeats: int
) -> list[tuple[float, float]]:
    """Median over repeats of (ms per call, page faults per call) for each block; a block returns the
    seconds and the page faults it measured.

    The blocks alternate and their order flips every repeat, so drift and noise hit all of them alike.
    """
    times: list[list[tuple[float, float]]] = [[] for _ in blocks]
    for r in range(repeats):
        for i in range(len(blocks)) if r % 2 == 0 else reversed(range(len(blocks))):
            seconds, faults = blocks[i]()
            times[i].append((seconds * 1e3 / per_block, faults / per_block))
    return [(statistics.median(ms for ms, _ in t), statistics.median(f for _, f in t)) for t in times]


@dataclass
class Row:
    length: int
    model: str
    scratch_ms: float
    torch_ms: float

    @property
    def ratio(self) -> float:
        return self.scratch_ms / self.torch_ms


class MatmulFloor:
    """The matrix products of one palindrome LSTM training step and nothing else (see the module doc).

    Called like a training step on a batch; every product writes into a preallocated buffer, so the
    time is the products' alone. The hidden state and gate gradients are random: only shapes matter.
    """

    def __init__(self, hidden: int, batch: int, seq: int) -> None:
        g = 4 * hidden
        self.seq = seq
        self.W_hh, self.W_ih, self.b = torch.randn(g, hidden) * 0.1, torch.randn(g, NUM_DIGITS), torch.zeros(g)
        self.W_p, self.b_p = torch.randn(NUM_DIGITS, hidden), torch.zeros(NUM_DIGITS)
        self.x_proj = torch.empty(seq * batch, g)  # (seq*batch, 4h)
        self.h = torch.randn(seq + 1, batch, hidden)  # h0 .. h_seq
        self.gates = torch.empty(batch, g)  # (batch, 4h)
        self.da = torch.randn(batch, g)  # (batch, 4h)
        self.dh = torch.empty(batch, hidden)
        self.dW_hh, self.dW_ih = torch.zeros(g, hidden), torch.empty(NUM_DIGITS, g)
        self.logits, self.dlogits = torch.empty(batch, NUM_DIGITS), torch.randn(batch, NUM_DIGITS)
        self.dW_p = torch.empty(NUM_DIGITS, hidden)

    def __call__(self, batch: Batch) -> None:
        x = batch[0].transpose(0, 1).reshape(-1, NUM_DIGITS)  # (seq*batch, 10)
        torch.addmm(self.b, x, self.W_ih.t(), out=self.x_proj)
        x_proj, W_t = self.x_proj.view(self.seq, -1, self.W_hh.shape[0]), self.W_hh.t()
        for t in range(self.seq):
            torch.addmm(x_proj[t], self.h[t], W_t, out=self.gates)
        torch.addmm(self.b_p, self.h[-1], self.W_p.t(), out=self.logits)
        torch.mm(self.dlogits.t(), self.h[-1], out=self.dW_p)
        torch.mm(self.dlogits, self.W_p, out=self.dh)
        for t in range(self.seq - 1, -1, -1):
            torch.mm(self.da, self.W_hh, out=self.dh)
            self.dW_hh.addmm_(self.da.t(), self.h[t])
        torch.mm(x.t(), self.x_proj, out=self.dW_ih)


#: What is timed: the floor, rnnkit's models and their torch.nn baselines (``build_step``).
KINDS = ("floor", "lstm", "lstm-autograd", "torch-lstm", "rnn", "torch-rnn")


@dataclass(frozen=True)
class Settings:
    hidden: int
    batch: int
    steps: int
    warmup: int
    threads: int
    clock: str


def palindrome_batches(length: int, settings: Settings) -> list[Batch]:
    """The pre-drawn batches every model trains on (the same in every process: seeded)."""
    task = PalindromeTask(PalindromeConfig(length=length), torch.device("cpu"), seed=0)
    return [task.train_batch(settings.batch) for _ in range(settings.steps)]


def build_step(kind: str, hidden: int, x: torch.Tensor) -> Callable[[Batch], None]:
    """A training step of ``kind`` (one of ``KINDS``) for inputs shaped like x (batch, seq, 10), weights
    from seed 0 (so lstm and lstm-autograd start equal)."""
    torch.manual_seed(0)
    if kind == "floor":
        return MatmulFloor(hidden, x.shape[0], x.shape[1])
    models: dict[str, Callable[[], nn.Module]] = {
        "lstm": lambda: LSTM(NUM_DIGITS, hidden, NUM_DIGITS),
        "lstm-autograd": lambda: LSTM(NUM_DIGITS, hidden, NUM_DIGITS, impl="autograd"),
        "torch-lstm": lambda: TorchLSTM(hidden),
        "rnn": lambda: VanillaRNN(NUM_DIGITS, hidden, NUM_DIGITS),
        "torch-rnn": lambda: TorchRNN(hidden),
    }
    return make_step(models[kind]())


class Timer:
    """One kind's training step on the palindrome batches of one length, warmed up on construction."""

    def __init__(self, kind: str, length: int, settings: Settings) -> None:
        torch.set_num_threads(settings.threads)
        self.clock = time.thread_time if settings.clock == "cpu" else time.perf_counter
        self.batches = palindrome_batches(length, settings)
        self.step = build_step(kind, settings.hidden, self.batches[0][0])
        for i in range(settings.warmup):
            self.step(self.batches[i % len(self.batches)])

    def block(self) -> tuple[float, float]:
        """One pass over the batches: (seconds by the clock, minor page faults of this process)."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = self.clock()
        for batch in self.batches:
            self.step(batch)
        seconds = self.clock() - start
        return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def _serve(conn: Connection, kind: str, length: int, settings: Settings) -> None:
    """A worker process: build and warm up one Timer, then time a block whenever the parent asks."""
    timer = Timer(kind, length, settings)
    conn.send(None)  # ready
    while conn.recv():
        conn.send(timer.block())


def measure(
    kinds: tuple[str, ...], length: int, settings: Settings, repeats: int, in_process: bool
) -> dict[str, tuple[float, float]]:
    """kind -> (ms per step, page faults per step), medians over interleaved blocks; each kind in a
    worker process of its own, or all in this one (``in_process``, in the order of ``kinds``)."""
    if in_process:
        timers = [Timer(kind, length, settings) for kind in kinds]
        return dict(zip(kinds, interleaved([t.block for t in timers], settings.steps, repeats), strict=True))
    context = mp.get_context("spawn")
    pipes, workers = [], []
    try:
        for kind in kinds:  # they build and warm up side by side; only the timed blocks take turns
            parent, child = context.Pipe()
            worker = context.Process(target=_serve, args=(child, kind, length, settings), daemon=True)
            worker.start()
            pipes.append(parent)
            workers.append(worker)
        for pipe in pipes:
            pipe.recv()

        def remote(pipe: Connection) -> Callable[[], tuple[float, float]]:
            def run() -> tuple[float, float]:
                pipe.send(True)
                return pipe.recv()

            return run

        results = interleaved([remote(pipe) for pipe in pipes], settings.steps, repeats)
    finally:
        for pipe, worker in zip(pipes, workers, strict=True):
            if worker.is_alive():
                pipe.send(False)
            worker.join(timeout=10)
    return dict(zip(kinds, results, strict=True))


@dataclass
class FloorRow:
    length: int
    floor_ms: float
    fused_ms: float
    autograd_ms: float
    torch_ms: float
    faults: dict[str, float]  # kind -> page faults per step

    @property
    def ratios(self) -> dict[str, float]:
        return {
            "fused/floor": self.fused_ms / self.floor_ms,
            "fused/torch": self.fused_ms / self.torch_ms,
            "autograd/torch": self.autograd_ms / self.torch_ms,
        }


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

    def block(loop: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], n: int) -> tuple[float, float]:
        seconds = 0.0
        for _ in range(n):
            x_proj = torch.addmm(model.b_g, x.flatten(0, 1), model.W_gx.t()).view(x.shape[0], -1, 4 * hidden)
            h = loop(x_proj, model.W_gh.t(), hidden)
            loss = F.cross_entropy(torch.addmm(model.b_p, h, model.W_ph.t()), y)
            model.zero_grad(set_to_none=True)
            start = clock()
            loss.backward()
            seconds += clock() - start
        return seconds, 0.0

    loops = [lstm_loop_sliced, lstm_loop_unbind]
    for loop in loops:
        block(loop, 2)  # warm-up
    (sliced_ms, _), (unbind_ms, _) = interleaved([partial(block, lp, calls) for lp in loops], calls, repeats)
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
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="time blocks by wall or CPU time")
    parser.add_argument(
        "--in-process", action="store_true", help="run every model in this process instead of one worker each"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    lengths = [int(t) for t in args.lengths.split(",")]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
        f"hidden {args.hidden}, batch {args.batch}, {args.steps} steps x {args.repeats} repeats (median), "
        f"{args.warmup} warm-up steps, {args.clock} clock"
    )

    settings = Settings(args.hidden, args.batch, args.steps, args.warmup, args.threads, args.clock)
    rows: list[Row] = []
    floor_rows: list[FloorRow] = []
    for length in lengths:
        ms = measure(KINDS, length, settings, args.repeats, args.in_process)
        rows += [
            Row(length, "rnn", ms["rnn"][0], ms["torch-rnn"][0]),
            Row(length, "lstm", ms["lstm"][0], ms["torch-lstm"][0]),
        ]
        faults = {kind: ms[kind][1] for kind in KINDS}
        lstm_ms = (ms[kind][0] for kind in ("floor", "lstm", "lstm-autograd", "torch-lstm"))
        floor_rows.append(FloorRow(length, *lstm_ms, faults))

    where = "all in this process" if args.in_process else "each model in a process of its own"
    print(f"\n({where})")
    print(f"{'T':>4}  {'model':<6} {'scratch ms/step':>16} {'torch ms/step':>14} {'scratch/torch':>14}")
    for row in rows:
        print(f"{row.length:>4}  {row.model:<6} {row.scratch_ms:>16.2f} {row.torch_ms:>14.2f} {row.ratio:>14.2f}")

    print("\nLSTM step against the matmul floor (ms/step; targets: fused/floor <= 1.5, fused/torch <= 0.75)")
    print(
        f"{'T':>4}  {'floor':>7} {'fused':>7} {'autograd':>9} {'torch':>7}  "
        f"{'fused/floor':>11} {'fused/torch':>11} {'autograd/torch':>14}   page faults/step fused, torch"
    )
    for fr in floor_rows:
        r = fr.ratios
        print(
            f"{fr.length:>4}  {fr.floor_ms:>7.2f} {fr.fused_ms:>7.2f} {fr.autograd_ms:>9.2f} {fr.torch_ms:>7.2f}  "
            f"{r['fused/floor']:>11.2f} {r['fused/torch']:>11.2f} {r['autograd/torch']:>14.2f}   "
            f"{fr.faults['lstm']:>8.0f} {fr.faults['torch-lstm']:>6.0f}"
        )

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
            "lstm_floor": [asdict(fr) | fr.ratios for fr in floor_rows],
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
