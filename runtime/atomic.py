"""Atomic file writes, defined once for the whole project.

Every file the project writes (masks, cutouts, ONNX files, engines, checkpoints, JSON reports) is
written under a short temporary name in the destination folder and renamed into place, so a reader
never sees half a file and a failure never leaves one behind.

Temporary names are ``.u2tmp-<pid>-<hex>.tmp`` (or the final suffix): short and independent of the final name (a
250-byte file name stays valid), and they carry the writer's process id, so the next run into the
same folder can tell the leftovers of a killed run (SIGKILL, power loss) from a live writer's files
and remove them (``remove_stale``).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".u2tmp-"
_TEMP_NAME = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-[0-9a-f]{{12}}(\.[A-Za-z0-9]{{1,8}})?$")
_live: set[Path] = set()  # temporaries this process has open, for remove_live() on a signal
_live_lock = threading.Lock()


def temp_name(suffix: str = ".tmp") -> str:
    """A fresh temporary file name; ``suffix`` (e.g. '.png') is kept for tools that choose a format by it."""
    # Always some suffix: torch.save refuses a dot-file name with no other dot.
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix):
        suffix = ".tmp"
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{suffix}"


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on any error removed.

    The caller writes the temporary file however it likes (``torch.save``, ``onnx.save``, ``savefig``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.suffix if keep_suffix else ".tmp"))
    with _live_lock:
        _live.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _discard(tmp)


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically. Raises ``OSError`` (callers turn it into their own one line)."""
    with atomic_path(path) as tmp:
        # O_EXCL on a fresh name; mode 0666 so the user's umask applies as for any other file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_dir(parent: str | os.PathLike) -> Iterator[Path]:
    """A private folder inside ``parent`` for files that are built and checked before being moved
    into place (``os.replace`` each one out of it); whatever is left in it is removed on exit."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / temp_name(".dir")
    stage.mkdir()
    with _live_lock:
        _live.add(stage)
    try:
        yield stage
    finally:
        _discard(stage)


def publish(moves: Sequence[tuple[Path, Path]]) -> None:
    """Rename staged files or folders into place, in order, all or none: when one rename fails, those
    already made are removed again and the OSError is raised. The one publish step of every export:
    put last what marks a result complete (an engine after its side file, a model's config after its
    version folder), so a reader never finds it without the rest."""
    done: list[Path] = []
    try:
        for source, target in moves:
            os.replace(source, target)
            done.append(Path(target))
    except OSError:
        for path in reversed(done):
            _discard(path)
        raise


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove temporaries in ``folder`` left by processes that no longer run; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # not ours to force: a permission problem here must not stop the run
        removed.append(path)
    return removed


def remove_live() -> None:
    """Remove this process's temporaries still open (called on SIGTERM/SIGINT before exiting)."""
    with _live_lock:
        paths = list(_live)
    for path in paths:
        _discard(path)


def _discard(path: Path) -> None:
    with _live_lock:
        _live.discard(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # unknown: keep the file rather than delete a live writer's work
    return True


def check_writable(folder: str | os.PathLike) -> None:
    """Prove that files can be written into ``folder`` before any real work; creates nothing.

    An existing folder gets a probe file (created and removed; stale temporaries of killed runs
    there are removed on the way); a missing one needs its nearest existing parent to be a
    writable folder, where it will be created on the first write. Raises ``OSError``
    (``NotADirectoryError`` when the path, or a parent, is a file).
    """
    folder = Path(folder)
    if folder.is_dir():
        remove_stale(folder)
        probe = folder / temp_name()
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
        return
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot create folders in {existing}", str(folder))
