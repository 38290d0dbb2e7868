"""The one error type of the export tools."""

from __future__ import annotations


class ExportError(Exception):
    """An export that cannot be done or did not verify; the message is one line naming the file."""
