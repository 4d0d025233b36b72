"""Signals around work that must finish whole: a save in progress is never cut by Ctrl-C or SIGTERM.

``deferred_signals()`` records SIGINT and SIGTERM while its block runs and delivers them, in order,
to the handlers that were in place once the block is done. A checkpoint written inside it is either
published complete or not at all, whatever the user presses, and the interrupt still takes effect
right after. Outside the main thread (where Python cannot install handlers) it does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals(signals: tuple[int, ...] = DEFERRED) -> Iterator[None]:
    """Hold ``signals`` until the block ends, then deliver each one received to the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def record(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, record)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in caught:
            signal.raise_signal(signum)
