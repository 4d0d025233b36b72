"""rnnkit's layers import downward only: no import cycle (imports inside functions included), and no
library module imports the command line (only ``python -m rnnkit`` sits above it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnkit"


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnkit"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("rnnkit")}
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep in graph and dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_library_modules_do_not_import_the_cli():
    graph = _graph()
    offenders = [
        m
        for m, deps in graph.items()
        if not m.startswith(("rnnkit.cli", "rnnkit.__main__")) and any(d.startswith("rnnkit.cli") for d in deps)
    ]
    assert offenders == []


def test_library_modules_import_rnnkit_at_the_top():
    """A library module names what it depends on at its top, never inside a function (where an import
    can hide a cycle). The command line may import lazily, to keep `rnnkit --help` quick."""
    hidden = []
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name.startswith("rnnkit.cli"):
            continue
        for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                modules = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                hidden += [f"{name}:{node.lineno} {m}" for m in modules if m.startswith("rnnkit")]
    assert hidden == []


def test_the_command_line_starts_without_torch():
    import subprocess
    import sys

    code = "import sys, rnnkit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
