"""`rnnkit runs [DIR]`: every run under DIR as a table (or JSON); `rnnkit runs RUN`: one run's details."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import examples_epilog, handle_errors, out_console, print_json, print_table

#: The end of ``rnnkit runs --help``.
RUNS_EXAMPLES = examples_epilog(
    "rnnkit runs",
    "rnnkit runs runs/sweep-palindrome --sort metric --reverse",
    "rnnkit runs runs/christie --json",
)
STATUS_STYLES = {
    "solved": "green",
    "max_steps": "green",
    "plateau": "yellow",
    "diverged": "red",
    "failed": "red",
    "unreadable": "red",
    "interrupted": "yellow",
    "stopped": "yellow",
    "running": "cyan",
}


@handle_errors
def runs(
    path: Path = typer.Argument(
        Path("runs"),
        help="A folder of runs (searched below: sweeps and comparisons too), or one run directory.",
    ),
    sort: str = typer.Option(
        "name",
        "--sort",
        help="Sort by name, model, task, status, metric, steps, time (training seconds) or started.",
    ),
    reverse: bool = typer.Option(False, "--reverse", "-r", help="Sort in descending order."),
    as_json: bool = typer.Option(
        False, "--json", help="Machine-readable output: one JSON list (one object for one run)."
    ),
) -> None:
    """List the runs under a folder (default: runs), or show one run's record, provenance and spec.

    One row per run found below the folder, sweeps and comparisons included.
    Main metric: held-out accuracy (palindrome), validation bits per character
    (text), test accuracy at the best validation epoch (graph).
    A run that cannot be read is listed as unreadable; one recorded running
    that no process owns (killed) as stopped: rnnkit train --resume continues it.
    """
    from rnnkit.runs_table import format_metric, format_seconds, is_run_dir, list_runs, run_details

    if path.is_dir() and is_run_dir(path):
        details = run_details(path)
        if as_json:
            print_json(details)
        else:
            _print_details(details)
        return
    rows = list_runs(path, sort=sort, reverse=reverse)
    if as_json:
        print_json([row.to_dict() for row in rows])
        return
    if not rows:
        out_console.print(f"no runs under {path}", markup=False)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"runs under {path}", title_justify="left")
    for column, justify in (
        ("name", "left"),
        ("model", "left"),
        ("task", "left"),
        ("status", "left"),
        ("metric", "right"),
        ("steps", "right"),
        ("time", "right"),
        ("started", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "name", overflow="fold")
    for row in rows:
        table.add_row(
            Text(row.name),
            Text(row.model or ""),
            Text(row.task or ""),
            Text(row.status, style=STATUS_STYLES.get(row.status, "")),
            Text(format_metric(row)),
            "" if row.steps is None else f"{row.steps:,}",
            format_seconds(row.seconds),
            _local_time(row.started),
        )
    print_table(table)


def _local_time(iso: str | None) -> str:
    """An ISO 8601 time as local ``YYYY-MM-DD HH:MM``; empty for None."""
    if not iso:
        return ""
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _print_details(details: dict[str, Any]) -> None:
    import yaml
    from rich.table import Table
    from rich.text import Text

    from rnnkit.runs_table import RunRow, format_metric, format_seconds

    row = RunRow(**details["run"])
    record, provenance = details["record"], details["provenance"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def add(key: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            grid.add_row(key, Text(str(value)))

    add("run", row.path)
    status = row.status + (f" after {row.steps:,} steps" if row.steps is not None else "")
    if row.seconds is not None:
        status += f" ({format_seconds(row.seconds)} training)"
    grid.add_row("status", Text(status, style=STATUS_STYLES.get(row.status, "")))
    add("error", row.error)
    parameters = record.get("parameters")
    add("model", f"{row.model} ({parameters:,} parameters)" if isinstance(parameters, int) else row.model)
    add("task", row.task)
    add("main metric", format_metric(row))
    final = record.get("final_metrics")
    if isinstance(final, dict):
        add(
            "final metrics", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
        )
    add("run id", record.get("run_id"))
    if provenance:
        versions = ", ".join(
            f"{name} {provenance[key]}"
            for name, key in (("rnnkit", "rnnkit_version"), ("torch", "torch_version"), ("python", "python_version"))
            if provenance.get(key)
        )
        add("versions", versions)
        add("git commit", provenance.get("git_commit"))
        add("spec file", provenance.get("spec_file"))
        command = provenance.get("command")
        add("command", " ".join(command) if isinstance(command, list) else command)
        device = provenance.get("device_name") or provenance.get("device")
        add("host", f"{provenance.get('host', '?')}, {device}, {provenance.get('threads', '?')} threads")
        add("started", _local_time(provenance.get("started_at")))
        resumed = provenance.get("resumed_at")
        if isinstance(resumed, list):
            add("resumed", ", ".join(_local_time(t) for t in resumed))
        add("ended", _local_time(provenance.get("ended_at")))
    else:
        add("provenance", "not recorded (a run from before rnnkit recorded it)")
    out_console.print(grid)
    if details["config"] is not None:
        out_console.print(Text("\nconfig.yaml", style="bold"))
        out_console.print(yaml.safe_dump(details["config"], sort_keys=False), end="", markup=False, highlight=False)
