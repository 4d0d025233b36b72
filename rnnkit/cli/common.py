"""What every command shares: one-line errors with the right exit code, stderr console, overrides."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from rnnkit.errors import RnnkitError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def debug() -> bool:
    return os.environ.get("RNNKIT_DEBUG", "") not in ("", "0")


def handle_errors(func: F) -> F:
    """Turn RnnkitError into one line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # `rnnkit sample ... | head`: the reader left; stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None
        except RnnkitError as exc:
            if debug():
                raise
            raise fail(_escape(str(exc)), exc.exit_code) from None
        except KeyboardInterrupt as exc:
            if debug():
                raise
            detail = str(exc) or "interrupted"
            err_console.print(f"[yellow]interrupted:[/] {_escape(detail)}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # a bug: still one line, with the way to see more
            if debug():
                raise
            raise fail(
                f"internal error: {type(exc).__name__}: {_escape(str(exc))} (set RNNKIT_DEBUG=1 to see the traceback)",
                1,
            ) from None

    return wrapper  # type: ignore[return-value]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def report_plugin_failures() -> None:
    from rnnkit.registry import default_registry

    for failure in default_registry().failures:
        warn(_escape(str(failure)))
