"""SIGTERM takes Ctrl-C's path: what ``kill``, systemd, Kubernetes and CI send ends a run as cleanly.

``sigterm_as_interrupt()`` makes SIGTERM raise ``Terminated``, a ``KeyboardInterrupt``, in the
main thread, so every ``except KeyboardInterrupt`` / ``finally`` cleanup runs for both signals.
``interrupted(exc)`` then prints the one message, removes this process's temporary files and
returns the conventional exit status: 130 for SIGINT, 143 for SIGTERM (128 + signal number).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from runtime import atomic


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises ``Terminated`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(exc: BaseException) -> int:
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 128 + signal.SIGINT


def interrupted(exc: BaseException, what: str = "") -> int:
    """One line on stderr, temporary files removed; returns the exit status (143 or 130)."""
    atomic.remove_live()
    cause = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C (SIGINT)"
    print(f"interrupted by {cause}{'; ' + what if what else ''}", file=sys.stderr)
    return exit_status(exc)
