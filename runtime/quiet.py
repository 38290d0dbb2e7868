"""Keep the decoders' own lines off stderr, so each problem is the project's one line.

libpng and libjpeg print straight to file descriptor 2 (``libpng error: IDAT: CRC error``,
``Corrupt JPEG data: 12 extraneous bytes``), beside the line that names the file. OpenCV's own
logging is switched off in ``runtime.io``; these C libraries have no switch, so while a command
runs, descriptor 2 goes through a pipe and lines that are recognisably theirs are dropped.
Everything else (Python's own stderr, tracebacks, the progress bar) passes through unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LIBRARY_LINE = re.compile(
    rb"^(libpng (error|warning)|Corrupt JPEG data|Premature end of JPEG file|Invalid JPEG file structure|"
    rb"Unsupported JPEG|Bogus (marker|Huffman|DQT|DHT)|Not a JPEG file|JPEG datastream contains no image|"
    rb"Huffman table 0x|Quantization table 0x|Inconsistent progression|Invalid SOS parameters|"
    rb"Warning: unknown JFIF|\[ ?(WARN|ERROR|INFO|DEBUG):\d)"
)


def is_library_line(line: bytes) -> bool:
    return _LIBRARY_LINE.match(line.lstrip(b"\r")) is not None


def _pump(read_fd: int, write_fd: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_library_line(line))
        if pending.startswith(b"\r"):  # a progress bar redraw: show it now, it never ends in a newline
            kept, pending = kept + pending, b""
        if kept:
            try:
                os.write(write_fd, kept)
            except OSError:
                pass  # stderr gone: keep draining so writers never block
    if pending and not is_library_line(pending):
        try:
            os.write(write_fd, pending)
        except OSError:
            pass
    os.close(read_fd)


@contextmanager
def library_lines_filtered() -> Iterator[None]:
    """Within the block, decoder lines written to descriptor 2 are dropped (POSIX; elsewhere a no-op)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved), name="u2net-stderr", daemon=True)
    pump.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to the end and stops
        pump.join(timeout=5)
        os.close(saved)
