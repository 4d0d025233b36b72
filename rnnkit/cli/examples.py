"""`rnnkit examples` and `rnnkit examples copy NAME DEST`: the example specs shipped with rnnkit."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from rnnkit.cli.common import FlagsGroup, err_console, examples_epilog, handle_errors, print_json, print_table
from rnnkit.shipped import copy_example, get_example, list_examples

examples_app = typer.Typer(
    cls=FlagsGroup,
    name="examples",
    help="The example specs shipped with rnnkit: list them, or copy one out to edit and train.",
    no_args_is_help=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@examples_app.callback(
    invoke_without_command=True,
    epilog=examples_epilog(
        "rnnkit examples",
        "rnnkit examples copy christie .",
        "rnnkit train christie.yaml task.text=my_book.txt train.max_steps=2000",
    ),
)
@handle_errors
def examples(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="A JSON list instead of the table: name, command, description and file of each example."
    ),
) -> None:
    """List the example specs shipped with rnnkit (name, command, description); copy one out to train it."""
    if ctx.invoked_subcommand is not None:
        return
    rows = list_examples()
    if as_json:
        print_json(
            [{"name": e.name, "command": e.command, "description": e.description, "path": str(e.path)} for e in rows]
        )
        return
    from rich.table import Table

    table = Table(title="rnnkit examples", caption="rnnkit examples copy NAME DIR writes NAME.yaml into DIR")
    table.add_column("name", no_wrap=True)
    table.add_column("use with", no_wrap=True)
    table.add_column("description")
    for example in rows:
        table.add_row(example.name, f"rnnkit {example.command}", example.description)
    print_table(table)


def _example_names(incomplete: str) -> list[str]:
    """Shell completion of an example's name."""
    return [e.name for e in list_examples() if e.name.startswith(incomplete)]


@examples_app.command(
    "copy",
    epilog=examples_epilog(
        "rnnkit examples copy christie .",
        "rnnkit examples copy palindrome-lstm my-run.yaml --force",
        "rnnkit examples copy gcn-cora - | less",
    ),
)
@handle_errors
def copy(
    name: str = typer.Argument(
        ...,
        help="The example, e.g. christie (see rnnkit examples).",
        show_default=False,
        autocompletion=_example_names,
    ),
    dest: Path = typer.Argument(
        Path("."),
        help="A folder (the file keeps its name, e.g. ./christie.yaml) or the file to write; - for stdout.",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite the file if it exists."),
) -> None:
    """Write a shipped example spec to a folder or file (an existing file is kept unless --force)."""
    if str(dest) == "-":
        sys.stdout.write(get_example(name).text())
        return
    written = copy_example(name, dest, force=force)
    err_console.print(f"wrote {written}", markup=False)
