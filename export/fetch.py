"""Download the official U²-Net / U²-NetP weights as ONNX files, checked and stamped with this project's metadata.

    python -m export.fetch u2netp                                     # -> ~/.cache/u2net/u2netp.onnx
    python -m export.fetch u2net -o models                            # -> models/u2net.onnx
    python -m export.fetch u2net --from https://mirror.example/u2net.onnx   # a mirror of the same file
    python -m export.fetch u2net --from ~/Downloads/u2net.onnx        # a copy fetched on another machine

The sources are the ONNX files rembg publishes (``SOURCES``): stable direct URLs with published MD5
checksums. The authors' ``u2net.pth`` / ``u2netp.pth`` live on Google Drive, with neither a stable
direct link nor a published checksum, so they are not fetched; a ``.pth`` you already have becomes a
verified ONNX file with ``python -m export.to_onnx u2net.pth``.

What a download does: the bytes go to ``.NAME.onnx.part`` beside the target; a dropped connection is
retried (``--retries``) with an HTTP Range request from where it stopped, and a partial file left by an
interrupted run is resumed the same way by the next one. The MD5 is checked; a mismatch removes the
partial file and writes nothing. The file is then stamped with this project's metadata (variant,
precision fp32, the official preprocessing at its input size, source file name and SHA-256), so the
runtime reports ``u2netp fp32 320x320`` instead of ``unknown``, and renamed into place atomically.
Stamping appends protobuf ``metadata_props`` entries (``runtime.onnx_props``): no ``onnx`` package,
so this works on the base install. Proxies come from the usual variables (``https_proxy``,
``http_proxy``, ``no_proxy``), which urllib's default opener reads. Nothing else in the project
downloads anything.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from export.errors import ExportError
from runtime import atomic
from runtime.argtypes import positive_float
from runtime.artifact import METADATA_PREFIX, PRODUCER, Artifact, project_version
from runtime.errors import BackendError, first_line
from runtime.logs import setup_logging
from runtime.onnx_props import (
    LENGTH_DELIMITED,
    METADATA_PROPS_FIELD,
    OnnxPropsError,
    encode_props,
    iter_fields,
    message_fields,
    read_onnx_props,
)
from runtime.preprocess import PreprocessSpec
from runtime.signals import interrupted, sigterm_as_interrupt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One official file: where it is, its published MD5, what it is."""

    variant: str
    url: str
    md5: str
    approx_mb: float  # from the parameter count (float32 weights); informational only
    what: str


RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
# The URLs and checksums of rembg 2.0.86's sessions (rembg/sessions/u2net.py, u2netp.py).
SOURCES = {
    "u2net": Source("u2net", f"{RELEASE}/u2net.onnx", "60024c5c889badc19c04ad937298a77b", 176.0,
                    "the authors' U²-Net (trained on DUTS-TR), as ONNX: input 320x320, fused map first"),
    "u2netp": Source("u2netp", f"{RELEASE}/u2netp.onnx", "8e83ca70e441ab06c318d82300c84806", 4.6,
                     "the authors' U²-NetP, the 1.1 M-parameter variant, as ONNX: input 320x320, fused map first"),
}  # fmt: skip

WEIGHTS_DIR_ENV = "U2NET_WEIGHTS_DIR"  # where fetched files go (and where `make demo` looks for them)
CHUNK = 1 << 16
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 30.0
_PART_SUFFIX = ".part"


def weights_dir() -> Path:
    """``$U2NET_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/u2net``, else ``~/.cache/u2net``."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "u2net"


def offline_hint(source: Source) -> str:
    """The one line that says what to do without a network."""
    return (f"offline? download {source.url} on any machine, then run python -m export.fetch {source.variant} "
            "--from PATH, or point --from at a mirror")  # fmt: skip


# -- downloading --------------------------------------------------------------------------------------------


class Unreachable(ExportError):
    """The server could not be reached at all (no route, no DNS, refused, timed out): perhaps offline."""


def _is_remote(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def _as_url(location: str) -> str:
    """A URL stays one; a local path becomes a file:// URL."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
        return location
    return Path(location).expanduser().resolve().as_uri()


def _content_range_start(value: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100."""
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value or "")
    return int(match.group(1)) if match else None


def _receive(opener: urllib.request.OpenerDirector, url: str, partial: Path, timeout: float, progress: bool) -> None:
    """One attempt: append to ``partial`` from its current size (a Range request), or start it over when the
    server sends the whole file. Raises OSError / HTTPException / URLError when the transfer breaks off."""
    offset = partial.stat().st_size if partial.exists() and _is_remote(url) else 0
    headers = {"User-Agent": f"{PRODUCER}/{project_version()}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after what we have: the partial file may be whole already
            exc.close()
            return
        raise
    with response:
        status = response.getcode() or 200  # file:// answers None
        if status == 206 and _content_range_start(response.headers.get("Content-Range")) != offset:
            partial.unlink(missing_ok=True)  # not the bytes asked for: the next attempt starts from zero
            raise http.client.HTTPException(f"the server answered another range ({response.headers.get('Content-Range')})")
        if offset and status != 206:
            log.info("%s: the server sent the whole file; starting over", url)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        with partial.open("ab" if offset else "wb") as fh, tqdm(
            total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=partial.name[1:-5],
            disable=None if progress else True, delay=1.0, leave=False,
        ) as bar:  # fmt: skip
            while block := response.read(CHUNK):
                fh.write(block)
                bar.update(len(block))
    received = partial.stat().st_size
    if expected is not None and received < expected:  # http.client's read(n) ends quietly on a dropped connection
        raise http.client.IncompleteRead(b"", expected - received)


def download(url: str, partial: Path, *, retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT,
             progress: bool = False, opener: urllib.request.OpenerDirector | None = None) -> None:  # fmt: skip
    """Bring ``url`` into ``partial``, resuming what is there; a broken transfer is retried ``retries`` times
    (from where it stopped). ExportError (one line) when it cannot be completed; ``partial`` is kept then."""
    opener = opener or urllib.request.build_opener()  # its ProxyHandler reads the *_proxy variables
    for attempt in range(retries + 1):
        try:
            _receive(opener, url, partial, timeout, progress)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:  # a 404 will not go away by asking again
                raise ExportError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            problem = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:  # before any answer: the server was not reached
            problem = first_line(exc.reason if isinstance(exc.reason, BaseException | str) else exc)
            unreachable = True
        except (OSError, http.client.HTTPException) as exc:
            problem = first_line(exc)
            unreachable = False
        if attempt == retries:
            kept = partial.stat().st_size if partial.exists() else 0
            if kept and _is_remote(url):
                raise ExportError(f"{url}: {problem}; {kept / 1e6:.1f} MB kept in {partial}: run the same command "
                                  "again to resume")  # fmt: skip
            raise (Unreachable if unreachable else ExportError)(f"{url}: {problem}")
        delay = min(0.5 * 2**attempt, 8.0)
        log.warning("%s: %s; trying again in %.1f s (%d of %d)", url, problem, delay, attempt + 1, retries)
        time.sleep(delay)


def digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, in one pass."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


# -- stamping -----------------------------------------------------------------------------------------------

_GRAPH, _OPSET_IMPORT, _GRAPH_INPUT, _GRAPH_OUTPUT = 7, 8, 11, 12


@dataclass(frozen=True)
class OnnxFacts:
    """What the stamp needs from a model file, read without the onnx package."""

    opset: int | None
    outputs: tuple[str, ...]
    input_hw: tuple[int | None, int | None]  # None: a dynamic axis
    channels: int | None


def _shape(value_info: bytes, where: Path) -> list[int | None]:
    """Dims of a ValueInfoProto's tensor type (name 1, type 2 -> tensor_type 1 -> shape 2 -> dim 1)."""

    def sub(data: bytes, number: int) -> list[bytes]:
        return [v for n, v in message_fields(data, where) if n == number and isinstance(v, bytes)]

    dims: list[int | None] = []
    for type_proto in sub(value_info, 2):
        for tensor in sub(type_proto, 1):
            for shape in sub(tensor, 2):
                for dim in sub(shape, 1):
                    value = next((v for n, v in message_fields(dim, where) if n == 1 and isinstance(v, int)), None)
                    dims.append(value)
    return dims


def read_facts(path: Path) -> OnnxFacts:
    """Opset, output names and input shape of an ONNX file; OnnxPropsError when it is not ONNX."""
    opset, outputs, inputs = None, [], []
    with path.open("rb") as fh:
        size = path.stat().st_size
        for field in iter_fields(fh, path, size):
            if field.number == _OPSET_IMPORT and field.wire == LENGTH_DELIMITED:
                fh.seek(field.payload)
                entry = dict(message_fields(fh.read(field.end - field.payload), path))
                if entry.get(1, b"") in (b"", b"ai.onnx") and isinstance(entry.get(2), int):
                    opset = entry[2]
            elif field.number == _GRAPH and field.wire == LENGTH_DELIMITED:
                fh.seek(field.payload)
                for part in iter_fields(fh, path, field.end):  # seeks over the initializers
                    if part.number in (_GRAPH_INPUT, _GRAPH_OUTPUT) and part.wire == LENGTH_DELIMITED:
                        fh.seek(part.payload)
                        data = fh.read(part.end - part.payload)
                        name = next((v for n, v in message_fields(data, path) if n == 1), b"")
                        entry = (name.decode("utf-8", "replace") if isinstance(name, bytes) else "", data)
                        (inputs if part.number == _GRAPH_INPUT else outputs).append(entry)
    if not outputs or not inputs:
        raise OnnxPropsError(f"{path}: not an ONNX model (no graph inputs or outputs)")
    # Old exports list the initializers among the inputs too: the image is the one 4-D input.
    shapes = [dims for _, data in inputs if len(dims := _shape(data, path)) == 4]
    dims = shapes[0] if len(shapes) == 1 else [None, None, None, None]
    return OnnxFacts(opset, tuple(name for name, _ in outputs), (dims[2], dims[3]), dims[1])


def stamp_artifact(facts: OnnxFacts, source: Source, source_name: str, sha256: str) -> Artifact:
    """The metadata an official file gets: the official preprocessing at its input size."""
    height, width = facts.input_hw
    fixed = height is not None and height == width
    return Artifact(variant=source.variant, precision="fp32", spec=PreprocessSpec(size=height if fixed else 320),
                    opset=facts.opset, outputs=facts.outputs, dynamic_hw=height is None or width is None,
                    source=source_name, source_sha256=sha256, version=project_version())  # fmt: skip


def write_stamped(src: Path, dst: Path, props: dict[str, str]) -> None:
    """Copy ``src`` to ``dst`` atomically, dropping any ``u2net.*`` metadata it had and appending ``props``."""
    with src.open("rb") as fh, atomic.atomic_path(dst) as tmp, tmp.open("wb") as out:
        for field in iter_fields(fh, src, src.stat().st_size):
            if field.number == METADATA_PROPS_FIELD and field.wire == LENGTH_DELIMITED:
                fh.seek(field.payload)
                key = next((v for n, v in message_fields(fh.read(field.end - field.payload), src) if n == 1), b"")
                if isinstance(key, bytes) and key.decode("utf-8", "replace").startswith(METADATA_PREFIX):
                    continue
            fh.seek(field.start)
            remaining = field.end - field.start
            while remaining:
                block = fh.read(min(remaining, 1 << 20))
                out.write(block)
                remaining -= len(block)
        out.write(encode_props(props))


# -- the command ----------------------------------------------------------------------------------------------


def fetch(variant: str, out_dir: Path | None = None, *, url: str | None = None, md5: str | None = None,
          force: bool = False, retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT,
          progress: bool = False) -> tuple[Path, Artifact, bool]:  # fmt: skip
    """Download ``variant`` into ``out_dir`` (default ``weights_dir()``) as ``VARIANT.onnx``, checked and stamped.

    Returns (path, artifact, downloaded): ``downloaded`` is False when a stamped file was already there.
    ``url``: a mirror, a file:// URL or a local path instead of the official URL; ``md5``: the checksum to
    expect instead of the official one. Raises ExportError (one line); nothing is left at the target then.
    """
    source = SOURCES[variant]
    out_dir = Path(out_dir) if out_dir is not None else weights_dir()
    target = out_dir / f"{variant}.onnx"
    location = _as_url(url) if url else source.url
    if target.exists() and not force:
        existing = _stamped(target)
        if existing is not None and existing.variant == variant:
            return target, existing, False
        if location != target.resolve().as_uri():  # stamping a copy put there by hand is fine
            raise ExportError(f"{target}: exists and is not a {variant} file stamped by export.fetch; "
                              "move it away or pass --force")  # fmt: skip
    try:
        atomic.check_writable(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot write here: {exc.strerror or exc}") from None
    partial = out_dir / f".{variant}.onnx{_PART_SUFFIX}"
    if not _is_remote(location):
        partial.unlink(missing_ok=True)  # a local copy is not resumed or retried: it is read again whole
        retries = 0
    log.info("fetching %s -> %s", location, target)
    try:
        download(location, partial, retries=retries, timeout=timeout, progress=progress)
    except Unreachable as exc:
        raise ExportError(f"{exc}; {offline_hint(source)}" if _is_remote(location) else str(exc)) from None
    got_md5, sha256 = digests(partial)
    expected = (md5 or source.md5).lower()
    if got_md5 != expected:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{location}: MD5 {got_md5}, expected {expected}: not the {variant} file (removed; "
                          "nothing was written)")  # fmt: skip
    try:
        facts = read_facts(partial)
    except OnnxPropsError as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{location}: {str(exc).split(': ', 1)[-1]}; nothing was written") from None
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(location).path)).name or f"{variant}.onnx"
    artifact = stamp_artifact(facts, source, name, sha256)
    try:
        write_stamped(partial, target, artifact.to_onnx_props())
    except OSError as exc:
        raise ExportError(f"{target}: cannot write: {exc.strerror or exc}") from None
    partial.unlink(missing_ok=True)
    return target, artifact, True


def _stamped(path: Path) -> Artifact | None:
    """The artifact of an ONNX file stamped by this project (it records its source), else None."""
    try:
        artifact = Artifact.from_onnx_props(read_onnx_props(path), path)
    except (OSError, ValueError, BackendError):  # not ONNX, or metadata that is not ours
        return None
    return artifact if artifact.source_sha256 else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.fetch", description=__doc__.split("\n\n")[0],
        epilog="Sources: " + "; ".join(f"{s.variant}: {s.url} (md5 {s.md5})" for s in SOURCES.values())
        + ". The authors' .pth files (Google Drive, no stable link or checksum) are not fetched: convert one you "
        "have with python -m export.to_onnx u2net.pth.",
    )  # fmt: skip
    p.add_argument("model", choices=tuple(SOURCES), help="which official model")
    p.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help=f"folder for MODEL.onnx (default: ${WEIGHTS_DIR_ENV}, else ~/.cache/u2net)")
    p.add_argument("--from", dest="url", metavar="URL",
                   help="a mirror of the file, a file:// URL or a local path, instead of the official URL")
    p.add_argument("--md5", metavar="HEX", help="the checksum to expect (default: the official file's)")
    p.add_argument("--force", action="store_true", help="download again even if MODEL.onnx is there")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help="retries of a broken transfer, each resuming where it stopped (default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds without data before a transfer counts as broken (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    if args.md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", args.md5):
        print(f"error: --md5 {args.md5!r} is not 32 hex digits", file=sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            path, artifact, downloaded = fetch(args.model, args.output, url=args.url, md5=args.md5, force=args.force,
                                               retries=max(args.retries, 0), timeout=args.timeout,
                                               progress=not (args.no_progress or args.quiet))  # fmt: skip
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # the partial download stays: the same command resumes it
        return interrupted(exc, "run the same command again to resume the download")
    if not args.quiet:
        what = "wrote" if downloaded else "already there:"
        print(f"{what} {path} ({path.stat().st_size / 1e6:.1f} MB): {artifact.summary()}, "
              f"from {artifact.source} (sha256 {artifact.source_sha256[:12]}…)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
