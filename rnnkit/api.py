"""rnnkit's Python API for notebooks and scripts: train a run, open one, sample from it, compare GCNs.

They call the library functions the command line calls, with the same checks and the same files:

    import rnnkit

    run = rnnkit.train("examples/palindrome-lstm.yaml", **{"task.length": 10, "train.max_steps": 200})
    run.status, run.metrics[-1]["eval_accuracy"]
    rnnkit.load("runs/christie").complete("Poirot said", length=80)

Errors are ``rnnkit.errors.RnnkitError`` subclasses (``UsageError`` for bad input); nothing here
prints or exits.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnkit.checkpoint import BEST_LINK, CHECKPOINT_LINK, META_FILE, checkpoint_dir, load_checkpoint, load_weights
from rnnkit.errors import RunError, UsageError
from rnnkit.gcn import GCNSpec, compare, load_gcn_spec
from rnnkit.kinds import KINDS
from rnnkit.language_model import load_language_model, pretrained_path
from rnnkit.registry import get_model
from rnnkit.rundir import read_jsonl
from rnnkit.runner import CONFIG_FILE, METRICS_FILE, read_record, train_run
from rnnkit.sampling import check_sampling, generate, prompt_ids
from rnnkit.spec import RunSpec, load_yaml, resolve_spec
from rnnkit.training import Callback


@dataclass
class Run:
    """A run directory, opened: its resolved spec, record and metrics; the model on first use."""

    path: Path
    #: the resolved spec (config.yaml) as plain data, as ``rnnkit train --print-config`` shows it
    config: dict[str, Any]
    #: the run's record (meta.json): run_id, status, steps, final metrics, error of a failed run
    record: dict[str, Any]

    @property
    def status(self) -> str:
        """``solved``, ``plateau``, ``max_steps``, ``diverged``, ``interrupted``, ``failed`` or ``running``."""
        return str(self.record.get("status", "unknown"))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl, in order: training means every ``log_every`` steps
        (``loss``, ``accuracy``, ``lr``, ``grad_norm``) and evaluations (``eval_*``)."""
        return read_jsonl(self.path / METRICS_FILE)[0]

    @functools.cached_property
    def model(self) -> torch.nn.Module:
        """The model with the weights of the latest checkpoint, in eval mode, on the CPU."""
        return self.load_model(CHECKPOINT_LINK)

    def load_model(self, which: str = CHECKPOINT_LINK, device: str = "cpu") -> torch.nn.Module:
        """The model with the weights of ``checkpoint`` (the latest) or ``best`` (best validation loss)."""
        if which not in (CHECKPOINT_LINK, BEST_LINK):
            raise UsageError(f"which must be {CHECKPOINT_LINK!r} or {BEST_LINK!r}, got {which!r}")
        directory = checkpoint_dir(self.path, which)
        if directory is None:
            raise RunError(f"{self.path} has no {which} weights (it stopped before its first checkpoint)")
        state, meta = load_checkpoint(directory, device=device)
        kind = meta.get("model_kind", meta.get("model_task"))
        model_def = get_model(str(meta.get("model")), kind)
        config = model_def.make_config(meta.get("model_config") or {})
        dims = meta.get("task_dims") or {}
        if kind not in KINDS or set(dims) != set(KINDS[kind].dims):
            raise RunError(f"{directory}: its metadata does not say the model's dimensions ({dims})")
        model = model_def.build(config, **dims)
        load_weights(model, state, str(directory))
        return model.to(device).eval()

    def sample(
        self, length: int = 200, *, temperature: float = 1.0, top_k: int = 0, num: int = 1, seed: int | None = None
    ) -> list[str]:
        """``num`` samples of ``length`` characters from a character language model (what
        ``rnnkit sample`` prints), each starting after a newline."""
        return self.complete("", length, temperature=temperature, top_k=top_k, num=num, seed=seed)

    def complete(
        self,
        prompt: str,
        length: int = 200,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        num: int = 1,
        seed: int | None = None,
        drop_unknown: bool = False,
    ) -> list[str]:
        """``num`` continuations of ``prompt``, ``length`` characters each (what ``rnnkit complete``
        prints after the prompt). Characters the model does not know are an error unless
        ``drop_unknown``; ASCII quotes become the book's curly ones."""
        model, vocab, _ = self._language_model
        ids, _ = prompt_ids(vocab, prompt, drop_unknown=drop_unknown)
        check_sampling(vocab, length=length, temperature=temperature, top_k=top_k, num=num, prompt_chars=len(ids))
        return generate(
            model, vocab, prompt=ids, length=length, temperature=temperature, top_k=top_k, num=num, seed=seed
        )

    @functools.cached_property
    def _language_model(self) -> tuple[Any, Any, dict[str, Any]]:
        return load_language_model(self.path)


def load(run_dir: str | Path | None = None) -> Run:
    """Open the run in ``run_dir`` (None: the character model that ships with rnnkit)."""
    path = Path(run_dir) if run_dir is not None else pretrained_path()
    if not path.is_dir():
        raise UsageError(f"{path} is not a run directory")
    record = read_record(path)
    config_file = path / CONFIG_FILE
    if config_file.is_file():
        config, _ = load_yaml(config_file)
    elif isinstance(record.get("spec"), dict):  # a bare checkpoint that saved its spec
        config = record["spec"]
    elif "model" in record:  # a bare checkpoint, like the shipped model: what its meta.json says
        config = {
            "task": {"name": record.get("task")},
            "model": {"name": record["model"], **(record.get("model_config") or {})},
        }
    else:
        raise UsageError(f"{path} is not a run directory (no {CONFIG_FILE} and no {META_FILE} with a spec)")
    return Run(path, config, record)


def resolve(spec_or_path: str | Path | Mapping[str, Any] | RunSpec, **overrides: Any) -> RunSpec:
    """A validated RunSpec from a spec file, a mapping or a RunSpec, with ``overrides`` applied.

    Overrides are dotted keys (``**{"train.lr": 0.01}``) or whole sections, merged key by key
    (``train={"lr": 0.01}``, ``seed=3``)."""
    dotted = list(_dotted(overrides))
    if isinstance(spec_or_path, RunSpec):
        return resolve_spec(spec_or_path.to_dict(), dotted, default_name=spec_or_path.name)
    if isinstance(spec_or_path, Mapping):
        return resolve_spec(dict(spec_or_path), dotted)
    path = Path(spec_or_path)
    data, lines = load_yaml(path)
    return resolve_spec(data, dotted, lines=lines, source=str(path), default_name=path.stem)


def _dotted(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            pairs += _dotted(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def train(
    spec_or_path: str | Path | Mapping[str, Any] | RunSpec,
    *,
    resume: str | Path | None = None,
    progress: bool = False,
    callbacks: list[Callback] | None = None,
    **overrides: Any,
) -> Run:
    """Train a run (what ``rnnkit train`` does) and return it opened.

    A new run goes to ``out_dir/name`` (``-2``, ``-3`` ... when taken); ``resume`` continues the run
    in that directory instead. Ctrl-C saves the run and raises ``rnnkit.runner.RunInterrupted``."""
    spec = resolve(spec_or_path, **overrides)
    meta = train_run(spec, resume, progress=progress, resume=resume is not None, callbacks=callbacks or [])
    return load(meta["run_dir"])


def compare_gcn(spec_path: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Compare GCN implementations (what ``rnnkit gcn`` does): ``options`` are its long options with
    underscores (``dataset="karate", impl="dense,pyg", runs=3, epochs=50``). Returns the content of
    results.json: the graph's size, the spec and one result per implementation."""
    known = {f.name for f in dataclasses.fields(GCNSpec)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} for compare_gcn; known: {', '.join(sorted(known))}")
    return compare(load_gcn_spec(spec_path, options))
