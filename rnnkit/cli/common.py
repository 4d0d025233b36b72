"""What every command shares: one-line errors with the right exit code, stderr console, overrides."""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from rnnkit.config import one_line
from rnnkit.errors import RnnkitError, RnnkitWarning

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

EXIT_INTERRUPTED = 130


def set_option(help_text: str) -> Any:
    """The repeatable ``-s/--set key=value`` option (one definition for every command that takes it)."""
    return typer.Option(None, "--set", "-s", help=help_text, show_default=False)


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
            detail = str(exc) or "interrupted"
            err_console.print(f"[yellow]interrupted:[/] {_escape(one_line(detail))}")
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
