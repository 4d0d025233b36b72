"""Planetoid's citation graphs (Cora, CiteSeer, PubMed) read from their raw files without running code.

The raw files (``ind.<name>.x``, ``tx``, ``allx``, ``y``, ``ty``, ``ally``, ``graph``, ``test.index``) are
Python 2 pickles, and a pickle can run any code while it loads. torch-geometric's ``Planetoid`` loads
them (and its processed cache) with plain pickle, so a crafted file under ``--data-dir`` or in the cache
would run code during ``rnnkit gcn``. Here they go through a restricted unpickler that resolves only the
handful of globals those files contain (numpy arrays and dtypes, scipy's sparse matrix classes, dict,
list, tuple, set, defaultdict) and refuses anything else before it is imported or called.

scipy's classes are plain Python classes, so even an allowed one could be mutated by a crafted pickle
(``BUILD`` with slot state sets class attributes); the unpickler therefore never hands them out: it
gives each load fresh stand-in classes that only collect the matrix's state, and the matrix is rebuilt
from that state with scipy's constructor and index checks after unpickling. numpy's ndarray and dtype
and the builtins are C types that cannot be mutated.

From the unpickled arrays the graph is built exactly as torch-geometric's ``read_planetoid_data`` builds
it (the public split, CiteSeer's isolated test nodes, the edge list with self loops removed and
duplicates merged, ordered by target then source), so results match torch-geometric's to the bit.

The built tensors are cached as safetensors (no pickle) under a key derived from the raw files'
contents, so a changed raw file is noticed on the next load.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.checkpoint import atomic_write_bytes
from rnnkit.errors import RunError

PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
#: The tensors of a loaded Planetoid graph (and of its cache file).
TENSORS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")
#: Part of the cache key: bump it when the way the tensors are built changes.
CACHE_FORMAT = "rnnkit-planetoid-1"
VAL_NODES = 500
#: A feature or label matrix larger than this (entries) is refused rather than densified.
MAX_DENSE_ENTRIES = 1 << 30
MAX_NODES = 1 << 24

_SPARSE_MODULES = {
    "csr_matrix": ("scipy.sparse", "scipy.sparse.csr", "scipy.sparse._csr"),
    "csc_matrix": ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc"),
    "coo_matrix": ("scipy.sparse", "scipy.sparse.coo", "scipy.sparse._coo"),
    "lil_matrix": ("scipy.sparse", "scipy.sparse.lil", "scipy.sparse._lil"),
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy globals a pickled array or scalar names, under numpy 1's and numpy 2's module paths."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


def _builtin_globals() -> dict[tuple[str, str], Any]:
    """dict / list / tuple / set under Python 3's and Python 2's module names, and defaultdict."""
    import collections

    allowed: dict[tuple[str, str], Any] = {("collections", "defaultdict"): collections.defaultdict}
    for module in ("builtins", "__builtin__"):
        for kind in (dict, list, tuple, set):
            allowed[(module, kind.__name__)] = kind
    return allowed


class _SparseState:
    """What a pickled scipy sparse matrix becomes while unpickling: an inert object holding its state.

    ``format`` names the matrix class; the instance ``__dict__`` receives the pickled attributes
    (``data``, ``indices``, ``indptr``, ``_shape``, ...). A subclass is made per load, so a crafted
    pickle that sets class attributes changes nothing outside that one load.
    """

    format = ""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals Planetoid's files contain and refuses any other.

    ``find_class`` is the one place a pickle gets hold of a callable (GLOBAL, STACK_GLOBAL, INST, OBJ
    and the extension registry all go through it), so refusing there means nothing else is imported
    or called. Persistent ids are refused by the base class.
    """

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 str -> bytes-as-latin1, as numpy expects
        self.path = path
        self.allowed = {**_numpy_globals(), **_builtin_globals()}
        for cls_name, modules in _SPARSE_MODULES.items():
            stand_in = type(cls_name, (_SparseState,), {"format": cls_name[:3]})
            for module in modules:
                self.allowed[(module, cls_name)] = stand_in

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise RunError(
                f"{self.path}: refuses to load '{module}.{name}' (only numpy/scipy arrays are allowed in "
                "Planetoid's files); this is not an original Planetoid file, replace it"
            ) from None


def _unpickle(path: Path, content: bytes) -> Any:
    """The object pickled in ``content`` (the bytes of ``path``), read with the restricted unpickler."""
    try:
        return _RestrictedUnpickler(io.BytesIO(content), path).load()
    except RunError:
        raise
    except Exception as exc:  # noqa: BLE001 - garbage makes pickle raise anything from EOFError to KeyError
        raise RunError(f"{path}: not a readable Planetoid pickle ({_reason(exc)}); replace it") from None


def _reason(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _numeric(arr: Any, path: Path, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise RunError(f"{path}: {what} is {kind}, not a numeric array; replace the file")
    return arr


def _dense(obj: Any, path: Path) -> np.ndarray:
    """A feature or label matrix as a 2-D numeric ndarray: a dense array as it is, a sparse matrix rebuilt
    from its pickled state through scipy's constructors (which check every index) and densified."""
    import scipy.sparse as sp

    if isinstance(obj, np.ndarray):
        arr = _numeric(obj, path, "the matrix")
    elif isinstance(obj, _SparseState):
        state = obj.__dict__
        fmt = type(obj).format  # the class it was pickled as; a "format" in its state could say anything
        shape = state.get("_shape", state.get("shape"))
        if not (
            isinstance(shape, tuple)
            and len(shape) == 2
            and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise RunError(f"{path}: the sparse matrix has no valid shape ({shape!r}); replace the file")
        shape = (int(shape[0]), int(shape[1]))
        if shape[0] * shape[1] > MAX_DENSE_ENTRIES:
            raise RunError(f"{path}: a {shape[0]:,}x{shape[1]:,} matrix is too large for a Planetoid file")
        try:
            fields = {k: _numeric(state[k], path, k) for k in _SPARSE_FIELDS[fmt] if k in state}
            if fmt in ("csr", "csc"):
                cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
                matrix = cls((fields["data"], fields["indices"], fields["indptr"]), shape=shape)
                matrix.check_format(full_check=True)
            elif fmt == "coo":
                row, col = (fields["row"], fields["col"]) if "row" in fields else state["coords"]
                coords = (_numeric(row, path, "row"), _numeric(col, path, "col"))
                matrix = sp.coo_matrix((fields["data"], coords), shape)
            else:  # lil: per-row lists of column indices and of values
                rows, values = state["rows"], state["data"]
                if len(rows) != shape[0] or len(values) != shape[0]:
                    raise ValueError("rows and data do not match the shape")
                r = np.repeat(np.arange(shape[0]), [len(cols) for cols in rows])
                c = np.array([int(i) for cols in rows for i in cols], dtype=np.int64)
                v = np.array([float(x) for vals in values for x in vals], dtype=np.float64)
                matrix = sp.coo_matrix((v, (r, c)), shape)
            arr = np.asarray(matrix.todense())
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - scipy reports bad indices as ValueError, missing fields as KeyError
            raise RunError(f"{path}: not a valid {fmt} matrix ({_reason(exc)}); replace the file") from None
    else:
        raise RunError(f"{path}: holds a {type(obj).__name__}, not an array or a sparse matrix; replace the file")
    if arr.ndim != 2:
        raise RunError(f"{path}: expected a 2-D matrix, got shape {arr.shape}; replace the file")
    return arr


_SPARSE_FIELDS = {
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "coo": ("data", "row", "col"),
    "lil": (),
}


def _float_tensor(arr: np.ndarray) -> torch.Tensor:
    """``arr`` as float32, converted the way torch-geometric does (``from_numpy(...).to(float)``)."""
    native = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")  # a copy torch can own
    return torch.from_numpy(native).to(torch.float)


def _adjacency(obj: Any, path: Path) -> dict[int, list[int]]:
    """The graph file's {node: [neighbours]} with every id checked to be an int."""
    if not isinstance(obj, dict):
        raise RunError(f"{path}: holds a {type(obj).__name__}, not a {{node: [neighbours]}} dict; replace the file")
    adjacency: dict[int, list[int]] = {}
    for key, value in obj.items():
        if not isinstance(value, (list, tuple)):
            raise RunError(f"{path}: node {key!r} has a {type(value).__name__} of neighbours, not a list")
        ids = [key, *value]
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise RunError(f"{path}: node {key!r} has a neighbour id that is not an integer; replace the file")
        adjacency[int(key)] = [int(i) for i in value]
    return adjacency


def _test_index(path: Path, content: bytes) -> torch.Tensor:
    """The test node ids, one integer per line."""
    try:
        ids = [int(line) for line in content.decode("ascii").split() if line]
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path}: not a list of node ids, one per line ({_reason(exc)}); replace it") from None
    if not ids or min(ids) < 0 or max(ids) >= MAX_NODES:
        problem = "no test node" if not ids else f"a test node id outside 0..{MAX_NODES - 1:,}"
        raise RunError(f"{path}: lists {problem}; replace it")
    return torch.tensor(ids, dtype=torch.long)


def _index_to_mask(index: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[index] = True
    return mask


def edge_index_from_dict(adjacency: dict[int, list[int]], num_nodes: int) -> torch.Tensor:
    """(2, E) int64 edges (source, target) of ``adjacency`` without self loops or duplicates, ordered by
    target then source: torch-geometric's ``remove_self_loops`` then ``coalesce(sort_by_row=False)``."""
    rows = [key for key, value in adjacency.items() for _ in value]
    cols = [c for value in adjacency.values() for c in value]
    row, col = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    if len(rows) and (min(row.min(), col.min()) < 0 or max(row.max(), col.max()) >= num_nodes):
        raise ValueError(f"the graph names nodes outside 0..{num_nodes - 1}")
    keep = row != col
    key = torch.unique(col[keep] * num_nodes + row[keep])  # sorted, duplicates merged
    return torch.stack([key % num_nodes, key // num_nodes])


def build_graph(name: str, parts: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The graph tensors (TENSORS) from the unpickled parts, as torch-geometric's ``read_planetoid_data``
    builds them: x stacks allx and tx, y is the argmax of the one-hot labels, the test rows are put at
    the ids of test.index; the public split trains on the first len(y) nodes and validates on the
    next 500. ``x`` is not normalised here."""
    x, tx, allx, y, ty, ally = (parts[p] for p in ("x", "tx", "allx", "y", "ty", "ally"))
    test_index: torch.Tensor = parts["test.index"]
    train_index = torch.arange(y.size(0), dtype=torch.long)
    val_index = torch.arange(y.size(0), y.size(0) + VAL_NODES, dtype=torch.long)
    sorted_test_index = test_index.sort()[0]
    if name == "citeseer":
        # CiteSeer has isolated nodes, so its test ids are not consecutive: their rows of tx / ty are
        # zeros, added at the gaps (torch-geometric does the same).
        len_test_indices = int(test_index.max() - test_index.min()) + 1
        tx_ext = torch.zeros(len_test_indices, tx.size(1), dtype=tx.dtype)
        tx_ext[sorted_test_index - test_index.min(), :] = tx
        ty_ext = torch.zeros(len_test_indices, ty.size(1), dtype=ty.dtype)
        ty_ext[sorted_test_index - test_index.min(), :] = ty
        tx, ty = tx_ext, ty_ext
    features = torch.cat([allx, tx], dim=0)
    features[test_index] = features[sorted_test_index]
    labels = torch.cat([ally, ty], dim=0).max(dim=1)[1]
    labels[test_index] = labels[sorted_test_index]
    num_nodes = labels.size(0)
    if features.size(0) != num_nodes or x.size(1) != features.size(1):
        raise ValueError("the feature and label files do not have matching shapes")
    return {
        "x": features,
        "edge_index": edge_index_from_dict(parts["graph"], num_nodes),
        "y": labels,
        "train_mask": _index_to_mask(train_index, num_nodes),
        "val_mask": _index_to_mask(val_index, num_nodes),
        "test_mask": _index_to_mask(test_index, num_nodes),
    }


def read_raw(name: str, raw_dir: Path, contents: dict[str, bytes] | None = None) -> dict[str, torch.Tensor]:
    """The graph tensors of the ``name`` files in ``raw_dir`` (``contents``: their bytes, if already read)."""
    contents = contents if contents is not None else read_contents(name, raw_dir)
    parts: dict[str, Any] = {}
    for part in PARTS:
        path = raw_dir / f"ind.{name}.{part}"
        if part == "test.index":
            parts[part] = _test_index(path, contents[part])
            continue
        obj = _unpickle(path, contents[part])
        parts[part] = _adjacency(obj, path) if part == "graph" else _float_tensor(_dense(obj, path))
    sizes = (parts["allx"].size(0) + parts["tx"].size(0), len(parts["graph"]))
    if max(sizes) > MAX_NODES:
        raise RunError(f"the {name} files in {raw_dir} describe {max(sizes):,} nodes, too many for Planetoid")
    try:
        return build_graph(name, parts)
    except (IndexError, RuntimeError, ValueError) as exc:
        raise RunError(f"the {name} files in {raw_dir} do not fit together ({_reason(exc)}); replace them") from None


def read_contents(name: str, raw_dir: Path) -> dict[str, bytes]:
    """The bytes of the eight ``ind.<name>.*`` files, read once (hashed and parsed from memory)."""
    contents = {}
    for part in PARTS:
        path = raw_dir / f"ind.{name}.{part}"
        try:
            contents[part] = path.read_bytes()
        except OSError as exc:
            raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    return contents


def content_key(contents: dict[str, bytes]) -> str:
    """The first 16 hex digits of a sha256 over the raw files' contents (and the cache format)."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for part in PARTS:
        data = contents[part]
        digest.update(f"\0{part}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def cache_path(cache_root: Path, name: str, contents: dict[str, bytes]) -> Path:
    return Path(cache_root) / f"{name}-{content_key(contents)}.safetensors"


def read_cache(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a cache file, checked to be a complete, consistent graph."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    def corrupt(reason: str) -> RunError:
        return RunError(f"{path} is not a valid rnnkit Planetoid cache ({reason}); delete it and run again")

    if not path.is_file():
        raise corrupt("not a regular file")
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise corrupt(_reason(exc)) from None
    missing = [k for k in TENSORS if k not in tensors]
    if missing:
        raise corrupt(f"no tensor {', '.join(missing)}")
    x, edge_index, y = tensors["x"], tensors["edge_index"], tensors["y"]
    n = x.shape[0] if x.dim() == 2 else -1
    masks_ok = all(tensors[k].dtype == torch.bool and tensors[k].shape == (n,) for k in TENSORS[3:])
    if not (
        x.dtype == torch.float32
        and n > 0
        and y.dtype == torch.long
        and y.shape == (n,)
        and int(y.min()) >= 0
        and edge_index.dtype == torch.long
        and edge_index.dim() == 2
        and edge_index.shape[0] == 2
        and (edge_index.numel() == 0 or (int(edge_index.min()) >= 0 and int(edge_index.max()) < n))
        and masks_ok
    ):
        raise corrupt("tensors of the wrong type or shape")
    return {k: tensors[k] for k in TENSORS}


def write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` to ``path`` as safetensors, atomically; a cache that cannot be written is skipped."""
    from safetensors.torch import save

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, {"format": CACHE_FORMAT}))
    except OSError:
        pass  # a read-only cache folder only costs the next load a re-read


def load(name: str, raw_dir: Path, cache_root: Path | None) -> dict[str, torch.Tensor]:
    """The graph tensors of Planetoid set ``name`` (lower case) from the files in ``raw_dir``.

    The raw files are read and hashed on every call; with ``cache_root`` a cache file named by that hash
    is read if present, else the raw files are parsed and the cache written.
    """
    contents = read_contents(name, raw_dir)
    cached = cache_path(cache_root, name, contents) if cache_root is not None else None
    if cached is not None and (cached.exists() or cached.is_symlink()):
        return read_cache(cached)
    tensors = read_raw(name, raw_dir, contents)
    if cached is not None:
        write_cache(cached, tensors)
    return tensors


def fetch(url: str) -> bytes:
    """The body at ``url`` (a module function so tests can replace it)."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - fixed https URL
        return response.read()


def download(name: str, raw_dir: Path) -> None:
    """Download the ``name`` files missing from ``raw_dir`` from Planetoid's repository (the URL
    torch-geometric uses). They are read with the same restricted unpickler as local files."""
    for part in PARTS:
        target = raw_dir / f"ind.{name}.{part}"
        if target.is_file():
            continue
        url = f"{URL}/ind.{name}.{part}"
        try:
            data = fetch(url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None)
            detail = _reason(reason) if isinstance(reason, BaseException) else _reason(exc)
            raise RunError(f"{url}: {detail}") from None
        try:
            raw_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise RunError(f"cannot write {target}: {exc.strerror or exc}") from None
