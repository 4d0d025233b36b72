"""A pip install can train: the built wheel, installed into a fresh virtual environment (offline, its
dependencies taken from this environment), lists the example specs it ships, copies one out and
trains from it, and trains on a text file with no spec at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import small_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "rnnkit" / "examples").glob("*.yaml"))
QUICK = [
    "train.max_steps=3",
    "train.batch_size=4",
    "model.hidden_size=8",
    "model.embedding_size=4",
    "task.seq_len=8",
    "--device",
    "cpu",
    "--no-progress",
]


def _build_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout itself is left untouched), offline."""
    src = tmp / "src"
    shutil.copytree(ROOT / "rnnkit", src / "rnnkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src]
    # with this environment's setuptools (no download); where it cannot build wheels (a setuptools older
    # than 70 without the `wheel` package), in pip's isolated build environment from the configured index
    attempts = [[*build, "--no-build-isolation", "--no-index"], build]
    errors = []
    for command in attempts:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0:
            break
        errors.append(proc.stderr[-2000:])
    else:
        pytest.fail("could not build the wheel:\n" + "\n".join(errors))
    (wheel,) = out.glob("rnnkit-*.whl")
    return wheel


def _fresh_venv(tmp: Path) -> Path:
    """A virtual environment without rnnkit that sees this environment's other packages (torch ...)
    through a .pth file naming a folder of links to them: nothing is downloaded."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    deps = tmp / "deps"
    deps.mkdir()
    paths = sysconfig.get_paths()
    for here in dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")):
        for entry in here.iterdir():
            skip = entry.name.lower().startswith(("rnnkit", "__editable__")) or entry.suffix == ".pth"
            if not skip and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(f"{deps}\n")
    return venv


@pytest.mark.slow
def test_the_wheel_ships_the_examples_and_trains_from_them(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"rnnkit/examples/{name}" for name in SHIPPED} <= names
    assert "rnnkit/pretrained/christie/model.safetensors" in names

    venv = _fresh_venv(tmp_path)
    python, rnnkit = venv / "bin" / "python", venv / "bin" / "rnnkit"
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel]
    subprocess.run(install, check=True, capture_output=True, timeout=300)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("_")}

    def call(*args: object) -> subprocess.CompletedProcess:
        proc = subprocess.run([*map(str, args)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    where = call(python, "-c", "import rnnkit.shipped as s; print(s.examples_dir())").stdout.strip()
    assert Path(where).is_relative_to(venv)  # the installed package, not the checkout
    listed = json.loads(call(rnnkit, "examples", "--json").stdout)
    assert sorted(Path(r["path"]).name for r in listed) == SHIPPED

    call(rnnkit, "examples", "copy", "christie", ".")
    assert (work / "christie.yaml").read_text() == (ROOT / "rnnkit" / "examples" / "christie.yaml").read_text()
    text = small_text(work)
    trained = call(rnnkit, "train", "christie.yaml", f"task.text={text}", *QUICK, "--json")
    record = json.loads(trained.stdout)
    assert record["status"] == "max_steps" and record["steps"] == 3 and record["model"] == "charlstm"

    no_spec = call(rnnkit, "train", "--text", text, *QUICK)
    assert no_spec.stdout.startswith(f"{Path('runs') / text.stem}: max_steps after 3 steps")
    assert (work / "runs" / text.stem / "checkpoint" / "model.safetensors").is_file()
