"""GCN scaling: epoch time and peak memory of the dense GCN against torch-geometric on synthetic graphs,
and rnnkit's gcn-pyg model against a bare GCNConv training loop, measured in the same run.

Graphs: seeded stochastic block models with 1,000 / 5,000 / 20,000 / 100,000 nodes, average degree 10,
32 features, 4 classes. Each implementation trains in a fresh process (so its peak memory is its own);
the dense one only where its N×N adjacency fits the memory budget. The headline ratios: dense / pyg
epoch time per size (the crossover), and gcn-pyg / bare GCNConv loop (the cost of rnnkit's wrapper).

What each side does every epoch, and what is timed (the median over the epochs after the first, as
wall-clock time and as the CPU time of the training thread; on a machine shared with other jobs only
the CPU time is steady: the wall time of a step then depends on how the kernel shares the core, which
favours a process that often sleeps in fsync, so a loop that publishes files can look faster):

- rnnkit (``rnnkit gcn``'s runs: the shared Trainer and run directory): timed, one training step
  (forward, cross-entropy, the training accuracy and the gradient norm it logs, backward, Adam);
  untimed, an evaluation (validation loss and accuracy, test accuracy, the test accuracy at the best
  validation), its metrics.jsonl line, a copy of the weights when the validation loss improved
  (published to best/ at most every 5 s), and at the end the checkpoint.
- the bare loop, written as torch-geometric's examples/gcn.py writes it: timed, ``train()`` (forward,
  cross-entropy, backward, Adam, the loss read for its log line); untimed, ``test()`` (a forward
  without dropout, train, validation and test accuracies read as Python numbers, the test accuracy at
  the best validation kept) and the log line it would print, kept in a list.

    .venv/bin/python bench/gcn_scaling.py [--device cpu|cuda] [--sizes 1000,5000,20000,100000] [--skip-dense]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from rnnkit.data.graphs import stochastic_block_model
from rnnkit.gcn import GCNSpec, _run_isolated, run_impl
from rnnkit.memory import available_memory_bytes
from rnnkit.models.gcn_dense import dense_adjacency_bytes
from rnnkit.training import Trainer


def bare_gcnconv_ms(nodes: int, epochs: int, device: str) -> tuple[float, float]:
    """Median wall and CPU ms of a training epoch of two GCNConv layers in a loop written as
    torch-geometric's own example (examples/gcn.py) writes it: each epoch ``train()`` (timed) then
    ``test()`` and the log line (untimed)."""
    from torch_geometric.nn import GCNConv

    g = stochastic_block_model(nodes, 10.0, 4, 32, seed=0).to(device)
    torch.manual_seed(0)
    conv1, conv2 = GCNConv(32, 16, cached=True).to(device), GCNConv(16, 4, cached=True).to(device)
    params = list(conv1.parameters()) + list(conv2.parameters())
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)

    def train() -> float:
        opt.zero_grad(set_to_none=True)
        h = F.relu(conv1(F.dropout(g.x, 0.5, True), g.edge_index))  # (nodes, 16)
        out = conv2(F.dropout(h, 0.5, True), g.edge_index)  # (nodes, 4)
        loss = F.cross_entropy(out[g.train_mask], g.y[g.train_mask])
        loss.backward()
        opt.step()
        return loss.item()  # the example's float(loss)

    @torch.no_grad()
    def test() -> list[float]:
        pred = conv2(F.relu(conv1(g.x, g.edge_index)), g.edge_index).argmax(dim=-1)  # (nodes,)
        return [int((pred[m] == g.y[m]).sum()) / int(m.sum()) for m in (g.train_mask, g.val_mask, g.test_mask)]

    times, cpu, log = [], [], []
    best_val = test_acc = 0.0
    for epoch in range(1, epochs + 1):
        start, start_cpu = time.perf_counter(), time.thread_time()
        loss = train()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
        train_acc, val_acc, tmp_test_acc = test()
        if val_acc > best_val:
            best_val, test_acc = val_acc, tmp_test_acc
        log.append(
            f"Epoch: {epoch:03d}, Loss: {loss:.4f}, Train: {train_acc:.4f}, Val: {val_acc:.4f}, Test: {test_acc:.4f}"
        )
    return 1e3 * statistics.median(times[1:]), 1e3 * statistics.median(cpu[1:])


def bare_isolated(nodes: int, epochs: int, device: str, threads: int) -> tuple[float, float]:
    """``bare_gcnconv_ms`` in a fresh process, like the implementations, so both start alike."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_bare_worker, nodes, epochs, device, threads).result()


def _bare_worker(nodes: int, epochs: int, device: str, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    return bare_gcnconv_ms(nodes, epochs, device)


def pyg_isolated(spec_dict: dict, threads: int) -> dict:
    """``rnnkit gcn``'s run of gcn-pyg (``run_impl``) in a fresh process, with ``cpu_ms_median`` added."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_pyg_worker, spec_dict, threads).result()


def _pyg_worker(spec_dict: dict, threads: int) -> dict:
    """``run_impl`` with each training step's thread CPU time recorded too (the step the run's own
    wall-clock epoch times time: ``Trainer.train_step``)."""
    cpu: list[float] = []
    step = Trainer.train_step

    def timed(self: Trainer) -> tuple[float, float, float]:
        start = time.thread_time()
        result = step(self)
        cpu.append(time.thread_time() - start)
        return result

    Trainer.train_step = timed  # type: ignore[method-assign]
    result = run_impl(spec_dict, "pyg", threads)
    return {**result, "cpu_ms_median": 1e3 * statistics.median(cpu[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000,100000")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating pyg / bare runs; medians and per-repeat ratios reported"
    )
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = available_memory_bytes() / 2
    print(
        f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), {args.epochs} epochs, "
        f"dense budget {budget / 1e9:.1f} GB\n"
    )
    print(
        f"{'nodes':>8} {'dense ms/epoch':>15} {'dense MB':>9} {'pyg ms/epoch':>13} {'pyg MB':>8} "
        f"{'dense/pyg':>10} {'bare GCNConv ms':>16} {'pyg/bare':>9} {'pyg cpu ms':>11} {'bare cpu ms':>12} "
        f"{'cpu pyg/bare':>13}"
    )
    for nodes in (int(n) for n in args.sizes.split(",")):
        spec = GCNSpec(
            dataset="synthetic",
            nodes=nodes,
            degree=10.0,
            classes=4,
            features=32,
            runs=1,
            epochs=args.epochs,
            device=args.device,
            out="/tmp/rnnkit-bench-gcn",
        )
        pyg_runs, bares, bares_cpu = [], [], []
        for _ in range(args.repeats):  # alternate, each in a fresh process, so drift hits both alike
            pyg_runs.append(pyg_isolated(asdict(spec), args.threads))
            wall, cpu = bare_isolated(nodes, args.epochs, args.device, args.threads)
            bares.append(wall)
            bares_cpu.append(cpu)
        pyg = sorted(pyg_runs, key=lambda r: r["epoch_ms_median"])[len(pyg_runs) // 2]
        bare = statistics.median(bares)
        pyg_cpu, bare_cpu = statistics.median(r["cpu_ms_median"] for r in pyg_runs), statistics.median(bares_cpu)
        if not args.skip_dense and dense_adjacency_bytes(nodes) <= budget:
            dense = _run_isolated(asdict(spec), "dense", args.threads)
            d_ms, d_mb = f"{dense['epoch_ms_median']:.2f}", f"{dense['peak_memory_mb']:.0f}"
            ratio = f"{dense['epoch_ms_median'] / pyg['epoch_ms_median']:.2f}"
        else:
            d_ms, ratio = ("skipped", "-") if args.skip_dense else ("over budget", "-")
            d_mb = "-" if args.skip_dense else f"({dense_adjacency_bytes(nodes) / 1e9:.0f} GB)"
        print(
            f"{nodes:>8,} {d_ms:>15} {d_mb:>9} {pyg['epoch_ms_median']:>13.2f} {pyg['peak_memory_mb']:>8.0f} "
            f"{ratio:>10} {bare:>16.2f} {pyg['epoch_ms_median'] / bare:>9.2f} {pyg_cpu:>11.2f} {bare_cpu:>12.2f} "
            f"{pyg_cpu / bare_cpu:>13.2f}"
        )
        for what, key, base in (("wall", "epoch_ms_median", bares), ("cpu", "cpu_ms_median", bares_cpu)):
            pairs = [r[key] / b for r, b in zip(pyg_runs, base, strict=True)]  # each pyg run / the bare run after it
            each = " ".join(f"{q:.2f}" for q in pairs)
            print(f"{'':>8} {what} pyg/bare per repeat: {each} (median {statistics.median(pairs):.2f})")


if __name__ == "__main__":
    main()
