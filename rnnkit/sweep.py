"""Sweeps: one training run for every combination of swept values and every seed, resumable, shared
between processes and machines, aggregated over seeds.

    <out>/<key=value_..._seed=N>_<hash>/   a run directory per run (see rnnkit.runner), named by its
                                           swept values and a short hash of its resolved spec
    <out>/sweep.json                       what was swept: keys, values, seeds, the solve threshold
    <out>/results.csv                      one row per planned run, rewritten after every run

A grid sweeps any spec key (``-p train.lr=1e-4:1e-2:5log``); ``--models`` and ``--lengths`` are
shorthands for ``model.name`` and ``task.length``. A run whose directory already holds a finished
run of the same resolved spec is skipped; another spec always gets another directory (its hash
differs), so nothing is overwritten. Several sweep processes on one directory, on one machine or on
several sharing a filesystem, divide the runs through the run locks. Where runs execute is an
executor's business (``LocalExecutor`` here, ``rnnkit.ray_executor.RayExecutor``). Unless the sweep
says otherwise, its runs record the gradient flow through time (``train.record_gradients``) where the
task measures it and the model shows its per-step states: two measurements per run by default, a
fraction of a percent of its time.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnkit.checkpoint import META_FILE, atomic_write_text, write_json
from rnnkit.config import ConfigBuilder
from rnnkit.device import resolve_device
from rnnkit.errors import RunError, UsageError
from rnnkit.gradient_flow import shows_states
from rnnkit.kinds import KINDS
from rnnkit.memory import memory_budget
from rnnkit.registry import get_model
from rnnkit.rundir import RunLock, is_locked, prepare_run_dir
from rnnkit.runner import read_record, saved_spec, spec_differences
from rnnkit.spec import RECORDING_SETTINGS, RunSpec, load_yaml, parse_override, resolve_spec
from rnnkit.sweep_job import Executor, Job, finished_result, run_job, worker_init
from rnnkit.task import Task
from rnnkit.tasks import TASK_TYPES
from rnnkit.workers import WorkerPool

RESULTS_FILE = "results.csv"
SWEEP_FILE = "sweep.json"
FIGURE_FILE = "accuracy_vs_length.png"
#: results.csv columns after the swept keys and the seed; ``eval_*`` columns of the task's own final
#: metrics (validation loss, bits per character, test accuracy ...) come between ``final_accuracy``
#: and ``steps``.
LEAD_COLUMNS = ("seed", "status", "best_accuracy", "final_accuracy")
TAIL_COLUMNS = ("steps", "seconds", "host", "node", "run_dir", "error")
#: Short column names of common keys (others are their last dotted part, or the whole key if that
#: is ambiguous).
LABELS = {"model.name": "model", "task.length": "length", "task.name": "task"}

#: Most values of one key, and most runs, one sweep may plan (each run is a directory and a training run).
MAX_LENGTHS = 10_000
MAX_VALUES = MAX_LENGTHS
MAX_RUNS = 100_000

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_int_range(text: str, what: str = "range") -> list[int]:
    """``5-35`` (inclusive), ``5-35:5`` (with a step), ``5,10,20`` or a mix; sorted, each once."""
    text = str(text).strip()
    numbers: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?", part)  # a billion: past any bound
        if not m:
            raise UsageError(f"invalid {what} '{text}': use a range like 5-35, 5-35:5 or a list like 5,10,20")
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) else start
        step = int(m.group(3)) if m.group(3) else 1
        if stop < start:
            raise UsageError(f"invalid {what} '{part}': the range runs backwards (did you mean {stop}-{start}?)")
        if step < 1:
            raise UsageError(f"invalid {what} '{part}': the step must be at least 1")
        if len(numbers) + (stop - start) // step + 1 > MAX_LENGTHS:
            raise UsageError(f"invalid {what} '{text}': more than {MAX_LENGTHS:,} values in one sweep")
        numbers.extend(range(start, stop + 1, step))
    return sorted(set(numbers))


def parse_lengths(text: str) -> list[int]:
    """Palindrome lengths (``parse_int_range``), every one at least 2."""
    lengths = parse_int_range(text, "lengths")
    if min(lengths) < 2:
        raise UsageError(f"invalid lengths '{text}': a palindrome needs length at least 2")
    return lengths


def parse_models(text: str | list[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if str(n).strip()]
    if not names:
        raise UsageError("no models given: use e.g. --models rnn,lstm")
    return list(dict.fromkeys(names))


def parse_values(key: str, text: Any) -> list[Any]:
    """The values of one swept key: a list (``rnn,lstm``, ``0.1,0.2``), an integer range (``5-35``,
    ``5-35:5``), a float grid (``1e-4:1e-2:5log``: 5 log-spaced points; ``0:0.5:6``: 6 evenly spaced),
    or, from a sweep file, a YAML list. Each value is typed as YAML types it (``3`` int, ``0.1`` float,
    ``true`` bool); the run spec checks it against its field."""
    if isinstance(text, list):
        values = list(text)
    else:
        text = str(text).strip()
        grid = re.fullmatch(rf"({_NUMBER}):({_NUMBER}):(\d{{1,6}})(log)?", text)
        if key == "task.length" or re.fullmatch(r"\d{1,9}-\d{1,9}(?::\d{1,9})?(?:,.*)?", text):
            values = parse_lengths(text) if key == "task.length" else parse_int_range(text, f"range for {key}")
        elif grid:
            values = _float_grid(
                key, float(grid.group(1)), float(grid.group(2)), int(grid.group(3)), bool(grid.group(4))
            )
        else:
            values = [parse_override(f"{key}={part.strip()}")[1] for part in text.split(",") if part.strip()]
    if not values:
        raise UsageError(f"no values for {key}: give e.g. {key}=a,b or {key}=1-5")
    if len(values) > MAX_VALUES:
        raise UsageError(f"{key}: {len(values):,} values, over the {MAX_VALUES:,} one key may take")
    return list(dict.fromkeys(values))


def _float_grid(key: str, start: float, stop: float, points: int, log: bool) -> list[float]:
    if points < 1 or points > MAX_VALUES:
        raise UsageError(f"{key}: a grid needs 1 to {MAX_VALUES:,} points, got {points}")
    if log and (start <= 0 or stop <= 0):
        raise UsageError(f"{key}: a log grid needs positive ends, got {start:g} and {stop:g}")
    if points == 1:
        return [start]
    if log:
        a, b = math.log10(start), math.log10(stop)
        return [float(f"{10 ** (a + (b - a) * i / (points - 1)):.6g}") for i in range(points)]
    return [float(f"{start + (stop - start) * i / (points - 1):.6g}") for i in range(points)]


def label(key: str, keys: list[str]) -> str:
    """The column (and directory) name of swept ``key``: ``model``, ``length``, else its last dotted
    part unless another swept key ends the same way or it names a results column (``task.steps``
    is not ``steps``, the training steps)."""
    if key in LABELS:
        return LABELS[key]
    last = key.rsplit(".", 1)[-1]
    clash = [k for k in keys if k != key and (LABELS.get(k) or k.rsplit(".", 1)[-1]) == last]
    taken = last in (*LEAD_COLUMNS, *TAIL_COLUMNS) or last.startswith("eval_")
    return key if clash or taken else last


def _format(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)[:40]


#: Settings added after sweeps began naming runs by a hash, with their defaults: a setting at its
#: default is left out of the hash, so a sweep directory made before it existed keeps its run names
#: (its finished runs are found and skipped, not trained again).
LATER_SETTINGS = {
    ("train", "precision"): "fp32",
    ("train", "eval_chars"): 1_000_000,
    ("model", "impl"): "fused",
    ("model", "scratch_impl"): "fused",
}


def spec_hash(spec: RunSpec) -> str:
    """Eight hex digits of a sha256 of the resolved spec; its name, output folder and dashboards
    (``log``, which change nothing in the training) left out, ``RECORDING_SETTINGS`` too, and
    ``LATER_SETTINGS`` at their defaults."""
    data = {k: v for k, v in spec.to_dict().items() if k not in ("name", "out_dir", "log")}
    for (section, key), default in LATER_SETTINGS.items():
        if data.get(section, {}).get(key, default) == default:
            data[section] = {k: v for k, v in data[section].items() if k != key}
    for section, key in RECORDING_SETTINGS:
        if key in data.get(section, {}):
            data[section] = {k: v for k, v in data[section].items() if k != key}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its swept values (by column name), its seed and its resolved spec."""

    values: dict[str, Any]
    seed: int
    spec: RunSpec


#: Keys each run gets from the sweep itself; overriding them would mislabel runs.
SWEEP_CONTROLLED = ("name", "seed", "out_dir")


def _check_not_controlled(keys: list[str], where: str, grid: list[str]) -> None:
    for key in keys:
        if key in SWEEP_CONTROLLED or key in grid or any(key == g.split(".")[0] for g in grid):
            raise UsageError(
                f"{where} cannot set '{key}': the sweep sets it for each run (sweep it with -p, or use --seeds, --out)"
            )


@dataclass
class SweepPlan:
    """What a sweep runs: every combination of ``grid`` values x ``seeds``, from one base spec plus
    per-length overrides and ``-s`` overrides. ``models`` and ``lengths`` are shorthands for the
    ``model.name`` and ``task.length`` keys of the grid (they come first, in that order)."""

    models: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    seeds: int = 1
    out: Path = Path("runs/sweep-palindrome")
    base: dict[str, Any] = field(default_factory=dict)
    per_length: dict[int, dict[str, Any]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")
        shorthand = {"model.name": self.models, "task.length": self.lengths}
        self.grid = {
            **{k: v for k, v in shorthand.items() if v},
            **{k: v for k, v in self.grid.items() if k not in shorthand or not shorthand[k]},
        }
        if not self.grid:
            raise UsageError("nothing to sweep: give -p KEY=VALUES (or --models / --lengths)")
        total = math.prod(len(v) for v in self.grid.values()) * self.seeds
        if total > MAX_RUNS:
            sizes = " x ".join(f"{len(v)} {label(k, list(self.grid))}" for k, v in self.grid.items())
            raise UsageError(
                f"the sweep would plan {total:,} runs ({sizes} x {self.seeds} seeds); "
                f"at most {MAX_RUNS:,} runs per sweep"
            )
        self.out = Path(self.out)
        keys = list(self.grid)
        _check_not_controlled([parse_override(o)[0] for o in self.overrides], "-s", keys)
        for length, values in self.per_length.items():
            _check_not_controlled(list(values), f"per_length.{length}", keys)
        _check_not_controlled([k for k in self.base if k in SWEEP_CONTROLLED], "spec", [])

    @property
    def columns(self) -> dict[str, str]:
        """Column name -> swept key, in grid order."""
        keys = list(self.grid)
        return {label(k, keys): k for k in keys}

    def describe(self) -> str:
        sizes = [
            f"{len(v)} {c}" if len(v) > 1 else f"{c}={v[0]}"
            for c, v in zip(self.columns, self.grid.values(), strict=True)
        ]
        return " x ".join([*sizes, f"{self.seeds} seed{'s' if self.seeds > 1 else ''}"])

    def run_specs(self) -> list[PlannedRun]:
        """Every run, its spec resolved and validated (before any run starts), named
        ``<column=value>_..._seed=<n>_<hash>``."""
        runs = []
        columns = self.columns
        shown: dict[str, bool] = {}  # model name -> whether it shows its per-step states
        for combination in itertools.product(*self.grid.values()):
            values = dict(zip(columns, combination, strict=True))
            setting = dict(zip(self.grid, combination, strict=True))
            per_length = self.per_length.get(setting.get("task.length"), {}) if "task.length" in setting else {}
            for seed in range(self.seeds):
                readable = "_".join([*(f"{c}={_format(v)}" for c, v in values.items()), f"seed={seed}"])
                overrides: list[Any] = [*per_length.items(), *self.overrides, *setting.items()]
                overrides += [("name", readable), ("seed", seed), ("out_dir", str(self.out))]
                spec = resolve_spec(self.base, overrides, default_name=readable)
                if not self.sets("train.record_gradients") and not spec.train.record_gradients:
                    on = records_gradients_by_default(spec, shown)
                    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, record_gradients=on))
                spec = dataclasses.replace(spec, name=f"{readable}_{spec_hash(spec)}")
                runs.append(PlannedRun(values, seed, spec))
        return runs

    def sets(self, key: str) -> bool:
        """Whether the sweep itself sets dotted ``key`` anywhere: its grid, ``-s``, per-length overrides
        or the base spec."""
        if key in self.grid or any(parse_override(o)[0] == key for o in self.overrides):
            return True
        if any(key in values for values in self.per_length.values()):
            return True
        section, _, name = key.partition(".")
        base = self.base.get(section)
        return isinstance(base, dict) and name in base

    def threshold(self, runs: list[PlannedRun]) -> float | None:
        """The solve threshold of classification runs (the first run's early-stop threshold), else None."""
        value = runs[0].spec.train.early_stop.threshold if runs else 0.0
        return value or None


def records_gradients_by_default(spec: RunSpec, cache: dict[str, bool] | None = None) -> bool:
    """Whether a sweep run records the gradient flow unless told (``train.record_gradients``): where its
    task measures it and its model shows its per-step states (``rnnkit.kinds.StepStates``). To see, the
    model is built once per model name with its default config on the kind's tiny sizes (the global
    random state kept): never with the run's own sizes, which the memory check has not bounded yet."""
    task_type = TASK_TYPES[spec.task_name]
    if not task_type.measures_gradient_flow:
        return False
    cache = {} if cache is None else cache
    key = spec.model_name
    if key not in cache:
        model_def = get_model(spec.model_name, task_type.kind)
        with torch.random.fork_rng(devices=[]):
            cache[key] = shows_states(model_def.build(model_def.config(), **KINDS[task_type.kind].tiny_dims))
    return cache[key]


@dataclass
class SweepSpec:
    """A sweep spec file: which runs (``grid``, or the ``models`` / ``lengths`` shorthands), and the run
    spec (plus per-length overrides) they share."""

    name: str = "sweep"
    models: str | list[str] = ""
    lengths: str | int | list[int] = ""
    grid: dict = field(default_factory=dict)
    seeds: int = field(default=1, metadata={"ge": 1, "le": 10_000})
    workers: int = field(default=0, metadata={"ge": 0, "le": 4096})  # 0: one per CPU this process may use
    out: str = ""  # default: runs/<name>
    spec: dict = field(default_factory=dict)
    per_length: dict = field(default_factory=dict)


#: What ``rnnkit sweep`` with nothing to sweep runs: the palindrome study.
DEFAULT_MODELS, DEFAULT_LENGTHS = "rnn,lstm", "5-35"


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (``grid``, ``models``, ``lengths``, ``seeds``, ``spec``, ``per_length`` ...).
    A run spec (``task:``, ``model:``, ``train:`` at the top) is read as the base of a sweep named
    after it."""
    data, lines = load_yaml(path)
    if any(k in data for k in ("task", "model", "train")):
        base = {k: v for k, v in data.items() if k not in SWEEP_CONTROLLED}  # the sweep names and seeds each run
        return SweepSpec(name=f"sweep-{Path(path).stem}", spec=base)
    validator = ConfigBuilder(lines, str(path))
    sweep = validator.build(SweepSpec, data, "")
    if not sweep.name or "/" in sweep.name or sweep.name in (".", ".."):
        raise validator.error("name", f"must be a plain directory name, got {sweep.name!r}")
    checked: dict[int, dict[str, Any]] = {}
    for length, values in sweep.per_length.items():
        if isinstance(length, bool) or not isinstance(length, int) or not isinstance(values, dict):
            raise validator.error(
                f"per_length.{length}", "give an integer length and a mapping of overrides, e.g. 5: {train.lr: 0.01}"
            )
        checked[length] = values
    sweep.per_length = checked
    for key, values in sweep.grid.items():
        if not isinstance(key, str) or not isinstance(values, (list, str, int, float)):
            raise validator.error(f"grid.{key}", "give a list of values or a range like 5-35 or 1e-4:1e-2:5log")
    return sweep


def default_workers() -> int:
    """One worker per CPU this process may use (``os.sched_getaffinity``; a container or ``taskset``
    limit counts, unlike ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_sweep(
    spec_file: str | Path | None = None,
    *,
    lengths: str | None = None,
    models: str | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] = (),
    params: list[str] = (),
) -> tuple[SweepPlan, int]:
    """The plan (validated run by run) and worker count from a sweep spec file and options over it.

    ``params`` are ``KEY=VALUES`` (``-p``). On palindromes, the models and lengths that neither the
    options nor the spec give are the study's: rnn,lstm and 5-35 (so ``rnnkit sweep`` alone runs it)."""
    file = load_sweep_spec(spec_file) if spec_file is not None else SweepSpec(name="sweep-palindrome")
    n_workers = workers if workers is not None else (file.workers or default_workers())
    if n_workers < 1:
        raise UsageError(f"--workers must be at least 1, got {n_workers}")
    grid = {str(k): parse_values(str(k), v) for k, v in file.grid.items()}
    for param in params:
        key, sep, text = str(param).partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid -p {param!r}: use KEY=VALUES, e.g. -p train.lr=1e-4:1e-2:5log")
        grid[key.strip()] = parse_values(key.strip(), text)
    file_lengths = ",".join(str(t) for t in file.lengths) if isinstance(file.lengths, list) else str(file.lengths)
    chosen_models = models if models is not None else (file.models or None)
    chosen_lengths = lengths if lengths is not None else (file_lengths or None)
    base_task = file.spec.get("task") if isinstance(file.spec.get("task"), dict) else {}
    base_model = file.spec.get("model") if isinstance(file.spec.get("model"), dict) else {}
    if base_task.get("name", "palindrome") == "palindrome":  # the palindrome study fills what is not given
        if chosen_models is None and "model.name" not in grid and "name" not in base_model:
            chosen_models = DEFAULT_MODELS
        if chosen_lengths is None and "task.length" not in grid and "length" not in base_task:
            chosen_lengths = DEFAULT_LENGTHS
    plan = SweepPlan(
        models=parse_models(chosen_models) if chosen_models is not None else [],
        lengths=parse_lengths(chosen_lengths) if chosen_lengths is not None else [],
        seeds=seeds if seeds is not None else file.seeds,
        out=Path(out) if out is not None else Path(file.out or f"runs/{file.name}"),
        base=file.spec,
        per_length=file.per_length,
        overrides=list(overrides),
        grid=grid,
    )
    return plan, n_workers


# ---------------------------------------------------------------------------------------------
# Checks before the first run


def check_no_conflicts(out: Path, runs: list[PlannedRun]) -> None:
    """Refuse a sweep whose run directories hold runs of other specs: a sweep never overwrites a run."""
    conflicts = []
    for spec in (r.spec for r in runs):
        saved = saved_spec(out / spec.name)
        if saved is not None:
            diffs = spec_differences(saved, spec.to_dict())
            if diffs:
                conflicts.append((spec.name, diffs))
    if conflicts:
        name, diffs = conflicts[0]
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        raise UsageError(
            f"{out / name}{more} hold runs of another spec ({'; '.join(diffs[:2])}); a sweep never overwrites "
            f"runs: use another --out, or delete those runs"
        )


def check_memory(runs: list[PlannedRun]) -> None:
    """Refuse a sweep any of whose runs would not fit in memory, before the first one starts (each
    distinct model and task setting is estimated once; seeds do not change the size)."""
    tasks: dict[str, Task] = {}
    seen = set()
    for spec in (r.spec for r in runs):
        key = repr((spec.model_name, spec.model, spec.task_name, spec.task, spec.train.batch_size, spec.device))
        if key in seen:
            continue
        seen.add(key)
        device = resolve_device(spec.device)
        task_type = TASK_TYPES[spec.task_name]
        task_key = repr((spec.task_name, dataclasses.asdict(spec.task)))
        if task_key not in tasks:
            tasks[task_key] = task_type(spec.task, device, spec.seed)
        model_def = get_model(spec.model_name, task_type.kind)
        budget = memory_budget(spec.train.max_memory_gb, device)
        tasks[task_key].check_memory(model_def, spec.model, spec.train.batch_size, budget)


def check_plan(out: Path, runs: list[PlannedRun]) -> None:
    """Everything that can be known before the first run: no run of another spec is in the way, and
    every run fits in memory."""
    check_no_conflicts(out, runs)
    check_memory(runs)


# ---------------------------------------------------------------------------------------------
# Results


def row(run: PlannedRun, run_dir: Path, meta: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
    """The results.csv row of one run (``pending`` before it answered)."""
    meta = meta or {}
    final = meta.get("final_metrics") or {}
    return {
        **run.values,
        "seed": run.seed,
        "status": meta.get("status", "failed" if error else "pending"),
        "best_accuracy": meta.get("best_accuracy", ""),
        "final_accuracy": _blank_none(meta.get("final_accuracy")),
        **{f"eval_{k}": v for k, v in final.items() if k != "accuracy"},
        "steps": meta.get("steps", ""),
        "seconds": round(meta["seconds"], 2) if "seconds" in meta else "",
        "host": meta.get("host", ""),
        "node": meta.get("node", ""),
        "run_dir": str(run_dir),
        "error": error or meta.get("error", ""),
    }


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def result_columns(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    metrics = sorted({k for r in rows for k in r if k.startswith("eval_")}, key=lambda k: (k != "eval_loss", k))
    return [*keys, *LEAD_COLUMNS, *metrics, *TAIL_COLUMNS]


def write_results(out: Path, rows: list[dict[str, Any]], keys: list[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=result_columns(rows, keys), restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = out / RESULTS_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


def write_sweep_file(plan: SweepPlan, runs: list[PlannedRun]) -> None:
    """sweep.json: what was swept (so ``rnnkit plot`` knows the keys from the metrics)."""
    write_json(
        plan.out / SWEEP_FILE,
        {
            "keys": plan.columns,
            "grid": plan.grid,
            "seeds": plan.seeds,
            "threshold": plan.threshold(runs),
            "runs": len(runs),
        },
    )


def read_sweep_file(out: Path) -> dict[str, Any]:
    """sweep.json of ``out``; for a sweep written before it existed, the palindrome columns."""
    try:
        data = json.loads((Path(out) / SWEEP_FILE).read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("keys"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"keys": {"model": "model.name", "length": "task.length"}, "threshold": 0.995}


def _number(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a sweep's results.csv, numbers parsed (empty cells are None, text stays text)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            for key, value in list(r.items()):
                if key is None:
                    raise ValueError("a row with more cells than the header")
                if key not in ("status", "host", "node", "run_dir", "error", "model"):
                    r[key] = _number(value or "")
            if r.get("seed") is None or r.get("status") in (None, ""):
                raise ValueError("a row without seed or status")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise RunError(f"{path} is not a readable sweep results file ({exc})") from exc
    return rows


# ---------------------------------------------------------------------------------------------
# Running


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep: finished runs and results.csv are kept, interrupted runs keep
    their last checkpoint; running the same command again completes the sweep."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_sweep(
    plan: SweepPlan,
    workers: int = 1,
    on_result: Callable[[dict[str, Any], bool], None] | None = None,
    runs: list[PlannedRun] | None = None,
    check: bool = True,
    executor: Executor | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run every planned run not already finished; returns the rows of results.csv.

    ``executor`` runs the jobs (default: ``LocalExecutor(workers, threads)``; ``threads`` per run
    default to the CPUs this process may use divided among the workers). ``check=False`` skips
    ``check_plan`` for a caller that has just run it. ``on_result(row, skipped)`` is called as each
    run finishes (or is found finished); ``runs`` are the plan's resolved runs when the caller has
    them already. Runs that another live process owns (another sweep on the same directory, on this
    machine or another) are left to it and picked up only if it stops before finishing them.
    SIGTERM stops the sweep like Ctrl-C.
    """
    runs = runs if runs is not None else plan.run_specs()
    prepare_run_dir(plan.out)
    if check:
        check_plan(plan.out, runs)
    workers = max(1, workers)
    threads = threads or max(1, default_workers() // workers)
    executor = executor if executor is not None else LocalExecutor(workers, threads)
    keys = list(plan.columns)
    rows = {i: row(r, plan.out / r.spec.name, None) for i, r in enumerate(runs)}
    write_failures: list[str] = []
    write_sweep_file(plan, runs)

    def ordered() -> list[dict[str, Any]]:
        return [rows[i] for i in range(len(runs))]

    def save_results() -> None:
        try:
            write_results(plan.out, ordered(), keys)
        except OSError as exc:  # a full disk must not stop the sweep: the rows are kept and written later
            write_failures.append(f"{plan.out / RESULTS_FILE}: {exc.strerror or exc}")

    def record(job: Job, meta: dict[str, Any]) -> None:
        run_dir = job.run_dir
        if meta.get("status") == "failed" and "worker process died" in meta.get("error", ""):
            record_failure(run_dir, meta["error"])
        skipped = bool(meta.pop("skipped", False))
        rows[job.key] = row(runs[job.key], run_dir, meta)
        save_results()
        if on_result:
            on_result(rows[job.key], skipped)

    jobs = []
    for i, r in enumerate(runs):
        meta = finished_result(plan.out / r.spec.name, r.spec)
        if meta is not None:
            rows[i] = row(r, plan.out / r.spec.name, meta)
            if on_result:
                on_result(rows[i], True)
        else:
            jobs.append(Job(i, r.spec.to_dict(), plan.out / r.spec.name))
    save_results()
    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        interrupted = executor.run(jobs, record)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    save_results()
    if interrupted:
        raise SweepInterrupted(
            f"sweep interrupted; finished runs are kept in {plan.out}: run the same command again to finish it"
        )
    if write_failures:
        raise RunError(f"could not write the sweep's results: {write_failures[-1]}")
    return ordered()


def _cost(job: Job) -> int:
    """How long a job is expected to take, for ordering: its sequence length (palindromes), else 0."""
    return int((job.spec.get("task") or {}).get("length") or 0)


class LocalExecutor:
    """Runs jobs in this process (``workers`` = 1, in plan order) or in a pool of worker processes
    (longest first), ``threads`` torch threads each; a run another process owns waits until its lock
    is free. ``run()`` returns True if interrupted."""

    def __init__(self, workers: int = 1, threads: int = 1) -> None:
        self.workers, self.threads = max(1, workers), max(1, threads)

    def run(self, jobs: list[Job], record: Callable[[Job, dict[str, Any]], None]) -> bool:
        self.record = record
        # popped from the end: in plan order in this process, longest sequences first across workers
        self.pending = list(reversed(jobs)) if self.workers == 1 else sorted(jobs, key=_cost)
        self.elsewhere: list[Job] = []  # owned by another process right now
        return self._serial() if self.workers == 1 else self._parallel()

    def _next(self) -> Job | None:
        """The next job to start, or None; runs another process owns are set aside."""
        while self.pending:
            job = self.pending.pop()
            if is_locked(job.run_dir):
                self.elsewhere.append(job)
                continue
            return job
        return None

    def _answer(self, job: Job, meta: dict[str, Any]) -> bool:
        """Record one run's answer; True if it was interrupted."""
        if meta.get("status") == "busy":
            self.elsewhere.append(job)
            return False
        self.record(job, meta)
        return meta.get("status") == "interrupted"

    def _recheck_elsewhere(self) -> None:
        """Runs whose owner has let go (finished or died) go back to the queue."""
        free = [j for j in self.elsewhere if not is_locked(j.run_dir)]
        self.elsewhere = [j for j in self.elsewhere if j not in free]
        self.pending.extend(free)

    def _serial(self) -> bool:
        while self.pending or self.elsewhere:
            job = self._next()
            if job is None:
                time.sleep(OTHERS_POLL_S)
                self._recheck_elsewhere()
                continue
            if self._answer(job, run_job(job.spec, str(job.run_dir), self.threads)):
                return True
        return False

    def _parallel(self) -> bool:
        pool = WorkerPool(self.workers, initializer=worker_init)
        interrupted = False
        in_flight: dict[int, Job] = {}
        try:
            while (not interrupted and (self.pending or self.elsewhere)) or pool.in_flight():
                while not interrupted and pool.idle() and (job := self._next()) is not None:
                    in_flight[job.key] = job
                    pool.submit(job.key, run_job, job.spec, str(job.run_dir), self.threads)
                if not pool.in_flight():
                    time.sleep(OTHERS_POLL_S)
                    self._recheck_elsewhere()
                    continue
                try:
                    outcomes = pool.wait(timeout=OTHERS_POLL_S if self.elsewhere else None)
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C: stop now; each run keeps its last checkpoint
                        for key in pool.in_flight():
                            self.record(in_flight[key], {"status": "interrupted"})
                        pool.signal_busy(signal.SIGKILL)
                        return True
                    interrupted = True
                    pool.signal_busy(signal.SIGTERM)  # each saves its run and answers
                    continue
                for outcome in outcomes:
                    meta = outcome.value if outcome.ok else {"status": "failed", "error": outcome.error}
                    interrupted = self._answer(in_flight.pop(outcome.key), meta) or interrupted
                self._recheck_elsewhere()
        finally:
            pool.close()
        return interrupted


#: Seconds between looks at runs that another process owns.
OTHERS_POLL_S = 1.0


def record_failure(run_dir: Path, error: str) -> None:
    """Mark ``run_dir`` failed in its record (when no live process owns it); its checkpoint is kept."""
    lock = RunLock.try_acquire(run_dir) if run_dir.is_dir() else None
    if lock is None:
        return
    with lock:
        try:
            write_json(run_dir / META_FILE, {**read_record(run_dir), "status": "failed", "error": error})
        except OSError:
            pass
