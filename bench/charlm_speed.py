"""Character LM speed: training chars/s of both backends against a bare torch.nn.LSTM loop, and
sampling chars/s at batch 1 and 64, with generation cost checked to be linear in length.

Training: rnnkit's Trainer (TextTask batches, charlstm, Adam, clipping, schedule) with the ``torch``
backend and the ``scratch`` backend in both implementations (``scratch_impl`` fused: one LSTMFunction
per layer with a hand-derived backward, the default; autograd: lstm_cell in a loop), against a bare
loop of nn.Embedding + nn.LSTM + nn.Linear on the same shapes (2x128, embedding 64, batch 64, seq 30)
and the same kind of batches. Blocks alternate and the order flips every repeat; each figure is a
median. The headline is each ratio against the bare loop (target for scratch fused: >= 1.0).

    .venv/bin/python bench/charlm_speed.py [--data-dir ../shared/data] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.data.text import TextConfig
from rnnkit.data.text_task import TextTask
from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig
from rnnkit.sampling import generate
from rnnkit.spec import TrainConfig
from rnnkit.training import Trainer

BATCH, SEQ, HIDDEN, LAYERS, EMBED = 64, 30, 128, 2, 64


class BareLM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(x))[0])


def median_block_times(blocks: list[Callable[[], None]], repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in blocks]
    for r in range(repeats):
        order = range(len(blocks)) if r % 2 == 0 else reversed(range(len(blocks)))
        for i in order:
            start = time.perf_counter()
            blocks[i]()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("RNNKIT_DATA_DIR", "../shared/data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=15, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = TextTask(TextConfig(data_dir=args.data_dir, seq_len=SEQ), torch.device("cpu"), seed=0)
    vocab = len(task.vocab)
    cfg = TrainConfig(optimizer="adam", lr=2e-3, max_norm=5.0, batch_size=BATCH, schedule="step")
    bf16 = TrainConfig(optimizer="adam", lr=2e-3, max_norm=5.0, batch_size=BATCH, schedule="step", precision="bf16")

    bare = BareLM(vocab)
    bare_opt = torch.optim.Adam(bare.parameters(), lr=2e-3)

    def bare_block() -> None:
        for _ in range(args.steps):
            x, y = task.train_batch(BATCH)
            loss = F.cross_entropy(bare(x).flatten(0, 1), y.flatten())
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bare.parameters(), 5.0)
            bare_opt.step()

    trainers = {}
    names = ("torch", "scratch", "scratch-autograd", "torch-bf16", "scratch-bf16")
    for name, backend, impl, train_cfg in (
        ("torch", "torch", "fused", cfg),
        ("scratch", "scratch", "fused", cfg),
        ("scratch-autograd", "scratch", "autograd", cfg),
        ("torch-bf16", "torch", "fused", bf16),
        ("scratch-bf16", "scratch", "fused", bf16),
    ):
        model = CharLSTM(vocab, CharLSTMConfig(EMBED, HIDDEN, LAYERS, backend=backend, scratch_impl=impl))
        trainers[name] = Trainer(model, task, train_cfg)

    def trainer_block(trainer: Trainer) -> Callable[[], None]:
        def run() -> None:
            for _ in range(args.steps):
                trainer.train_step()

        return run

    blocks = [bare_block, *(trainer_block(trainers[name]) for name in names)]
    for block in blocks:
        block()  # warm-up
    bare_s, torch_s, scratch_s, autograd_s, torch_bf16_s, scratch_bf16_s = median_block_times(blocks, args.repeats)
    chars = args.steps * BATCH * SEQ
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); 2x{HIDDEN}, embedding {EMBED}, batch {BATCH}, "
        f"seq {SEQ}, vocab {vocab}\n"
    )
    print("training                 chars/s   vs bare nn.LSTM loop")
    print(f"  bare nn.LSTM loop   {chars / bare_s:>10,.0f}   1.00")
    print(f"  charlstm torch      {chars / torch_s:>10,.0f}   {bare_s / torch_s:.2f}")
    print(f"  charlstm scratch    {chars / scratch_s:>10,.0f}   {bare_s / scratch_s:.2f}   (scratch_impl fused)")
    print(f"  scratch autograd    {chars / autograd_s:>10,.0f}   {bare_s / autograd_s:.2f}   (scratch_impl autograd)")
    print(
        f"  torch, bf16         {chars / torch_bf16_s:>10,.0f}   {bare_s / torch_bf16_s:.2f}   "
        f"({torch_s / torch_bf16_s:.2f}x fp32)"
    )
    print(
        f"  scratch, bf16       {chars / scratch_bf16_s:>10,.0f}   {bare_s / scratch_bf16_s:.2f}   "
        f"({scratch_s / scratch_bf16_s:.2f}x fp32)"
    )

    model = trainers["torch"].model.eval()
    print("\nsampling (torch backend, temperature 1)   chars/s")
    for num, length in ((1, 2000), (64, 500)):
        generate(model, task.vocab, prompt="The ", length=50, num=num, seed=0)
        start = time.perf_counter()
        generate(model, task.vocab, prompt="The ", length=length, num=num, seed=0)
        seconds = time.perf_counter() - start
        print(f"  batch {num:<3} {length:>5} chars each   {num * length / seconds:>10,.0f}")
    short, long = (
        min(timeit(lambda n=n: generate(model, task.vocab, prompt="The ", length=n, seed=0)) for _ in range(3))
        for n in (500, 2000)
    )
    print(f"\ngenerating 2000 chars costs {long / short:.2f}x generating 500 (linear: 4)")


def timeit(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
