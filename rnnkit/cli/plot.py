"""`rnnkit plot PATH`: the figure of a sweep, a run or a GCN comparison, written to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli.common import handle_errors, out_console


@handle_errors
def plot(
    path: Path = typer.Argument(
        ...,
        help="A sweep directory (accuracy vs length), a run directory (loss and accuracy curves) or a gcn "
        "directory (the implementations side by side).",
        show_default=False,
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output file; its extension picks the format (png, pdf, svg). Default: a PNG inside PATH.",
        show_default=False,
    ),
) -> None:
    """Draw the figure of a sweep, a run or a gcn comparison (headless)."""
    from rnnkit.plotting import plot_path

    written = plot_path(path, out)
    out_console.print(str(written), markup=False)
