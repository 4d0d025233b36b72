"""`rnnkit plot PATH [PATH ...]`: the figure of a sweep, a run, several runs overlaid or a GCN comparison,
or with --gradients the gradient flow through time of a run or a sweep."""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli.common import handle_errors, out_console


@handle_errors
def plot(
    paths: list[Path] = typer.Argument(
        ...,
        help="A sweep directory (a metric against a swept key), a run directory (its curves), several run "
        "directories (overlaid) or a gcn directory (the implementations side by side).",
        show_default=False,
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output file; its extension picks the format (png, pdf, svg). Default: a PNG inside PATH "
        "(runs overlaid: RUN_A_vs_RUN_B.png beside them).",
        show_default=False,
    ),
    x: str = typer.Option(
        None,
        "--x",
        help="Sweeps: the swept key on the x axis \\[default: length, else the first numeric one].",
        show_default=False,
    ),
    metric: str = typer.Option(
        None,
        "--metric",
        help="Sweeps: the results.csv column to draw (final_accuracy, eval_loss ...) \\[default: best_accuracy].",
        show_default=False,
    ),
    gradients: bool = typer.Option(
        False,
        "--gradients",
        help="The gradient flow through time (runs trained with train.record_gradients; sweeps record it by "
        "default): a run's ‖∂L/∂s_t‖ against t, one curve per recorded step; a sweep's ratio "
        "‖∂L/∂s_1‖/‖∂L/∂s_T‖ against length, at initialisation and at the end of training.",
    ),
) -> None:
    """Draw the figure of a sweep, a run, runs overlaid or a gcn comparison (headless, to a file).

    Sweep: a metric against one swept key, a line per combination of the others,
    the band the 95% confidence interval of the mean over seeds.
    Run: training and validation loss, bits per character (text) and accuracy,
    the model and its settings in the title. Several runs: overlaid.
    With --gradients: how much of the last step's loss gradient reaches each step.
    """
    from rnnkit.plotting import plot_paths

    written = plot_paths(list(paths), out, x=x, metric=metric, gradients=gradients)
    out_console.print(str(written), markup=False)
