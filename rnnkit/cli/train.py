"""`rnnkit train SPEC.yaml [key.sub=value ...]` and `rnnkit train --resume RUN_DIR`: one training run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import handle_errors, out_console, report_plugin_failures


@handle_errors
def train(
    spec: Path = typer.Argument(None, help="YAML run spec, e.g. examples/palindrome-lstm.yaml.", show_default=False),
    overrides: list[str] = typer.Argument(
        None, help="Overrides as dotted key=value, e.g. train.lr=0.01 model.hidden_size=64.", show_default=False
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this directory from its last checkpoint.", show_default=False
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved spec and exit."),
    device: str = typer.Option(None, help="auto, cpu or cuda (default: the spec's, else auto).", show_default=False),
    seed: int = typer.Option(None, help="Random seed (default: the spec's, else 0).", show_default=False),
    out_dir: Path = typer.Option(
        None, "--out-dir", help="Parent of the run directory (default: runs).", show_default=False
    ),
    name: str = typer.Option(None, help="Run name (default: the spec's, else the file name).", show_default=False),
    text: Path = typer.Option(
        None, "--text", help="Train a language model on this UTF-8 text file (sets task.text).", show_default=False
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        help="Where named corpora are looked for first (else $RNNKIT_DATA_DIR, the cache, a download).",
        show_default=False,
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch (default: torch's, one per core).", show_default=False
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar on stderr (off when stderr is not a terminal)."
    ),
) -> None:
    """Train a model from a run spec into runs/<name>/ (config, metrics.jsonl, weights); Ctrl-C saves."""
    from rnnkit.errors import UsageError
    from rnnkit.progress import TrainingReport
    from rnnkit.runner import CONFIG_FILE, train_run
    from rnnkit.spec import load_spec

    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a directory")
    extra: list = list(overrides or [])
    if resume is not None:
        if spec is not None and "=" in str(spec):  # `train --resume DIR key=value`: the spec slot holds one
            extra.insert(0, str(spec))
        elif spec is not None:
            raise UsageError("give either a spec or --resume RUN_DIR, not both")
        if not (resume / CONFIG_FILE).is_file():
            raise UsageError(f"cannot resume {resume}: it is not a run directory (no {CONFIG_FILE})")
        spec = resume / CONFIG_FILE
    elif spec is None:
        raise UsageError("give a run spec (e.g. examples/palindrome-lstm.yaml) or --resume RUN_DIR")
    for key, value in (("device", device), ("seed", seed), ("out_dir", out_dir), ("name", name), ("task.text", text)):
        if value is not None:
            extra.append((key, str(value) if isinstance(value, Path) else value))
    resolved = load_spec(spec, extra)
    resolved = _with_data_dir(resolved, data_dir)
    report_plugin_failures()
    if print_config:
        out_console.print(resolved.to_yaml(), end="", markup=False, highlight=False)
        return
    meta = train_run(
        resolved,
        resume,  # None: a new directory under out_dir
        progress=progress,
        resume=resume is not None,
        threads=threads,
        callbacks=[TrainingReport(resolved.train.max_steps)],
    )
    final = meta.get("final_metrics") or {}
    # the task's own metrics: bpc for text (on the validation text), test accuracies for graphs
    extra_metrics = "".join(
        f", {k if k.startswith('test') else 'validation ' + k} {v:.3f}"
        for k, v in final.items()
        if k not in ("loss", "accuracy")
    )
    typer.echo(
        f"{meta['run_dir']}: {meta['status']} after {meta['steps']} steps, final accuracy {meta['final_accuracy']:.3f} "
        f"(best {meta['best_accuracy']:.3f}){extra_metrics}, {meta['seconds']:.1f}s"
    )


def _with_data_dir(spec: Any, data_dir: Path | None) -> Any:
    """The spec with ``task.data_dir`` set from --data-dir (else $RNNKIT_DATA_DIR) as an absolute path,
    for tasks that read named data sets: recorded in config.yaml, a resumed run finds its data again."""
    import dataclasses

    if "data_dir" not in {f.name for f in dataclasses.fields(spec.task)}:
        return spec
    chosen = (
        data_dir if data_dir is not None else (os.environ.get("RNNKIT_DATA_DIR") if not spec.task.data_dir else None)
    )
    if not chosen:
        return spec
    task = dataclasses.replace(spec.task, data_dir=str(Path(chosen).expanduser().resolve()))
    return dataclasses.replace(spec, task=task)
