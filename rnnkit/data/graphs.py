"""Graphs for node classification: Zachary's karate club, the Planetoid citation graphs, and a seeded
stochastic block model for scaling.

Planetoid sets (``cora``, ``citeseer``, ``pubmed``) have the public split. Their raw files are looked
for under ``data_dir`` / ``$RNNKIT_DATA_DIR`` (``planetoid/<Name>/raw/`` or ``<Name>/raw/``); with no
local copy they are downloaded into the cache folder. They are pickles, so ``rnnkit.data.planetoid``
reads them with a restricted unpickler (never torch-geometric's ``Planetoid``, which unpickles them and
its processed cache freely) and caches the built tensors as safetensors. torch-geometric is imported
only inside the karate club's loader (rnnkit's data code uses it nowhere else), so ``rnnkit --help``
stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnkit.data import planetoid
from rnnkit.data.datasets import DATASETS, PLANETOID
from rnnkit.data.text import cache_dir
from rnnkit.errors import RunError, UsageError

PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


@dataclass
class Graph:
    """One graph with node features, labels and train / validation / test masks.

    Shapes: x (nodes, features) float; edge_index (2, edges) int64, both directions listed;
    y (nodes,) int64; masks (nodes,) bool.
    """

    name: str
    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def to(self, device: torch.device | str) -> Graph:
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Graph(**fields)


def load_graph(
    name: str,
    *,
    data_dir: str | Path | None = None,
    nodes: int = 1000,
    degree: float = 10.0,
    classes: int = 4,
    features: int = 32,
    seed: int = 0,
) -> Graph:
    """The graph called ``name`` (see DATASETS); synthetic graphs use the size arguments and ``seed``."""
    name = name.lower()
    if name == "karate":
        return _karate()
    if name in PLANETOID:
        return _planetoid(name, data_dir)
    if name == "synthetic":
        if nodes < 20 * classes + 3:
            raise UsageError(
                f"a synthetic graph with {classes} classes needs at least {20 * classes + 3} nodes "
                f"(20 training nodes per class, then validation and test nodes); got {nodes}"
            )
        return stochastic_block_model(nodes, degree, classes, features, seed)
    raise UsageError(f"unknown dataset '{name}'. Available: {', '.join(DATASETS)}")


def _karate() -> Graph:
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    # KarateClub marks one training node per class; of the other 30, a fixed 10 validate and 20 test.
    train = data.train_mask
    rest = torch.nonzero(~train).flatten()
    rest = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))]
    val = torch.zeros_like(train)
    test = torch.zeros_like(train)
    val[rest[:10]] = True
    test[rest[10:]] = True
    return Graph("karate", data.x, data.edge_index, data.y, train, val, test, int(data.y.max()) + 1)


def _cache_root() -> Path:
    return cache_dir() / "planetoid"


def _data_roots(data_dir: str | Path | None) -> list[Path]:
    """The folders Planetoid files are looked for in: ``data_dir``, then ``$RNNKIT_DATA_DIR``. One that is
    a file is a usage error (rather than silently no local copy, then a download); one that does not
    exist is only skipped."""
    roots = []
    for value, origin in ((data_dir, "--data-dir"), (os.environ.get("RNNKIT_DATA_DIR"), "RNNKIT_DATA_DIR")):
        if not value:
            continue
        root = Path(value).expanduser()
        if root.exists() and not root.is_dir():
            shown = f"--data-dir {root}" if origin == "--data-dir" else f"RNNKIT_DATA_DIR={root}"
            raise UsageError(f"{shown} is a file, not a directory (give the folder that holds planetoid/<Name>/raw)")
        roots.append(root)
    return roots


def _planetoid(name: str, data_dir: str | Path | None) -> Graph:
    folder = PLANETOID[name]
    roots = _data_roots(data_dir)
    local = next(
        (
            raw
            for root in roots
            for raw in (root / "planetoid" / folder / "raw", root / folder / "raw")
            if raw.is_dir() and any(raw.iterdir())
        ),
        None,
    )
    if local is not None:
        missing = [f"ind.{name}.{part}" for part in PLANETOID_FILES if not (local / f"ind.{name}.{part}").is_file()]
        if missing:
            raise RunError(f"{local} lacks {', '.join(missing)}: Planetoid needs all eight ind.{name}.* files")
        raw = local
    else:
        raw = _cache_root() / "download" / folder / "raw"  # where earlier versions downloaded them too
        try:
            planetoid.download(name, raw)
        except RunError as exc:
            where = " or ".join(str(r / "planetoid" / folder / "raw") for r in roots) or f"DIR/planetoid/{folder}/raw"
            raise RunError(
                f"cannot load {name}: no local copy and the download failed ({exc}); put Planetoid's raw files "
                f"(ind.{name}.x, ...) in {where} and pass --data-dir DIR (or RNNKIT_DATA_DIR)"
            ) from None
    data = planetoid.load(name, raw, _cache_root())
    x = data["x"] / data["x"].sum(dim=1, keepdim=True).clamp(min=1)  # row-normalised bag of words, as Kipf & Welling
    y = data["y"]
    return Graph(
        name, x, data["edge_index"], y, data["train_mask"], data["val_mask"], data["test_mask"], int(y.max()) + 1
    )


def stochastic_block_model(nodes: int, degree: float, classes: int, features: int, seed: int) -> Graph:
    """A seeded stochastic block model: ``classes`` equal blocks, average degree ``degree`` with 80% of
    edges inside a block, and features drawn around a per-class mean. Split: 20 training nodes per
    class, then 500 validation and 1,000 test nodes (fewer on small graphs), like Planetoid."""
    if nodes < 2 * classes or classes < 2:
        raise UsageError(
            f"a synthetic graph needs at least 2 classes and 2 nodes per class (got {nodes} nodes, {classes} classes)"
        )
    if degree <= 0:
        raise UsageError(f"--degree must be positive, got {degree}")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(nodes) % classes  # (nodes,)
    y = y[torch.randperm(nodes, generator=g)]
    edges = int(nodes * degree / 2)
    src = torch.randint(0, nodes, (edges,), generator=g)
    same = torch.rand(edges, generator=g) < 0.8
    # for an in-block edge pick a random node of the same class; otherwise any node
    by_class = [torch.nonzero(y == c).flatten() for c in range(classes)]
    dst = torch.randint(0, nodes, (edges,), generator=g)
    for c, members in enumerate(by_class):
        pick = same & (y[src] == c)
        dst[pick] = members[torch.randint(0, len(members), (int(pick.sum()),), generator=g)]
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])  # (2, E)
    means = torch.randn(classes, features, generator=g)  # (classes, features)
    x = means[y] + 2.0 * torch.randn(nodes, features, generator=g)  # (nodes, features)
    order = torch.randperm(nodes, generator=g)
    train = torch.zeros(nodes, dtype=torch.bool)
    for c in range(classes):
        train[order[y[order] == c][:20]] = True
    rest = order[~train[order]]
    n_val = min(500, len(rest) // 3)
    n_test = min(1000, len(rest) - n_val)
    val = torch.zeros(nodes, dtype=torch.bool)
    test = torch.zeros(nodes, dtype=torch.bool)
    val[rest[:n_val]] = True
    test[rest[n_val : n_val + n_test]] = True
    return Graph("synthetic", x, edge_index, y, train, val, test, classes)
