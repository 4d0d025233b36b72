"""`rnnkit sweep`: train every combination of swept settings x seeds (the palindrome study by
default), locally or on Ray, then print the summary over seeds and draw the figure."""

from __future__ import annotations

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
    print_table,
    progress_option,
    report_plugin_failures,
    set_option,
    tensorboard_option,
    wandb_option,
)

SWEEP_EXAMPLES = examples_epilog(
    "rnnkit sweep --lengths 5-35 --seeds 3",
    "rnnkit sweep examples/palindrome-lstm.yaml -p train.lr=1e-4:1e-2:5log -s train.optimizer=adam",
    "rnnkit sweep examples/sweep-palindrome.yaml --out runs/report-lr --json > summary.json",
)
WHAT = "What to sweep"
WHERE = "Where the runs go"
OUTPUT = "Output"


@handle_errors
def sweep(
    spec: Path = typer.Argument(
        None,
        help="Optional sweep spec (YAML: grid, models, lengths, seeds, a base run spec, per-length overrides) "
        "or a run spec to sweep around; the options below override it.",
        show_default=False,
    ),
    params: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        metavar="KEY=VALUES",
        help="Sweep a spec key: KEY=a,b,c | KEY=5-35[:step] | KEY=1e-4:1e-2:5log | KEY=0:0.5:6 (repeatable; "
        "every combination x seed is one run).",
        show_default=False,
        rich_help_panel=WHAT,
    ),
    lengths: str = typer.Option(
        None,
        help="Shorthand for -p task.length=...: 5-35, 5-35:5 or 5,10,20 \\[default: 5-35 without a spec].",
        show_default=False,
        rich_help_panel=WHAT,
    ),
    models: str = typer.Option(
        None,
        help="Shorthand for -p model.name=...: rnn,lstm \\[default: rnn,lstm without a spec].",
        show_default=False,
        rich_help_panel=WHAT,
    ),
    seeds: int = typer.Option(
        None, help="Seeds per combination: 0..N-1 \\[default: 1].", show_default=False, rich_help_panel=WHAT
    ),
    settings: list[str] = set_option("Override for every run, e.g. -s train.optimizer=adam (repeatable).", WHAT),
    workers: int = typer.Option(
        None,
        help="Runs in parallel on this machine, each in its own process \\[default: the CPUs this process may use].",
        show_default=False,
        rich_help_panel=WHERE,
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        max=1024,
        help="Torch threads per run \\[default: the CPUs this process may use / --workers; Ray: 1].",
        show_default=False,
        rich_help_panel=WHERE,
    ),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray.", rich_help_panel=WHERE),
    address: str = typer.Option(
        None,
        "--address",
        help="Ray cluster to join (auto, or ray://HOST:10001) \\[default: a local Ray instance].",
        show_default=False,
        rich_help_panel=WHERE,
    ),
    out: Path = typer.Option(
        None, help="Sweep directory \\[default: runs/<sweep name>].", show_default=False, rich_help_panel=OUTPUT
    ),
    progress: bool = progress_option(OUTPUT),
    tensorboard: bool = tensorboard_option(OUTPUT),
    wandb: bool = wandb_option(OUTPUT),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the summary (every run's row, the aggregates over seeds, the files) as one JSON line "
        "instead of the table.",
        rich_help_panel=OUTPUT,
    ),
) -> None:
    """Train every combination of swept values x seeds; results.csv, a summary over seeds and a figure.

    With nothing to sweep, the palindrome study: rnn and lstm at lengths 5-35. Re-running the same sweep
    skips the runs already finished; several sweeps started on one --out (on one machine or on several
    sharing the directory) divide the runs between them.
    """
    from rnnkit.device import resolve_device
    from rnnkit.errors import RunError, UsageError
    from rnnkit.plotting import figure_name, save_figure, sweep_axes, sweep_figure
    from rnnkit.progress import SweepProgress
    from rnnkit.rundir import prepare_run_dir
    from rnnkit.sweep import check_plan, plan_sweep, run_sweep

    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if address is not None and executor != "ray":
        raise UsageError("--address is for --executor ray")
    plan, n_workers = plan_sweep(
        spec,
        lengths=lengths,
        models=models,
        seeds=seeds,
        workers=workers,
        out=out,
        overrides=[*(settings or []), *dashboard_settings(tensorboard, wandb)],
        params=list(params or []),
    )
    runs = plan.run_specs()  # validates every run before starting any
    devices = {run.spec.device for run in runs}
    for device in devices:
        resolve_device(device)
    prepare_run_dir(plan.out)  # an unwritable --out fails here, before the header line
    check_plan(plan.out, runs)  # runs of another spec in the way, memory
    report_plugin_failures()
    run_executor = None
    if executor == "ray":
        from rnnkit.ray_executor import RayExecutor

        run_executor = RayExecutor(address, threads=threads or 1, gpus=1 if "cuda" in devices else 0)
    where = f"ray ({address or 'local instance'})" if executor == "ray" else f"{n_workers} workers"
    err_console.print(f"sweep: {len(runs)} runs ({plan.describe()}), {where} -> {plan.out}")
    keys = list(plan.columns)
    with SweepProgress(len(runs), [plan.out / r.spec.name for r in runs], enabled=progress) as bar:

        def on_result(row: dict[str, Any], skipped: bool) -> None:
            bar.finished(Path(row["run_dir"]))
            bar.advance()
            what = "skipped (done)" if skipped else row["status"]
            acc = row["best_accuracy"]
            error = f": {row['error']}" if row["error"] else ""
            detail = f", best acc {acc:.3f}" if isinstance(acc, float) else error
            values = " ".join(f"{k}={row[k]}" for k in keys)
            bar.log(f"{values} seed {row['seed']}: {what}{detail}")

        rows = run_sweep(
            plan, workers=n_workers, on_result=on_result, runs=runs, check=False, executor=run_executor, threads=threads
        )
    x = sweep_axes(rows, keys)
    figure = save_figure(
        sweep_figure(rows, keys, x=x, title=f"{plan.out.name}: best accuracy against {x}"),
        plan.out / figure_name(x, "best_accuracy"),
    )
    threshold = plan.threshold(runs)
    if as_json:
        print_json(
            {
                "out": str(plan.out),
                "results": str(plan.out / "results.csv"),
                "figure": str(figure),
                "keys": keys,
                "summary": summary_rows(rows, keys, threshold),
                "runs": rows,
            }
        )
    else:
        print_table(summary_table(rows, keys, threshold))
        out_console.print(f"results: {plan.out / 'results.csv'}\nfigure:  {figure}", markup=False)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise RunError(
            f"{len(failed)} of {len(rows)} runs failed (their errors are in {plan.out / 'results.csv'}); "
            "run the same command again to retry them"
        )


def summary_rows(rows: list[dict[str, Any]], keys: list[str], threshold: float | None) -> list[dict[str, Any]]:
    """The summary over seeds as data: per combination, best accuracy's mean, std, n, 95% CI half-width,
    success rate (with a threshold) and mean steps."""
    from rnnkit.stats import aggregate

    accuracy = aggregate(rows, keys, "best_accuracy", threshold)
    steps = {tuple(a.values.values()): a for a in aggregate(rows, keys, "steps")}
    return [
        {
            **a.values,
            "best_accuracy_mean": a.mean,
            "best_accuracy_std": a.std,
            "best_accuracy_ci95": a.ci,
            "n": a.n,
            "runs": a.runs,
            "success_rate": a.success_rate,
            "steps_mean": steps[tuple(a.values.values())].mean,
        }
        for a in accuracy
    ]


def summary_table(rows: list[dict[str, Any]], keys: list[str], threshold: float | None) -> Any:
    """Best accuracy over seeds per combination: mean, std, n, 95% CI of the mean, success rate, steps."""
    import math

    from rich.table import Table

    from rnnkit.stats import aggregate

    accuracy = aggregate(rows, keys, "best_accuracy", threshold)
    steps = {tuple(a.values.values()): a for a in aggregate(rows, keys, "steps")}
    table = Table(title="Best accuracy over seeds (mean ± 95% CI of the mean, Student t)")
    for key in keys:
        table.add_column(key, justify="right")
    for column in ("mean ± CI", "std", "n", *(["solved"] if threshold else []), "steps"):
        table.add_column(column, justify="right")
    for a in accuracy:
        values = [str(v) for v in a.values.values()]
        if not a.n:
            table.add_row(*values, "failed" if a.failed else "-", "", "0", *([""] if threshold else []), "")
            continue
        ci = f" ± {a.ci:.3f}" if not math.isnan(a.ci) else ""
        colour = "green" if a.mean >= 0.99 else ("red" if a.mean < 0.5 else "yellow")
        solved = [f"{a.success_rate:.0%} of {a.runs}"] if threshold and a.success_rate is not None else []
        mean_steps = steps[tuple(a.values.values())].mean
        table.add_row(
            *values,
            f"[{colour}]{a.mean:.3f}{ci}[/]",
            f"{a.std:.3f}" if a.n > 1 else "",  # one seed: no spread to show
            str(a.n),
            *solved,
            f"{mean_steps:.0f}" if not math.isnan(mean_steps) else "",
        )
    return table
