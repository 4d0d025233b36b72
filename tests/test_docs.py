"""The docs keep up with the code: every module says what it holds, and docs/architecture.md lists
every module of the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnkit"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: the shortest first line of a module docstring that can say what the module holds
MIN_FIRST_LINE = 20


def _modules() -> list[Path]:
    """Every module of the package and of the plugins shipped beside it."""
    return sorted([*PACKAGE.rglob("*.py"), *ROOT.glob("plugins/*/*.py")])


def test_every_module_says_what_it_holds():
    missing = []
    for path in _modules():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        first = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
        if len(first) < MIN_FIRST_LINE:
            missing.append(f"{path.relative_to(ROOT)}: {first!r}")
    assert missing == [], "modules without a docstring whose first line says what they hold"


def test_architecture_lists_every_module():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    modules = [
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    ]
    assert modules, "no module found under rnnkit/"
    unlisted = sorted(m for m in modules if m not in text)
    assert unlisted == [], "modules missing from docs/architecture.md"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0].strip() for block in readme.split("```bash\n")[1:3]]
    assert len(blocks) == 2, "README starts with two command blocks: the main job, then the tests"
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if "pytest" in line]
    assert ci_lines == [blocks[1]], ".ci/run must run exactly the README's test command"
    assert "rnnkit sweep" in blocks[0]
