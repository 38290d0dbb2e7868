"""The runtime's exception types, in one module that everything else can import without cycles."""

from __future__ import annotations


class BackendError(Exception):
    """An engine that cannot be loaded or run; the message is one line naming the file."""


class BatchError(BackendError, ValueError):
    """A batch the engine cannot take (wrong type, dtype, shape or size): the caller's mistake."""


class BackendClosed(BackendError, RuntimeError):
    """``run`` on a backend after ``close``."""
