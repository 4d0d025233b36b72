"""`rnnkit sweep --lengths 5-35`: a palindrome sweep run, summarised as a table and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import err_console, handle_errors, out_console, report_plugin_failures, set_option


@handle_errors
def sweep(
    spec: Path = typer.Argument(
        None,
        help="Optional sweep spec (YAML): models, lengths, seeds, a base run spec and per-length overrides; "
        "the options below override it.",
        show_default=False,
    ),
    lengths: str = typer.Option(
        None, help="Palindrome lengths: 5-35, 5-35:5 or 5,10,20 [default: 5-35].", show_default=False
    ),
    models: str = typer.Option(None, help="Comma-separated model names [default: rnn,lstm].", show_default=False),
    seeds: int = typer.Option(None, help="Seeds per (model, length): 0..N-1 [default: 1].", show_default=False),
    workers: int = typer.Option(
        None, help="Runs in parallel, each in its own process [default: CPU count].", show_default=False
    ),
    out: Path = typer.Option(None, help="Sweep directory [default: runs/sweep-palindrome].", show_default=False),
    settings: list[str] = set_option("Override for every run, e.g. -s train.optimizer=adam (repeatable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Train every model at every palindrome length; results.csv, a summary table and the figure.

    Re-running the same sweep skips the runs already finished.
    """
    from rnnkit.errors import RunError
    from rnnkit.plotting import save_figure, sweep_figure
    from rnnkit.progress import CountProgress
    from rnnkit.rundir import prepare_run_dir
    from rnnkit.runner import resolve_device
    from rnnkit.sweep import FIGURE_FILE, check_plan, plan_sweep, run_sweep

    plan, n_workers = plan_sweep(
        spec, lengths=lengths, models=models, seeds=seeds, workers=workers, out=out, overrides=list(settings or [])
    )
    runs = plan.run_specs()  # validates every run before starting any
    for device in {run[3].device for run in runs}:
        resolve_device(device)
    prepare_run_dir(plan.out)  # an unwritable --out fails here, before the header line
    check_plan(plan.out, runs)  # runs of another spec in the way, memory
    report_plugin_failures()
    err_console.print(
        f"sweep: {len(runs)} runs ({', '.join(plan.models)} x {len(plan.lengths)} lengths x "
        f"{plan.seeds} seeds), {n_workers} workers -> {plan.out}"
    )
    with CountProgress(len(runs), "runs", enabled=progress) as bar:

        def on_result(row: dict[str, Any], skipped: bool) -> None:
            bar.advance()
            what = "skipped (done)" if skipped else row["status"]
            acc = row["best_accuracy"]
            error = f": {row['error']}" if row["error"] else ""
            detail = f", best acc {acc:.3f}" if isinstance(acc, float) else error
            bar.log(f"{row['model']:>8} T={row['length']:<3} seed {row['seed']}: {what}{detail}")

        rows = run_sweep(plan, workers=n_workers, on_result=on_result, runs=runs, check=False)
    figure = save_figure(sweep_figure(rows, title=f"Palindromes: {plan.out.name}"), plan.out / FIGURE_FILE)
    out_console.print(summary_table(rows))
    out_console.print(f"results: {plan.out / 'results.csv'}\nfigure:  {figure}", markup=False)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise RunError(
            f"{len(failed)} of {len(rows)} runs failed (their errors are in {plan.out / 'results.csv'}); "
            "run the same command again to retry them"
        )


def summary_table(rows: list[dict[str, Any]]) -> Any:
    """Best accuracy (mean ± std over seeds) and mean steps per model and length, as a rich Table."""
    from rich.table import Table

    from rnnkit.sweep import summarize

    summary = summarize(rows)
    table = Table(title="Best accuracy by palindrome length (mean ± std over seeds; steps)")
    table.add_column("T", justify="right")
    for model in summary:
        table.add_column(model, justify="right")
    lengths = sorted({t for by_length in summary.values() for t in by_length})
    for t in lengths:
        cells = []
        for model in summary:
            s = summary[model].get(t)
            if s is None or not s["runs"]:
                cells.append("failed" if s and s["failed"] else "-")
                continue
            std = f" ± {s['std']:.3f}" if s["runs"] > 1 else ""
            colour = "green" if s["mean"] >= 0.99 else ("red" if s["mean"] < 0.5 else "yellow")
            cells.append(f"[{colour}]{s['mean']:.3f}{std}[/] ({s['steps']:.0f})")
        table.add_row(str(t), *cells)
    return table
