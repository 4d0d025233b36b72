"""The ``rnnkit`` command line: a thin layer over the library (one module per command)."""

from __future__ import annotations

import typer

from rnnkit import __version__
from rnnkit.cli.generate import complete, sample
from rnnkit.cli.models import models
from rnnkit.cli.plot import plot
from rnnkit.cli.sweep import sweep
from rnnkit.cli.train import train

app = typer.Typer(
    name="rnnkit",
    help="Recurrent and graph networks from their equations: train, sweep, plot and compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """rnnkit: RNNs, LSTMs and GCNs written from their equations."""


app.command()(train)
app.command()(sweep)
app.command()(plot)
app.command()(sample)
app.command()(complete)
app.command()(models)


def main() -> None:
    app(prog_name="rnnkit")
