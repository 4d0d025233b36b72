"""`rnnkit train SPEC.yaml [key.sub=value ...]`, `rnnkit train --text FILE` and `rnnkit train --resume RUN_DIR`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import (
    dashboard_settings,
    err_console,
    examples_epilog,
    handle_errors,
    out_console,
    print_json,
    progress_option,
    report_plugin_failures,
    tensorboard_option,
    wandb_option,
)
from rnnkit.shipped import TEXT_EXAMPLE, get_example

TRAIN_EXAMPLES = examples_epilog(
    "rnnkit train examples/palindrome-lstm.yaml task.length=35 train.optimizer=adam",
    "rnnkit train --text my_book.txt train.max_steps=5000",
    "rnnkit train --resume runs/palindrome-lstm",
)
RUN = "Run"
DATA = "Data"
OUTPUT = "Output"


@handle_errors
def train(
    spec: Path = typer.Argument(
        None,
        help="YAML run spec, e.g. examples/palindrome-lstm.yaml (see rnnkit examples); "
        "optional with --text or --resume.",
        show_default=False,
    ),
    overrides: list[str] = typer.Argument(
        None, help="Overrides as dotted key=value, e.g. train.lr=0.01 model.hidden_size=64.", show_default=False
    ),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue the run in this directory from its last checkpoint.",
        show_default=False,
        rich_help_panel=RUN,
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved spec and exit.", rich_help_panel=RUN
    ),
    device: str = typer.Option(
        None, help="auto, cpu or cuda (default: the spec's, else auto).", show_default=False, rich_help_panel=RUN
    ),
    seed: int = typer.Option(
        None, help="Random seed (default: the spec's, else 0).", show_default=False, rich_help_panel=RUN
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for torch (default: torch's, one per core).",
        show_default=False,
        rich_help_panel=RUN,
    ),
    text: Path = typer.Option(
        None,
        "--text",
        help="Train a language model on this UTF-8 text file (sets task.text); without a spec, with the "
        "settings of the shipped christie example.",
        show_default=False,
        rich_help_panel=DATA,
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        help="Where named corpora are looked for first (else $RNNKIT_DATA_DIR, the cache, a download).",
        show_default=False,
        rich_help_panel=DATA,
    ),
    out_dir: Path = typer.Option(
        None,
        "--out-dir",
        help="Parent of the run directory (default: runs).",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
    name: str = typer.Option(
        None,
        help="Run name (default: the spec's, else the file name; with --text alone, the text's).",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
    progress: bool = progress_option(OUTPUT),
    tensorboard: bool = tensorboard_option(OUTPUT),
    wandb: bool = wandb_option(OUTPUT),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the run's record (run_dir, status, steps, accuracies, metrics, seconds) as one JSON line.",
        rich_help_panel=OUTPUT,
    ),
) -> None:
    """Train a model from a run spec into runs/<name>/ (config, metrics.jsonl, weights); Ctrl-C saves."""
    from rnnkit.distributed import launched_by_torchrun
    from rnnkit.errors import UsageError
    from rnnkit.progress import TrainingReport
    from rnnkit.runner import CONFIG_FILE, train_run
    from rnnkit.spec import load_spec

    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a directory")
    extra: list = list(overrides or [])
    if spec is not None and "=" in str(spec) and (resume is not None or text is not None) and not spec.exists():
        extra.insert(0, str(spec))  # `train --resume DIR key=value`, `train --text FILE key=value`
        spec = None
    if resume is not None:
        if spec is not None:
            raise UsageError("give either a spec or --resume RUN_DIR, not both")
        if not (resume / CONFIG_FILE).is_file():
            raise UsageError(f"cannot resume {resume}: it is not a run directory (no {CONFIG_FILE})")
        spec = resume / CONFIG_FILE
    elif spec is None and text is not None:
        spec = get_example(TEXT_EXAMPLE).path  # the shipped character-model settings
        if name is None:
            extra.insert(0, ("name", text.stem or "text"))
        err_console.print(
            f"no spec given: the settings of the shipped example {TEXT_EXAMPLE} "
            f"(rnnkit examples copy {TEXT_EXAMPLE} . writes them out to edit)",
            markup=False,
        )
    elif spec is None:
        raise UsageError(
            "give a run spec (e.g. examples/palindrome-lstm.yaml; rnnkit examples lists the shipped ones), "
            "--text FILE or --resume RUN_DIR"
        )
    if text is not None:  # recorded absolute in config.yaml: --resume from any folder finds the text again
        text = text.expanduser().absolute()
    for key, value in (("device", device), ("seed", seed), ("out_dir", out_dir), ("name", name), ("task.text", text)):
        if value is not None:
            extra.append((key, str(value) if isinstance(value, Path) else value))
    extra += dashboard_settings(tensorboard, wandb)
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
        distributed=launched_by_torchrun(),
    )
    if meta.get("rank"):  # a torchrun rank other than 0: rank 0 reports the run
        return
    if as_json:
        print_json(meta)
        return
    typer.echo(summary_line(meta))


def summary_line(meta: dict[str, Any]) -> str:
    """The one line a finished run reports: where, how it ended, accuracies, the task's own metrics
    (bpc for text, on the validation text; test accuracies for graphs), time."""
    final = meta.get("final_metrics") or {}
    extra_metrics = "".join(
        f", {k if k.startswith('test') else 'validation ' + k} {v:.3f}"
        for k, v in final.items()
        if k not in ("loss", "accuracy", "chars") and isinstance(v, int | float)
    )
    return (
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
