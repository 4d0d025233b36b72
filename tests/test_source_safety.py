"""No code path in rnnkit or its plugins deserialises with a format that can run code.

Every ``.py`` under ``rnnkit/`` and ``plugins/`` is parsed (comments and docstrings that name these
calls do not count) and each call is resolved through the module's imports (``import pickle as p``,
``from torch import load``) to the function it names. Refused: pickle / marshal / shelve / dill /
cloudpickle / joblib loaders and ``pickle.Unpickler``, ``torch.load`` without ``weights_only=True``,
``numpy.load`` without ``allow_pickle=False``, PyYAML's unsafe loaders, ``eval`` and ``exec``.

The one exception is the restricted unpickler of rnnkit/data/planetoid.py, which subclasses
``pickle.Unpickler`` to read Planetoid's pickled raw files with an allow-list of globals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("rnnkit", "plugins")
#: file (relative to the repository) -> the findings allowed in it, and why.
ALLOWED = {"rnnkit/data/planetoid.py": {"pickle.Unpickler"}}  # the allow-list unpickler, see its docstring

#: What may not be used at all: functions and classes, and modules none of whose names are safe.
REFUSED = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "_pickle.Unpickler",
    "marshal.load",
    "marshal.loads",
    "joblib.load",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.load_all",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
    "yaml.full_load",
    "yaml.full_load_all",
    "builtins.eval",
    "builtins.exec",
}
REFUSED_MODULES = {"shelve", "dill", "cloudpickle", "cPickle"}
#: Calls allowed only with a keyword set to a constant.
NEEDS_KEYWORD = {"torch.load": ("weights_only", True), "numpy.load": ("allow_pickle", False)}
#: Builtins used without an import.
IMPLICIT = {"eval": "builtins.eval", "exec": "builtins.exec"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted name it stands for, from every import in the module (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``module.attr...`` for a Name / Attribute chain whose first name is an import (or eval / exec)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = aliases.get(node.id) or (IMPLICIT.get(node.id) if not parts else None)
    return ".".join([head, *reversed(parts)]) if head else None


def _refused(name: str) -> bool:
    return name in REFUSED or name.split(".")[0] in REFUSED_MODULES


def findings(source: str) -> list[tuple[int, str]]:
    """(line, what) for every unsafe deserialisation in ``source``: imports and uses of what REFUSED
    names, and calls of NEEDS_KEYWORD functions without their keyword."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((node.lineno, a.name) for a in node.names if _refused(a.name))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if _refused(f"{node.module}.{alias.name}"):
                    found.add((node.lineno, f"{node.module}.{alias.name}"))
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            name = _dotted(node, aliases)
            if name and _refused(name):
                found.add((node.lineno, name))
        if isinstance(node, ast.Call) and (name := _dotted(node.func, aliases)) in NEEDS_KEYWORD:
            keyword, value = NEEDS_KEYWORD[name]
            if not any(
                k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is value for k in node.keywords
            ):
                found.add((node.lineno, f"{name} without {keyword}={value}"))
    return sorted(found)


def _python_files() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py") if ".venv" not in p.parts)


def test_no_unsafe_deserialisation_in_the_source():
    problems = []
    for path in _python_files():
        relative = path.relative_to(REPO).as_posix()
        allowed = ALLOWED.get(relative, set())
        for line, what in findings(path.read_text(encoding="utf-8")):
            if what not in allowed:
                problems.append(f"{relative}:{line}: {what}")
    assert not problems, "unsafe deserialisation:\n" + "\n".join(problems)
    assert len(_python_files()) > 20  # the scan saw the tree


def test_the_exception_is_still_needed():
    """The allow-list names only what planetoid.py uses, so a stale exception is noticed."""
    for relative, allowed in ALLOWED.items():
        assert {what for _, what in findings((REPO / relative).read_text(encoding="utf-8"))} == allowed


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.load(f)",
        "import pickle\npickle.loads(b)",
        "import pickle as p\np.loads(b)",
        "from pickle import loads\nloads(b)",
        "from pickle import load as safe\nsafe(f)",
        "import pickle\nclass U(pickle.Unpickler): pass",
        "import pickle\npickle.Unpickler(f).load()",
        "import _pickle\n_pickle.loads(b)",
        "import marshal\nmarshal.loads(b)",
        "import shelve\nshelve.open('db')",
        "import dill\ndill.loads(b)",
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "from torch import load\nload(p, map_location='cpu')",
        "import numpy as np\nnp.load(p)",
        "import numpy\nnumpy.load(p, allow_pickle=True)",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.unsafe_load(s)",
        "import yaml\nyaml.full_load(s)",
        "from yaml import full_load\nfull_load(s)",
        "eval('1+1')",
        "exec('x = 1')",
        "import builtins\nbuiltins.eval('1')",
        "import pandas as pd\npd.read_pickle(p)",
    ],
)
def test_the_scan_finds_unsafe_calls(source):
    assert findings(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load(p, allow_pickle=False)",
        "import yaml\nyaml.safe_load(s)",
        "model.eval()\nloader.load()\nself.exec_count = 1",
        "import json\njson.loads(s)",
        '"""Never call pickle.load( or torch.load( here."""\n# eval( in a comment',
        "from safetensors.torch import load\nload(b)",
        "import pickle\npickle.dumps(x)",
    ],
)
def test_the_scan_allows_safe_calls(source):
    assert not findings(source), findings(source)
