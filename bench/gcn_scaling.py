"""GCN scaling: epoch time and peak memory of the dense GCN against torch-geometric on synthetic graphs,
and rnnkit's gcn-pyg model against a bare GCNConv training loop, measured in the same run.

Graphs: seeded stochastic block models with 1,000 / 5,000 / 20,000 / 100,000 nodes, average degree 10,
32 features, 4 classes. Each implementation trains in a fresh process (so its peak memory is its own);
the dense one only where its N×N adjacency fits the memory budget. The headline ratios: dense / pyg
epoch time per size (the crossover), and gcn-pyg / bare GCNConv loop (the cost of rnnkit's wrapper).

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
from rnnkit.gcn import GCNSpec, _run_isolated
from rnnkit.memory import available_memory_bytes
from rnnkit.models.gcn_dense import dense_adjacency_bytes


def bare_gcnconv_ms(nodes: int, epochs: int, device: str) -> float:
    """Median ms of a training epoch of two GCNConv layers written inline, as in torch-geometric's own
    example (examples/gcn.py): train, then an untimed evaluation forward, every epoch."""
    from torch_geometric.nn import GCNConv

    g = stochastic_block_model(nodes, 10.0, 4, 32, seed=0).to(device)
    torch.manual_seed(0)
    conv1, conv2 = GCNConv(32, 16, cached=True).to(device), GCNConv(16, 4, cached=True).to(device)
    params = list(conv1.parameters()) + list(conv2.parameters())
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        h = F.relu(conv1(F.dropout(g.x, 0.5, True), g.edge_index))
        out = conv2(F.dropout(h, 0.5, True), g.edge_index)
        F.cross_entropy(out[g.train_mask], g.y[g.train_mask]).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        with torch.no_grad():  # the example's test(): a full forward without dropout
            conv2(F.relu(conv1(g.x, g.edge_index)), g.edge_index).argmax(dim=1)
    return 1e3 * statistics.median(times[1:])


def bare_isolated(nodes: int, epochs: int, device: str, threads: int) -> float:
    """``bare_gcnconv_ms`` in a fresh process, like the implementations, so both start alike."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_bare_worker, nodes, epochs, device, threads).result()


def _bare_worker(nodes: int, epochs: int, device: str, threads: int) -> float:
    torch.set_num_threads(threads)
    return bare_gcnconv_ms(nodes, epochs, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000,100000")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="alternating pyg / bare runs; medians reported")
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
        f"{'dense/pyg':>10} {'bare GCNConv ms':>16} {'pyg/bare':>9}"
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
        pyg_runs, bares = [], []
        for _ in range(args.repeats):  # alternate, each in a fresh process, so drift hits both alike
            pyg_runs.append(_run_isolated(asdict(spec), "pyg", args.threads))
            bares.append(bare_isolated(nodes, args.epochs, args.device, args.threads))
        pyg = sorted(pyg_runs, key=lambda r: r["epoch_ms_median"])[len(pyg_runs) // 2]
        bare = statistics.median(bares)
        if not args.skip_dense and dense_adjacency_bytes(nodes) <= budget:
            dense = _run_isolated(asdict(spec), "dense", args.threads)
            d_ms, d_mb = f"{dense['epoch_ms_median']:.2f}", f"{dense['peak_memory_mb']:.0f}"
            ratio = f"{dense['epoch_ms_median'] / pyg['epoch_ms_median']:.2f}"
        else:
            d_ms, ratio = ("skipped", "-") if args.skip_dense else ("over budget", "-")
            d_mb = "-" if args.skip_dense else f"({dense_adjacency_bytes(nodes) / 1e9:.0f} GB)"
        print(
            f"{nodes:>8,} {d_ms:>15} {d_mb:>9} {pyg['epoch_ms_median']:>13.2f} {pyg['peak_memory_mb']:>8.0f} "
            f"{ratio:>10} {bare:>16.2f} {pyg['epoch_ms_median'] / bare:>9.2f}"
        )


if __name__ == "__main__":
    main()
