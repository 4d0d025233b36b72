"""`rnnkit train SPEC.yaml [key.sub=value ...]`"""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli.common import err_console, handle_errors, out_console, report_plugin_failures


@handle_errors
def train(
    spec: Path = typer.Argument(..., help="YAML run spec, e.g. examples/palindrome-lstm.yaml.", show_default=False),
    overrides: list[str] = typer.Argument(
        None, help="Overrides as dotted key=value, e.g. train.lr=0.01 model.hidden_size=64.", show_default=False
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved spec and exit."),
    device: str = typer.Option(None, help="auto, cpu or cuda (default: the spec's, else auto).", show_default=False),
    seed: int = typer.Option(None, help="Random seed (default: the spec's, else 0).", show_default=False),
    out_dir: Path = typer.Option(
        None, "--out-dir", help="Parent of the run directory (default: runs).", show_default=False
    ),
    name: str = typer.Option(None, help="Run name (default: the spec's, else the file name).", show_default=False),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar on stderr (off when stderr is not a terminal)."
    ),
) -> None:
    """Train one model from a run spec; writes runs/<name>/ (config, metrics.jsonl, weights)."""
    from rnnkit.runner import prepare_run_dir, resolve_device, train_run, unique_run_dir
    from rnnkit.spec import load_spec

    extra = list(overrides or [])
    for key, value in (("device", device), ("seed", seed), ("out_dir", out_dir), ("name", name)):
        if value is not None:
            extra.append(f"{key}={value}")
    resolved = load_spec(spec, extra)
    report_plugin_failures()
    if print_config:
        out_console.print(resolved.to_yaml(), end="", markup=False, highlight=False)
        return
    resolve_device(resolved.device)  # fail before creating anything
    run_dir = prepare_run_dir(unique_run_dir(resolved.out_dir, resolved.name))
    err_console.print(f"training [bold]{resolved.model_name}[/] on {resolved.task_name} -> {run_dir}")
    meta = train_run(resolved, run_dir, progress=progress)
    typer.echo(
        f"{run_dir}: {meta['status']} after {meta['steps']} steps, final accuracy {meta['final_accuracy']:.3f} "
        f"(best {meta['best_accuracy']:.3f}), {meta['seconds']:.1f}s"
    )
