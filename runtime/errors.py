"""The runtime's exception types, in one module that everything else can import without cycles."""

from __future__ import annotations


class BackendError(Exception):
    """An engine that cannot be loaded or run; the message is one line naming the file."""


class BatchError(BackendError, ValueError):
    """A batch the engine cannot take (wrong type, dtype, shape or size): the caller's mistake."""


class BackendClosed(BackendError, RuntimeError):
    """``run`` on a backend after ``close``."""


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first non-blank line of an exception's (or a library's error text's) message, at most ``limit``
    characters, and the exception's type name when it has none: what a one-line error report quotes from a
    library's pages-long message."""
    if isinstance(exc, str):
        message, fallback = exc, "unknown error"
    else:
        message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)  # tritonclient's errors
        fallback = type(exc).__name__
    for line in str(message or "").splitlines():
        if line.strip():
            return line.strip()[:limit]
    return fallback
