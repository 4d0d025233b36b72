"""The ``rnnkit`` command line: a thin layer over the library (one module per command)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.exceptions import Abort, TyperException

from rnnkit.cli.common import FlagsGroup, examples_epilog
from rnnkit.cli.examples import examples_app
from rnnkit.cli.gcn import GCN_EXAMPLES, gcn
from rnnkit.cli.generate import COMPLETE_EXAMPLES, SAMPLE_EXAMPLES, complete, sample
from rnnkit.cli.inspect import INSPECT_EXAMPLES, inspect
from rnnkit.cli.models import MODELS_EXAMPLES, models
from rnnkit.cli.plot import plot
from rnnkit.cli.runs import RUNS_EXAMPLES, runs
from rnnkit.cli.sweep import SWEEP_EXAMPLES, sweep
from rnnkit.cli.train import TRAIN_EXAMPLES, train
from rnnkit.version import __version__


class OneLineErrors(FlagsGroup):
    """Usage errors that click finds itself (a missing argument, a bad option value, an unknown
    command) reported like every other rnnkit error: one line on stderr and exit 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as exc:  # click's own errors (typer vendors click)
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `rnnkit`: the help is the answer
                help_text = exc.format_message() if hasattr(exc, "format_message") else ""
                if help_text.strip():  # (typer's rich help has already been printed)
                    print(help_text, file=sys.stderr)
                if standalone_mode:
                    sys.exit(2)
                raise
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None and exc.exit_code == 2 else ""
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            print(f"error: {message}{hint}", file=sys.stderr)
            if standalone_mode:
                sys.exit(getattr(exc, "exit_code", 2))
            raise
        except Abort:
            print("interrupted", file=sys.stderr)
            if standalone_mode:
                sys.exit(130)
            raise
        except KeyboardInterrupt:  # outside a command (while options are parsed)
            print("interrupted", file=sys.stderr)
            if standalone_mode:
                sys.exit(130)
            raise
        except Exception as exc:  # outside a command's own error handling: still one line
            from rnnkit.cli.common import debug, error_line

            if debug() or not standalone_mode:
                raise
            message, code = error_line(exc)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(code)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


app = typer.Typer(
    cls=OneLineErrors,
    name="rnnkit",
    help="Recurrent and graph networks from their equations: train, sweep, plot and compare.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
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


PLOT_EXAMPLES = examples_epilog(
    "rnnkit plot runs/sweep-palindrome",
    "rnnkit plot runs/christie --out christie.svg",
    "rnnkit plot runs/gcn-cora",
)

app.command(epilog=TRAIN_EXAMPLES)(train)
app.command(epilog=SWEEP_EXAMPLES)(sweep)
app.command(epilog=PLOT_EXAMPLES)(plot)
app.command(epilog=RUNS_EXAMPLES)(runs)
app.command(epilog=SAMPLE_EXAMPLES)(sample)
app.command(epilog=COMPLETE_EXAMPLES)(complete)
app.command(epilog=INSPECT_EXAMPLES)(inspect)
app.command(epilog=GCN_EXAMPLES)(gcn)
app.command(epilog=MODELS_EXAMPLES)(models)
app.add_typer(examples_app, name="examples")


def main() -> None:
    """The ``rnnkit`` console script. Once the command is over (finished, failed or interrupted), a
    further Ctrl-C is ignored, so that the interpreter's shutdown (joining worker processes, flushing
    files) never prints a traceback."""
    try:
        app(prog_name="rnnkit")
    finally:
        _ignore_sigint()


def _ignore_sigint() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do
        pass
