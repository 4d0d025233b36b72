"""What every command shares: one-line errors with the right exit code, the consoles, JSON output, overrides."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from rnnkit.checkpoint import finite_json
from rnnkit.config import one_line
from rnnkit.errors import RnnkitError, RnnkitWarning

F = TypeVar("F", bound=Callable[..., Any])


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment. While a progress bar shows, rich has put a
    proxy there that prints each line above the bar; a console bound to the real stderr would glue its
    line onto the bar's and leave a copy of the bar behind."""

    def write(self, text: str) -> int:
        if sys.stderr is None:  # no stderr at all (pythonw): nothing to show
            return len(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        if sys.stderr is not None:
            sys.stderr.flush()

    def isatty(self) -> bool:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())

    def fileno(self) -> int:
        return sys.stderr.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"


#: Messages, warnings and errors (stderr), printed above a progress bar while one shows.
err_console = Console(file=_CurrentStderr(), highlight=False, soft_wrap=True)  # type: ignore[arg-type]
#: Generated results (stdout).
out_console = Console(highlight=False, soft_wrap=True)
#: The width results are drawn at when stdout is not a terminal (a pipe or a file): wide enough that a
#: table is never wrapped or cut (COLUMNS, when set, still wins).
PIPE_WIDTH = 100_000

EXIT_INTERRUPTED = 130


def examples_epilog(*commands: str) -> str:
    """The end of a command's ``--help``: a few example command lines."""
    from rich.markup import escape

    return "[bold]Examples[/]\n\n" + "\n".join(escape(c) for c in commands)


def result_console() -> Console:
    """The console for a result table: the terminal's width on a terminal, else unbounded (a table piped
    into a file or another program keeps every column whole instead of being cut to 80 columns)."""
    if out_console.is_terminal or os.environ.get("COLUMNS"):
        return out_console
    return Console(file=sys.stdout, width=PIPE_WIDTH, highlight=False, soft_wrap=True)


def print_table(table: Any) -> None:
    """A rich table on stdout, as wide as its content when piped (``result_console``)."""
    result_console().print(table)


def print_json(data: Any) -> None:
    """``data`` as one line of strict JSON on stdout (NaN and infinities as null)."""
    sys.stdout.write(json.dumps(finite_json(data), allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def interrupted_line(exc: BaseException) -> str:
    """What to say after Ctrl-C: where the run was saved and the command that resumes it, when a run was
    interrupted; else the library's own message."""
    run_dir, step = getattr(exc, "run_dir", None), getattr(exc, "step", None)
    if run_dir is not None and step is not None:
        return (
            f"interrupted at step {step}; saved in {run_dir}. "
            f"Resume with: rnnkit train --resume {shlex.quote(str(run_dir))}"
        )
    detail = one_line(str(exc)) if str(exc) else ""
    if not detail:
        return "interrupted"
    return detail if detail.lower().startswith("interrupted") else f"interrupted: {detail}"


def _flags_as_flags(params: Any) -> None:
    """Show an on/off option as the flag it is: no ``<bool>`` type beside it in ``--help``."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""


class FlagsGroup(TyperGroup):
    """A command group whose help shows flags as flags (``--json``, not ``--json <bool>``): its own
    options and those of the commands and groups beneath it."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _flags_as_flags(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, TyperGroup):
            _flags_as_flags(command.get_params(ctx))
        return command


def set_option(help_text: str, panel: str | None = None) -> Any:
    """The repeatable ``-s/--set key=value`` option (one definition for every command that takes it)."""
    return typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE", help=help_text, show_default=False, rich_help_panel=panel
    )


def progress_option(panel: str | None = None) -> Any:
    """The ``--progress/--no-progress`` option of the commands that train."""
    return typer.Option(
        True,
        "--progress/--no-progress",
        help="Progress bar on stderr (off when stderr is not a terminal).",
        rich_help_panel=panel,
    )


def tensorboard_option(panel: str | None = None) -> Any:
    """``--tensorboard``: short for ``-s log.tensorboard=true`` (see ``dashboard_settings``)."""
    return typer.Option(
        False,
        "--tensorboard",
        help="TensorBoard event files in each run directory (log.tensorboard=true; pip install rnnkit\\[tensorboard]).",
        rich_help_panel=panel,
    )


def wandb_option(panel: str | None = None) -> Any:
    """``--wandb``: short for ``-s log.wandb=true`` (see ``dashboard_settings``)."""
    return typer.Option(
        False,
        "--wandb",
        help="Log to Weights & Biases (log.wandb=true; pip install rnnkit\\[wandb]).",
        rich_help_panel=panel,
    )


def dashboard_settings(tensorboard: bool, wandb: bool) -> list[str]:
    """The ``key=value`` settings that ``--tensorboard`` and ``--wandb`` stand for."""
    return [f"log.{name}=true" for name, on in (("tensorboard", tensorboard), ("wandb", wandb)) if on]


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """What the library reports through ``warnings`` (an RnnkitWarning) as one line on stderr."""
    if issubclass(category, RnnkitWarning):
        warn(_escape(str(message).replace("\n", " ")))


def debug() -> bool:
    return os.environ.get("RNNKIT_DEBUG", "") not in ("", "0")


#: What to lower when a command runs out of memory, by command (the function's name).
OOM_HINTS = {
    "train": "lower train.batch_size or the model size",
    "sweep": "lower train.batch_size or the model size with -s, or --workers",
    "sample": "lower --num or --length",
    "complete": "lower --length or shorten the prompt",
    "inspect": "lower --chars",
    "gcn": "lower --hidden, --layers or --nodes, or use --impl pyg instead of dense",
    "plot": "plot fewer runs",
    "models": "lower the sizes given with -s",
}


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or one of torch's allocation failures (CPU or CUDA)."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(
        words in text
        for words in ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")
    )


def error_line(exc: BaseException, command: str | None = None) -> tuple[str, int]:
    """The one line (without "error: ") and the exit code for an exception that reached the CLI."""
    if isinstance(exc, RnnkitError):
        return one_line(str(exc)), exc.exit_code
    if is_out_of_memory(exc):
        asked = re.search(r"tried to allocate (\d+) bytes", str(exc), re.IGNORECASE)
        if asked:  # torch's CPU allocator: "[enforce fail at alloc_cpu.cpp:...] ... tried to allocate N bytes"
            detail = f"could not allocate {int(asked.group(1)) / 1e9:,.1f} GB more"
        else:
            detail = first_line(str(exc)) or type(exc).__name__
        hint = OOM_HINTS.get(command or "", "lower the sizes asked for")
        return f"out of memory: {detail} ({hint})", 1
    if isinstance(exc, UnicodeEncodeError):
        encoding = getattr(sys.stdout, "encoding", None) or "?"
        return (
            f"cannot write {exc.object[exc.start : exc.end]!r} in this terminal's encoding ({encoding}); "
            "set PYTHONIOENCODING=utf-8",
            1,
        )
    if isinstance(exc, OSError):
        where = f" while writing {exc.filename}" if exc.filename is not None else ""
        reason = exc.strerror or first_line(str(exc)) or type(exc).__name__
        if exc.errno == errno.ENOSPC:
            return f"disk full{where} ({reason})", 1
        if exc.errno == errno.EDQUOT:
            return f"disk quota exceeded{where} ({reason})", 1
        if exc.errno == errno.EFBIG:  # the file-size limit (ulimit -f) or the filesystem's largest file
            return f"file too large{where} ({reason})", 1
        if exc.filename is not None:
            return f"cannot use {exc.filename}: {reason}", 1
        return f"{reason}", 1
    return (
        f"internal error: {type(exc).__name__}: {first_line(str(exc))} (set RNNKIT_DEBUG=1 to see the traceback)",
        1,
    )


def first_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, clipped to ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def handle_errors(func: F) -> F:
    """Turn every exception into one line on stderr and an exit code: RnnkitError its own (2 usage,
    1 runtime), running out of memory or disk 1, Ctrl-C 130, a bug 1 ("internal error")."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", RnnkitWarning)
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # `rnnkit sample ... | head`: the reader left; stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None
        except KeyboardInterrupt as exc:
            if debug():
                raise
            err_console.print(_escape(interrupted_line(exc)), style="yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if debug():
                raise
            message, code = error_line(exc, func.__name__)
            raise fail(_escape(message), code) from None

    return wrapper  # type: ignore[return-value]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def report_plugin_failures() -> None:
    from rnnkit.registry import default_registry

    for failure in default_registry().failures:
        warn(_escape(str(failure)))
