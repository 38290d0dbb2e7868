"""The server launchers of ``benchmarks.serve_process`` for tests: ``serve_python`` skips with a visible reason
without the serve venv; ``start_images`` (the image endpoint alone) needs only the main venv."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.serve_process import (
    REPO,
    HttpServer,
    Server,
    command_lines,
    free_ports,
    http_status,
    leftovers,
    missing_serve_venv,
    start_images,
    start_server,
)
from benchmarks.serve_process import serve_python as _serve_python

__all__ = ["REPO", "HttpServer", "Server", "command_lines", "free_ports", "http_status", "leftovers", "serve_python", "start_images",
           "start_server"]  # fmt: skip


def serve_python() -> Path:
    """The serve venv's interpreter, or skip the test saying how to get one."""
    reason = missing_serve_venv()
    if reason:
        pytest.skip(reason)
    return _serve_python()
