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
    x: str = typer.Option(
        None,
        "--x",
        help="Sweeps: the swept key on the x axis [default: length, else the first numeric one].",
        show_default=False,
    ),
    metric: str = typer.Option(
        None,
        "--metric",
        help="Sweeps: the results.csv column to draw (final_accuracy, eval_loss ...) [default: best_accuracy].",
        show_default=False,
    ),
) -> None:
    """Draw the figure of a sweep, a run or a gcn comparison (headless). A sweep's figure: the metric
    against one swept key, one line per combination of the others, the band the 95% CI over seeds."""
    from rnnkit.plotting import plot_path

    written = plot_path(path, out, x=x, metric=metric)
    out_console.print(str(written), markup=False)
