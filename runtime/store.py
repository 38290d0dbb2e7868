"""Object-store URLs (``s3://``, ``gs://``, ``az://``, ``memory://`` ...) through fsspec: the few operations a run needs.

- **Reading** (``open_input``): a file whose reads are ranged requests of ``HEADER_BLOCK`` bytes, so
  ``runtime.io.read_image`` checks the pixel count in the header before the body is fetched: one ranged GET
  for the header, one GET for the body (a file smaller than a block is a single request).
- **Writing** (``publish``): the whole encoded file is made in memory, then sent as one put of the final key.
  Object stores have no rename; a single PUT is atomic on S3, GCS and Azure (a reader sees the old object
  or the new one, never a part), and a writer killed before it leaves nothing. A retried task puts the same
  bytes under the same key: no partial and no duplicate.
- **Skipping** (``state``): complete, partial or missing, from the object's size and its first 16 and last 12
  bytes: the check ``--skip-existing`` makes on local files (``runtime.render.FORMATS``).
- **Listing** (``walk``, ``glob``) for the planner (``runtime.store_inputs``).

``file://`` URLs are local paths (``location``) and keep every local guarantee (``runtime.inputs``,
``runtime.atomic``). Credentials and endpoints come from each store's own configuration (environment, config
files, fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` variables), read by each process, so Dask workers set
themselves up exactly as the client does. fsspec and the protocol packages are optional extras, imported here only.
"""

from __future__ import annotations

import os
import posixpath
import secrets
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from runtime.errors import first_line
from runtime.names import is_url, url_scheme
from runtime.render import FORMATS

HEADER_BLOCK = 1 << 16  # the first ranged read: every header the reader parses fits, except giant EXIF blocks
# The extra that installs each protocol's fsspec package (pyproject.toml), for the line that says what is missing.
PROTOCOL_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                   "abfss": "azure", "adl": "azure"}  # fmt: skip


class StoreError(Exception):
    """A URL that cannot be used (unknown protocol, its package missing, unreachable store): one line."""


def is_store_url(text: object) -> bool:
    """Whether an input or output argument names a store (``scheme://...``) rather than a local path."""
    return isinstance(text, str) and is_url(text)


def local_path(url: str) -> Path | None:
    """The local path a ``file://`` URL names (``file:///data/x.jpg``, ``file://localhost/...``), else None."""
    if url_scheme(url) != "file":
        return None
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StoreError(f"{url}: a file:// URL names this machine's files (file:///path), not host {parts.netloc!r}")
    return Path(unquote(parts.path))


def location(text: str | os.PathLike) -> Path | str:
    """An input or ``-o`` argument as the run uses it: a local ``Path`` (``file://`` URLs included) or a store
    URL without a trailing slash (``s3://bucket/out/`` and ``s3://bucket/out`` are the same place)."""
    if not is_store_url(text):
        return Path(text)
    assert isinstance(text, str)
    path = local_path(text)
    if path is not None:
        return path
    scheme, rest = text.split("://", 1)
    return f"{scheme}://{rest.rstrip('/') or rest}"


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a store URL; fsspec keeps one instance per store and options."""
    scheme = url_scheme(url)
    extra = PROTOCOL_EXTRAS.get(scheme)
    install = f"pip install 'u2net-toolkit[{extra}]'" if extra else "pip install fsspec and the protocol's package"
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise StoreError(f"{url}: URLs are read through fsspec, which is not installed ({install})") from None
    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise StoreError(f"{url}: {scheme}:// needs a package that is not installed ({install}): "
                         f"{first_line(exc)}") from None  # fmt: skip
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise StoreError(f"{url}: {first_line(exc)}") from None


def canonical(url: str) -> str:
    """A store URL as its store spells it (``memory://x`` -> ``memory:///x``, no trailing slash), so one
    object always has one name in jobs, listings and messages."""
    fs, path = filesystem(url)
    return url_of(fs, path.rstrip("/") or path)


def url_of(fs: Any, path: str) -> str:
    """The URL of ``path`` on ``fs``, in the form every job and message of a run uses."""
    return fs.unstrip_protocol(path)


def join(base: str, relative: str | PurePosixPath) -> str:
    """``s3://b/out`` + ``a/x.png`` -> ``s3://b/out/a/x.png``."""
    return f"{base.rstrip('/')}/{PurePosixPath(relative).as_posix()}"


def open_input(url: str) -> BinaryIO:
    """A store object opened for reading in ranged blocks (``runtime.io`` reads the header, checks it, then the
    body). A ``file://`` URL is opened as a local file, regular files only (``runtime.io.open_regular``).
    Missing objects raise ``FileNotFoundError``, like local files; an unusable URL raises ``StoreError``."""
    path = local_path(url)
    if path is not None:
        from runtime.io import open_regular

        return open_regular(path)
    fs, key = filesystem(url)
    return fs.open(key, "rb", block_size=HEADER_BLOCK, cache_type="readahead")


def publish(url: str, data: bytes | bytearray | memoryview) -> None:
    """Put ``data`` as the object ``url`` in one request: readers never see a part, and a retry writes the same
    bytes again. Raises what the store raises (the pipeline turns it into one line naming the URL)."""
    fs, key = filesystem(url)
    fs.pipe_file(key, bytes(data))


def state(url: str, format: str) -> str:  # noqa: A002 - the table's word, as in runtime.render.is_complete
    """'missing', 'complete' (a whole file of ``format``, by its header, trailer and size) or 'partial'."""
    fs, key = filesystem(url)
    fs.invalidate_cache(posixpath.dirname(key))  # a listing cached earlier in this process may predate the object
    try:
        size = fs.size(key)
    except FileNotFoundError:
        return "missing"
    if not size or size <= 16:
        return "partial"
    head = fs.cat_file(key, start=0, end=16)
    tail = fs.cat_file(key, start=size - 12, end=size)
    return "complete" if FORMATS[format].complete(head, tail, size) else "partial"


def check_writable(url: str) -> None:
    """Prove, before the engine loads, that objects can be put under ``url``: one small probe object is put
    and removed. Raises ``StoreError`` with the store's reason."""
    fs, key = filesystem(url)
    probe = f"{key.rstrip('/')}/.u2probe-{secrets.token_hex(6)}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 - any store's refusal is the same one line
        raise StoreError(f"cannot write there: {type(exc).__name__}: {first_line(exc)}") from None


def kind(url: str) -> str:
    """'file', 'directory' (a folder or key prefix) or 'missing'."""
    fs, key = filesystem(url)
    try:
        info = fs.info(key)
    except FileNotFoundError:
        return "missing"
    return "directory" if info.get("type") == "directory" else "file"


def walk(url: str) -> list[str]:
    """Every object below ``url`` (a folder or key prefix), as URLs, sorted."""
    fs, key = filesystem(url)
    return sorted(url_of(fs, path) for path in fs.find(key, withdirs=False))


def glob(pattern: str) -> list[tuple[str, bool]]:
    """(URL, is a folder) of everything matching ``pattern`` (``**`` = any depth), sorted."""
    fs, key = filesystem(pattern)
    matches = fs.glob(key, detail=True)
    return sorted((url_of(fs, path), info.get("type") == "directory") for path, info in matches.items())


__all__ = [
    "HEADER_BLOCK", "PROTOCOL_EXTRAS", "StoreError", "canonical", "check_writable", "filesystem", "glob", "is_store_url", "join",
    "kind", "local_path", "location", "open_input", "publish", "state", "url_of", "walk",
]  # fmt: skip
