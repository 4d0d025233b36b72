"""Planetoid's pickled raw files are read without running code: a restricted unpickler, a safetensors
cache keyed by the raw files' contents, and the same tensors as torch-geometric's own reader.

Most tests use a small synthetic Planetoid set written here (600 nodes, pickled with numpy / scipy like
the originals), so they run without the shared data; one compares with the real Cora files.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rnnkit.data import planetoid
from rnnkit.data.graphs import load_graph
from rnnkit.errors import RunError, UsageError
from tests.helpers import SHARED_DATA, assert_one_line_error, run

REPO = Path(__file__).resolve().parents[1]
CORA_RAW = SHARED_DATA / "planetoid" / "Cora" / "raw"
PICKLED = [p for p in planetoid.PARTS if p != "test.index"]


def planetoid_files(name: str = "cora", *, gaps: int = 0, fmt: str = "csr", seed: int = 0) -> dict[str, bytes]:
    """The eight files of a small Planetoid-style set: 20 training nodes, 540 more labelled nodes (the
    500 validation nodes among them), 40 test nodes listed out of order, and ``gaps`` isolated nodes
    among the test ids (like CiteSeer's). Features are ``fmt`` sparse matrices (or dense arrays)."""
    rng = np.random.default_rng(seed)
    n_all, n_test, n_feat, n_class = 560, 40, 8, 3
    n = n_all + n_test + gaps

    def features(rows: int) -> np.ndarray:
        return (rng.random((rows, n_feat)) < 0.3).astype(np.float32)

    def stored(dense: np.ndarray):
        return dense if fmt == "dense" else getattr(sp, f"{fmt}_matrix")(dense)

    def one_hot(rows: int) -> np.ndarray:
        return np.eye(n_class, dtype=np.int32)[rng.integers(0, n_class, rows)]

    allx, ally = features(n_all), one_hot(n_all)
    isolated = rng.choice(np.arange(n_all + 1, n - 1), gaps, replace=False)  # ids inside the test range
    connected = np.setdiff1d(np.arange(n), isolated)
    test_ids = rng.permutation(connected[n_all:])
    graph: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
    for a, b in rng.choice(connected, (900, 2)):
        graph[int(a)].append(int(b))
        graph[int(b)].append(int(a))
    graph[3].extend([3, 7, 7])  # a self loop and a duplicate, which the reader drops
    for node in range(n):
        graph[node]  # every node is a key, isolated ones with no neighbours
    objects = {
        "x": stored(allx[:20]),
        "tx": stored(features(n_test)),
        "allx": stored(allx),
        "y": ally[:20],
        "ty": one_hot(n_test),
        "ally": ally,
        "graph": graph,
    }
    files = {part: pickle.dumps(obj, protocol=4) for part, obj in objects.items()}
    files["test.index"] = "".join(f"{i}\n" for i in test_ids).encode()
    return files


def write_set(root: Path, files: dict[str, bytes], name: str = "cora") -> Path:
    """``files`` written to ``root/planetoid/<Name>/raw``; returns ``root`` (the --data-dir)."""
    raw = root / "planetoid" / planetoid_folder(name) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, data in files.items():
        (raw / f"ind.{name}.{part}").write_bytes(data)
    return root


def planetoid_folder(name: str) -> str:
    return {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}[name]


def evil(marker: Path, how: str = "system") -> bytes:
    """A pickle that creates ``marker`` when loaded by an unrestricted unpickler."""

    class Evil:
        def __reduce__(self):
            if how == "exec":
                return (exec, (f"open({str(marker)!r}, 'w').close()",))
            return (os.system, (f"touch {marker}",))

    if how == "nested":  # hidden inside an otherwise plausible graph dict
        return pickle.dumps({0: [1], 1: [0, Evil()]}, protocol=2)
    return pickle.dumps(Evil(), protocol=2)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private rnnkit cache folder, no RNNKIT_DATA_DIR; returns the Planetoid cache root."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RNNKIT_DATA_DIR", raising=False)
    return tmp_path / "xdg" / "rnnkit" / "planetoid"


def _tensors(graph) -> dict[str, torch.Tensor]:
    return {k: getattr(graph, k) for k in planetoid.TENSORS}


def assert_same(ours: dict[str, torch.Tensor], theirs) -> None:
    for key in planetoid.TENSORS:
        a, b = ours[key], getattr(theirs, key)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), key


# --- the same tensors as torch-geometric -------------------------------------------------------------


@pytest.mark.parametrize("name,gaps", [("cora", 0), ("citeseer", 7)])
def test_reader_matches_torch_geometric_on_a_synthetic_set(tmp_path, name, gaps):
    from torch_geometric.io.planetoid import read_planetoid_data

    raw = write_set(tmp_path, planetoid_files(name, gaps=gaps), name) / "planetoid" / planetoid_folder(name) / "raw"
    ours = planetoid.read_raw(name, raw)
    assert_same(ours, read_planetoid_data(str(raw), name))  # trusted files we just wrote
    assert ours["x"].shape == (600 + gaps, 8) and ours["train_mask"].sum() == 20 and ours["val_mask"].sum() == 500


@pytest.mark.parametrize("fmt", ["csc", "coo", "lil", "dense"])
def test_every_matrix_format_reads_like_csr(tmp_path, fmt):
    csr = planetoid.read_raw("cora", write_set(tmp_path / "a", planetoid_files()) / "planetoid/Cora/raw")
    other = planetoid.read_raw("cora", write_set(tmp_path / "b", planetoid_files(fmt=fmt)) / "planetoid/Cora/raw")
    for key in planetoid.TENSORS:
        assert torch.equal(csr[key], other[key]), key


@pytest.mark.skipif(not CORA_RAW.is_dir(), reason="no shared data")
def test_cora_matches_torch_geometric(cache):
    """`rnnkit gcn --dataset cora --data-dir ../shared/data` sees exactly the graph it saw through
    torch-geometric's Planetoid: the same tensors from the raw files, the same normalised features."""
    from torch_geometric.io.planetoid import read_planetoid_data

    reference = read_planetoid_data(str(CORA_RAW), "cora")  # trusted reference data
    assert_same(planetoid.read_raw("cora", CORA_RAW), reference)
    for _ in range(2):  # the first load writes the cache, the second reads it
        graph = load_graph("cora", data_dir=SHARED_DATA)
        expected_x = reference.x / reference.x.sum(dim=1, keepdim=True).clamp(min=1)
        assert torch.equal(graph.x, expected_x) and graph.num_classes == 7
        assert all(torch.equal(getattr(graph, k), getattr(reference, k)) for k in planetoid.TENSORS[1:])
    assert [p.name for p in cache.glob("cora-*.safetensors")] == [
        planetoid.cache_path(cache, "cora", planetoid.read_contents("cora", CORA_RAW)).name
    ]


# --- crafted files run nothing -----------------------------------------------------------------------


@pytest.mark.parametrize("part", planetoid.PARTS)
def test_a_malicious_raw_file_is_refused(tmp_path, cache, part):
    marker = tmp_path / "MARKER"
    files = planetoid_files()
    files[part] = evil(marker)
    data = write_set(tmp_path / "data", files)
    with pytest.raises(RunError) as info:
        load_graph("cora", data_dir=data)
    message = str(info.value)
    assert not marker.exists()
    assert f"ind.cora.{part}" in message and "\n" not in message
    words = "not a list of node ids" if part == "test.index" else "refuses to load 'posix.system'"
    assert words in message
    assert not list(cache.glob("*.safetensors"))


@pytest.mark.parametrize("how,refused", [("exec", "__builtin__.exec"), ("nested", "posix.system")])
def test_other_payloads_are_refused(tmp_path, cache, how, refused):
    marker = tmp_path / "MARKER"
    files = planetoid_files()
    files["graph"] = evil(marker, how)
    with pytest.raises(RunError, match=f"ind.cora.graph: refuses to load '{refused}'"):
        load_graph("cora", data_dir=write_set(tmp_path / "data", files))
    assert not marker.exists()


def test_the_cli_refuses_crafted_files(tmp_path):
    """`rnnkit gcn` as a user runs it (two subprocesses, in parallel): a crafted raw file or a crafted
    cache file is one error line and exit 1, and the marker its payload would create never appears.
    Every other part and payload is covered in-process above and below."""
    marker = tmp_path / "MARKER"
    files = planetoid_files()
    files["x"] = evil(marker)
    cases = {"raw file": (write_set(tmp_path / "bad", files), tmp_path / "bad" / "xdg")}
    good = planetoid_files()
    cache_root = tmp_path / "good" / "xdg" / "rnnkit" / "planetoid"
    cache_root.mkdir(parents=True)
    planetoid.cache_path(cache_root, "cora", good).write_bytes(evil(marker))
    cases["cache file"] = (write_set(tmp_path / "good", good), tmp_path / "good" / "xdg")
    expected = {
        "raw file": "ind.cora.x: refuses to load 'posix.system'",
        "cache file": "is not a valid rnnkit Planetoid cache",
    }

    env = {k: v for k, v in os.environ.items() if k not in ("RNNKIT_DATA_DIR", "RNNKIT_DEBUG")}
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-m", "rnnkit", "gcn", "--dataset", "cora", "--data-dir", str(data_dir)]
            + ["--runs", "1", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out")],
            cwd=REPO,
            env={**env, "XDG_CACHE_HOME": str(xdg)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (data_dir, xdg) in cases.items()
    }
    for case, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, (case, proc.returncode, stderr)
        assert "Traceback" not in stderr and "internal error" not in stderr, (case, stderr)
        assert lines[0].startswith("error:") and expected[case] in lines[0], (case, lines[0])
    assert not marker.exists()


def test_old_torch_geometric_processed_files_are_never_read(tmp_path, cache):
    """Where rnnkit let torch-geometric keep its processed copies (pickles it loaded with
    weights_only=False), crafted files are simply ignored."""
    marker = tmp_path / "MARKER"
    data = write_set(tmp_path / "data", planetoid_files())
    for sub in ("download", "local-0123456789ab"):
        processed = cache / sub / "Cora" / "processed"
        processed.mkdir(parents=True)
        for file in ("data.pt", "pre_transform.pt", "pre_filter.pt"):
            (processed / file).write_bytes(evil(marker))
    (cache / "local-0123456789ab" / "Cora" / "raw").symlink_to(data / "planetoid" / "Cora" / "raw")
    graph = load_graph("cora", data_dir=data)
    assert graph.num_nodes == 600 and not marker.exists()


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "not a readable Planetoid pickle (EOFError"),
        (b"\x80\x02garbage", "not a readable Planetoid pickle"),
        (None, "not a readable Planetoid pickle"),  # truncated
        (pickle.dumps({"a": 1}), "holds a dict, not an array"),
        (pickle.dumps(np.array(["a", "b"], dtype=object)), "not a numeric array"),
        (pickle.dumps(np.zeros(3)), "expected a 2-D matrix"),
        (pickle.dumps(np.zeros((20, 5))), "do not fit together"),  # 5 features, allx has 8
    ],
)
def test_damaged_raw_files_are_one_line_errors(tmp_path, cache, content, words):
    files = planetoid_files()
    files["x"] = files["x"][: len(files["x"]) // 2] if content is None else content
    with pytest.raises(RunError) as info:
        load_graph("cora", data_dir=write_set(tmp_path, files))
    assert "ind.cora.x" in str(info.value) or "files in" in str(info.value)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "part,content,words",
    [
        ("x", None, "not a valid csr matrix (ValueError"),  # a column index past the 8 columns
        ("graph", pickle.dumps([1, 2]), "not a {node: [neighbours]} dict"),
        ("graph", pickle.dumps({0: [1, "two"]}), "not an integer"),
        ("graph", pickle.dumps({0: [10_000]}), "nodes outside 0..599"),
        ("test.index", b"1\n2\nthree\n", "not a list of node ids"),
        ("test.index", b"-4\n", "a test node id outside"),
        ("test.index", b"99999999999\n", "a test node id outside"),
        ("test.index", b"".join(b"%d\n" % i for i in range(560, 599)) + b"123456\n", "do not fit together"),
    ],
)
def test_inconsistent_raw_files_are_one_line_errors(tmp_path, cache, part, content, words):
    files = planetoid_files()
    files[part] = content if content is not None else _csr_with_bad_index()
    with pytest.raises(RunError) as info:
        load_graph("cora", data_dir=write_set(tmp_path, files))
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def _csr_with_bad_index() -> bytes:
    matrix = sp.csr_matrix(np.eye(20, 8, dtype=np.float32))
    matrix.indices[0] = 99  # scipy would refuse this in the constructor, so it is set afterwards
    return pickle.dumps(matrix, protocol=4)


# --- the cache ---------------------------------------------------------------------------------------


def test_cache_is_written_then_read_and_a_changed_raw_file_is_noticed(tmp_path, cache):
    data = write_set(tmp_path, planetoid_files())
    raw = data / "planetoid" / "Cora" / "raw"
    first = load_graph("cora", data_dir=data)
    (cached,) = cache.glob("cora-*.safetensors")
    assert cached.name == f"cora-{planetoid.content_key(planetoid.read_contents('cora', raw))}.safetensors"
    again = load_graph("cora", data_dir=data)
    assert all(torch.equal(getattr(first, k), getattr(again, k)) for k in planetoid.TENSORS)

    (raw / "ind.cora.allx").write_bytes(planetoid_files(seed=1)["allx"])  # a different valid matrix
    changed = load_graph("cora", data_dir=data)
    assert not torch.equal(changed.x, first.x) and len(list(cache.glob("cora-*.safetensors"))) == 2

    (raw / "ind.cora.allx").write_bytes(b"\x80\x02corrupted later")
    with pytest.raises(RunError, match="ind.cora.allx: not a readable Planetoid pickle"):
        load_graph("cora", data_dir=data)


@pytest.mark.parametrize("damage", ["garbage", "missing tensor", "bad index", "pickle", "folder"])
def test_a_bad_cache_file_says_to_delete_it(tmp_path, cache, damage):
    from safetensors.torch import save

    files = planetoid_files()
    data = write_set(tmp_path, files)
    load_graph("cora", data_dir=data)
    path = planetoid.cache_path(cache, "cora", files)
    tensors = planetoid.read_cache(path)
    if damage == "garbage":
        path.write_bytes(b"not safetensors at all")
    elif damage == "missing tensor":
        path.write_bytes(save({k: v for k, v in tensors.items() if k != "test_mask"}))
    elif damage == "bad index":
        path.write_bytes(save({**tensors, "edge_index": tensors["edge_index"] + 10_000}))
    elif damage == "pickle":
        path.write_bytes(evil(tmp_path / "MARKER"))
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(RunError) as info:
        load_graph("cora", data_dir=data)
    message = str(info.value)
    assert str(path) in message and "delete it" in message and "\n" not in message
    assert not (tmp_path / "MARKER").exists()


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch, cache):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("rnnkit.data.planetoid.atomic_write_bytes", refuse)
    graph = load_graph("cora", data_dir=write_set(tmp_path, planetoid_files()))
    assert graph.num_nodes == 600 and not list(cache.glob("*.safetensors"))


# --- where the files come from -----------------------------------------------------------------------


def test_download_fetches_the_eight_files_and_reads_them_restricted(tmp_path, cache, monkeypatch):
    files = planetoid_files()
    fetched = []

    def fake_fetch(url: str) -> bytes:
        fetched.append(url)
        return files[url.rsplit("ind.cora.", 1)[1]]

    monkeypatch.setattr(planetoid, "fetch", fake_fetch)
    graph = load_graph("cora", data_dir=tmp_path / "nothing-here")
    assert graph.num_nodes == 600
    assert fetched == [f"{planetoid.URL}/ind.cora.{p}" for p in planetoid.PARTS]
    assert sorted(p.name for p in (cache / "download" / "Cora" / "raw").iterdir()) == sorted(
        f"ind.cora.{p}" for p in planetoid.PARTS
    )
    load_graph("cora")  # downloaded once: the second load fetches nothing
    assert len(fetched) == 8

    files["graph"] = evil(tmp_path / "MARKER")
    (cache / "download" / "Cora" / "raw" / "ind.cora.graph").unlink()
    with pytest.raises(RunError, match="ind.cora.graph: refuses to load"):
        load_graph("cora")
    assert not (tmp_path / "MARKER").exists()


def test_no_local_copy_and_no_network(tmp_path, cache, monkeypatch):
    def offline(url: str) -> bytes:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(planetoid, "fetch", offline)
    result = run("gcn", "--dataset", "pubmed", "--data-dir", str(tmp_path / "empty"), "--no-progress")
    assert_one_line_error(
        result, 1, "cannot load pubmed", "Network is unreachable", "planetoid/PubMed/raw", "--data-dir DIR"
    )


def test_a_data_dir_that_is_a_file_is_a_usage_error(tmp_path, cache, monkeypatch):
    def no_download(url: str) -> bytes:
        raise AssertionError("no download may be tried")

    monkeypatch.setattr(planetoid, "fetch", no_download)
    file = tmp_path / "cora.tar"
    file.write_text("not a folder")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        load_graph("cora", data_dir=file)
    assert_one_line_error(run("gcn", "--dataset", "cora", "--data-dir", str(file)), 2, f"--data-dir {file} is a file")
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(file))
    assert_one_line_error(run("gcn", "--dataset", "cora"), 2, f"RNNKIT_DATA_DIR={file} is a file")


def test_an_incomplete_local_folder_names_the_missing_files(tmp_path, cache):
    files = planetoid_files()
    del files["graph"], files["ty"]
    with pytest.raises(RunError, match="lacks ind.cora.ty, ind.cora.graph: Planetoid needs all eight"):
        load_graph("cora", data_dir=write_set(tmp_path, files))
