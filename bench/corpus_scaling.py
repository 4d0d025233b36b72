"""Corpus scaling: peak memory and time to the first training step of the text task for corpora of
1, 10 and 100 MB, each measured in a fresh process, with a cold and then a warm corpus cache.

The corpora are the shipped book (``christie_styles.txt`` under ``--data-dir``) repeated and cut to
size (on a character boundary) in a temporary folder; the cache is a temporary ``RNNKIT_CACHE_DIR``.
Each measurement is one spawned process that imports torch and rnnkit, then times
``TextTask(...)`` (read, vocabulary, encoding, the cache) plus one training step of the shipped model's
shape (charlstm 2x128, embedding 64, batch 64, seq 30, Adam), then one evaluation under the default
``train.eval_chars``. Peak memory is the process's ``VmHWM`` (peak resident set, file-backed pages of
the memory map included); its figure after the imports is the process's own fixed cost. The headline:
bytes of peak memory per corpus character above the 1 MB run (the fixed cost), and seconds per MB,
both from the 1 MB and largest runs of one sweep.

    .venv/bin/python bench/corpus_scaling.py [--data-dir ../shared/data] [--sizes 1,10,100]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

MB = 1_000_000
BATCH, SEQ = 64, 30


def peak_rss_bytes() -> int:
    """This process's peak resident set so far: ``VmHWM``, which starts afresh at exec (``ru_maxrss``
    keeps the parent's peak across fork and exec), else ``ru_maxrss`` (KiB on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path: str, threads: int) -> dict[str, Any]:
    """In a fresh process: time and peak memory of building the text task and taking one step."""
    import torch
    import torch.nn.functional as F

    from rnnkit.data.text import TextConfig
    from rnnkit.data.text_task import TextTask
    from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig
    from rnnkit.spec import TrainConfig
    from rnnkit.task import EvalBudget

    torch.set_num_threads(threads)
    base = peak_rss_bytes()
    start = time.perf_counter()
    task = TextTask(TextConfig(text=path, seq_len=SEQ), torch.device("cpu"), seed=0)
    loaded = time.perf_counter()
    torch.manual_seed(0)
    model = CharLSTM(len(task.vocab), CharLSTMConfig(embedding_size=64, hidden_size=128, layers=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = task.train_batch(BATCH)  # (batch, seq), (batch, seq)
    logits, _ = model(x)  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    stepped = time.perf_counter()
    step_peak = peak_rss_bytes()
    cfg = TrainConfig()
    metrics = task.evaluate(model, EvalBudget(BATCH, cfg.eval_batches, cfg.eval_chars))
    evaluated = time.perf_counter()
    return {
        "chars": len(task.train_data) + len(task.val_data),
        "base": base,
        "load_s": loaded - start,
        "first_step_s": stepped - start,
        "peak_step": step_peak,
        "eval_s": evaluated - stepped,
        "eval_chars": metrics.get("chars"),
        "peak_eval": peak_rss_bytes(),
    }


def make_corpus(book: bytes, size: int, path: Path) -> None:
    """``book`` repeated to ``size`` bytes, cut back to a UTF-8 character boundary (written a copy at a
    time, so this process never holds the corpus)."""
    with path.open("wb") as f:
        for _ in range(size // len(book)):
            f.write(book)
        tail = book[: size % len(book)]
        while tail and tail[-1] & 0xC0 == 0x80:  # a continuation byte: drop the partial character
            tail = tail[:-1]
        if tail and tail[-1] >= 0xC0:  # a lead byte whose continuation was cut off
            tail = tail[:-1]
        f.write(tail)


def run_fresh(path: Path, threads: int) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, str(path), threads).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("RNNKIT_DATA_DIR", "../shared/data"))
    parser.add_argument("--sizes", default="1,10,100", help="corpus sizes in MB (10^6 bytes), comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    book_path = Path(args.data_dir) / "books" / "christie_styles.txt"
    if not book_path.is_file():
        book_path = Path(args.data_dir) / "christie_styles.txt"
    book = book_path.read_bytes()

    with tempfile.TemporaryDirectory(prefix="rnnkit-corpus-bench-") as tmp:
        os.environ["RNNKIT_CACHE_DIR"] = str(Path(tmp) / "cache")  # inherited by the spawned processes
        rows = []
        for size in sizes:
            path = Path(tmp) / f"corpus-{size}mb.txt"
            make_corpus(book, size * MB, path)
            cold = run_fresh(path, args.threads)
            warm = run_fresh(path, args.threads)
            rows.append((size, cold, warm))
            path.unlink()

    print(
        f"{'MB':>5} {'chars':>12} | {'cache':>5} {'load s':>7} {'1st step s':>10} {'peak MiB':>9} "
        f"{'eval s':>7} {'eval chars':>10} {'peak+eval MiB':>13} | {'imports MiB':>11}"
    )
    for size, cold, warm in rows:
        for label, r in (("cold", cold), ("warm", warm)):
            print(
                f"{size:>5} {r['chars']:>12,} | {label:>5} {r['load_s']:>7.2f} {r['first_step_s']:>10.2f} "
                f"{r['peak_step'] / 2**20:>9.0f} {r['eval_s']:>7.2f} {str(r['eval_chars']):>10} "
                f"{r['peak_eval'] / 2**20:>13.0f} | {r['base'] / 2**20:>11.0f}"
            )
    if len(rows) >= 2:
        (s0, c0, w0), (s1, c1, w1) = rows[0], rows[-1]
        chars = c1["chars"] - c0["chars"]
        print(f"\nabove the {s0} MB run (the fixed cost), per corpus character, {s0} -> {s1} MB:")
        for label, a, b in (("cold", c0, c1), ("warm", w0, w1)):
            per_char = (b["peak_step"] - a["peak_step"]) / chars
            per_char_eval = (b["peak_eval"] - a["peak_eval"]) / chars
            per_mb = (b["first_step_s"] - a["first_step_s"]) / (s1 - s0)
            load_per_mb = ", ".join(f"{(w if label == 'warm' else c)['load_s'] / size:.4f}" for size, c, w in rows)
            print(
                f"  {label}: {per_char:.2f} bytes/char to the first step, {per_char_eval:.2f} with the evaluation; "
                f"{per_mb:.3f} s per MB to the first step; load s per MB at {sizes} MB: {load_per_mb}"
            )


if __name__ == "__main__":
    main()
