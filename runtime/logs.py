"""The one log format of every command-line tool: plain INFO lines, ``warning:``/``error:`` prefixes.

Parseable results go to stdout; log lines go to stderr, where a user reads them next to the
CLIs' own ``error: FILE: problem`` lines, so they share that shape.
"""

from __future__ import annotations

import logging
import sys


class CliFormatter(logging.Formatter):
    """``message`` for INFO, ``warning: message`` (``error:``, ``critical:``) above it, and
    ``debug name: message`` below it (debug lines come from many modules)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO:
            return text
        if record.levelno < logging.INFO:
            return f"debug {record.name}: {text}"
        return f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: bool = False, quiet: bool = False, default: int = logging.INFO) -> None:
    """Configure the root logger once for a CLI: ``verbose`` = DEBUG, ``quiet`` = warnings only,
    otherwise ``default`` (the export tools keep their step lines for ``-v``: WARNING)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else default
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CliFormatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler])  # like basicConfig: a no-op once configured
