"""`rnnkit models`: every registered model with its kinds, provider and parameter count (table or JSON)."""

from __future__ import annotations

import json

import typer

from rnnkit.cli.common import (
    examples_epilog,
    handle_errors,
    out_console,
    print_table,
    report_plugin_failures,
    set_option,
)

MODELS_EXAMPLES = examples_epilog(
    "rnnkit models",
    "rnnkit models -s hidden_size=64 --input-size 1",
    "rnnkit models --json | jq '.[].name'",
)


@handle_errors
def models(
    settings: list[str] = set_option(
        "Config value for the parameter count, e.g. -s hidden_size=64 (applied to models that have the key)."
    ),
    input_size: int = typer.Option(10, help="Input size for the count (palindromes: 10 one-hot, 1 scalar).", min=1),
    num_classes: int = typer.Option(10, help="Number of classes for the count.", min=1),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List every registered model: name, model kinds, provider, and parameter count for a config."""
    from rnnkit.models_table import count_dims, dims_caption, list_models

    rows = list_models(settings or [], input_size=input_size, num_classes=num_classes)
    report_plugin_failures()
    if as_json:
        out_console.print_json(json.dumps(rows))
    else:
        from rich.table import Table

        caption = dims_caption(count_dims(input_size=input_size, num_classes=num_classes))
        table = Table(title="rnnkit models", caption=caption)
        table.add_column("name", no_wrap=True)
        table.add_column("kinds")
        table.add_column("provided by", no_wrap=True)
        table.add_column("parameters", justify="right", no_wrap=True)
        table.add_column("config")
        for row in rows:
            if row["status"] != "ok":
                table.add_row(
                    f"[red]{row['name']}[/]",
                    "[red]failed to load[/]",
                    row["distribution"],
                    "-",
                    f"[red]{row['status'].removeprefix('failed: ')}[/]",
                )
                continue
            config = ", ".join(f"{k}={v}" for k, v in row["config"].items())
            params = f"{row['parameters']:,}" if row["parameters"] is not None else "-"
            table.add_row(
                row["name"], ", ".join(row["kinds"]), f"{row['distribution']} {row['version']}", params, config
            )
        print_table(table)
