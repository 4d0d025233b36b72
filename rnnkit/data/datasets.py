"""The names of the graphs rnnkit knows: the one list, read by the graph task, ``rnnkit gcn`` and
its ``--help`` (so this module imports nothing heavy)."""

from __future__ import annotations

from typing import Literal, get_args

Dataset = Literal["karate", "cora", "citeseer", "pubmed", "synthetic"]
DATASETS: tuple[str, ...] = get_args(Dataset)
#: The Planetoid citation graphs, by the name rnnkit uses and the folder name Planetoid uses.
PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
