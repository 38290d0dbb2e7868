"""Streaming, threaded, batched processing of many image files.

    inputs ──generator──> decode+resize (I/O threads) ──> batches ──> engine (main thread)
                                                                        │
    OUT_DIR/<relative path>.png <── postprocess+compose+encode+write (I/O threads)

File names come from a generator, and at most ``2·batch + 2·io_threads`` decoded images are alive
at once (loads queued ahead, the batch at the engine, writes pending), so memory stays bounded on
any folder size (~1 GB peak for 12 MP cutouts on a CPU, half of it ONNX Runtime's own).
Decoding, resizing and encoding run in OpenCV, which releases the GIL, so they overlap with
inference. Every failure is one line naming the file; the rest goes on.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from runtime.api import Remover, apply_composite, apply_cutout, fit_background, resolve_background
from runtime.io import IMAGE_SUFFIXES, EncodeOptions, ImageError, encode_image, read_image, write_atomic
from runtime.preprocess import postprocess, resize_to_input

log = logging.getLogger(__name__)

MODES = ("mask", "cutout", "composite")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Problem:
    """An input argument or file that cannot become a job."""

    name: str
    message: str


# --- turning INPUT arguments into jobs, lazily ---


def _walk(top: Path, exclude: Path) -> Iterator[Path]:
    """Image files under ``top`` (sorted per folder, hidden entries and the output folder skipped)."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and Path(dirpath, d).resolve() != exclude
        )
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath, name)


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern is rooted at: its leading components without wildcards."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def iter_jobs(inputs: Iterable[str], out_dir: Path, suffix: str) -> Iterator[Job | Problem]:
    """Files, folders (recursive, layout kept) and glob patterns -> jobs, one at a time.

    A file given by name becomes ``OUT_DIR/<name>.<suffix>``; files found in a folder or by a
    pattern keep their path relative to that folder (or the pattern's fixed prefix).
    """
    out_resolved = out_dir.resolve()
    seen: dict[Path, Path] = {}  # output -> source: paths only, never images

    def job(source: Path, relative: Path) -> Job | Problem | None:
        target = out_dir / relative.with_suffix(suffix)
        resolved = source.resolve()
        if resolved == target.resolve():
            return Problem(str(source), "output would overwrite the input itself; choose another -o folder")
        previous = seen.get(target)
        if previous is None:
            seen[target] = resolved
            return Job(source, target)
        if previous == resolved:  # the same file reached twice (e.g. a folder and a file in it)
            return None
        return Problem(str(source), f"its output {target} is also the output of {previous}; rename one")

    for arg in inputs:
        path = Path(arg)
        if _GLOB_CHARS & set(arg) and not path.exists():
            base, found = _glob_base(arg), False
            for match in glob.iglob(arg, recursive=True):
                m = Path(match)
                sources = _walk(m, out_resolved) if m.is_dir() else [m] if m.suffix.lower() in IMAGE_SUFFIXES else []
                for source in sources:
                    found = True
                    if (item := job(source, source.relative_to(base))) is not None:
                        yield item
            if not found:
                yield Problem(arg, "no image files match this pattern")
        elif path.is_dir():
            found = False
            for source in _walk(path, out_resolved):
                found = True
                if (item := job(source, source.relative_to(path))) is not None:
                    yield item
            if not found:
                yield Problem(arg, f"no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.exists():
            if (item := job(path, Path(path.name))) is not None:
                yield item
        else:
            yield Problem(arg, "no such file or folder")


# --- the per-image work done on I/O threads ---


@dataclass
class _Loaded:
    job: Job
    image: np.ndarray | None  # full-resolution BGR, kept only when the output needs its colours
    shape: tuple[int, int]
    model_input: np.ndarray  # CHW float32


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    out_dir: Path = field(default_factory=lambda: Path("out"))

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped in {self.seconds:.1f} s "
            f"({self.rate:.2f} images/s); outputs in {self.out_dir}"
        )


class Pipeline:
    """Runs a ``Remover`` over many files; ``run(inputs)`` returns a ``Summary``.

    ``background`` (composite mode): an (r, g, b) colour, a colour string as ``api.parse_color`` takes,
    or a background image file. ``on_error`` receives one line per failed input (default: stderr).
    """

    def __init__(
        self,
        remover: Remover,
        out_dir: str | os.PathLike,
        *,
        mode: str = "cutout",
        background: Sequence[int] | str | os.PathLike = (255, 255, 255),
        encode: EncodeOptions | None = None,
        skip_existing: bool = False,
        io_threads: int = 2,
        progress: bool = True,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, not {io_threads}")
        self.remover = remover
        self.out_dir = Path(out_dir)
        self.mode = mode
        self.encode = encode or EncodeOptions()
        self.skip_existing = skip_existing
        self.io_threads = io_threads
        self.progress = progress
        self.on_error = on_error or _print_error
        self._bg_color: tuple[int, int, int] | None = None
        self._bg_image: np.ndarray | None = None
        if mode == "composite":
            background = resolve_background(background)  # ValueError for the caller when it is neither
            if isinstance(background, tuple):
                r, g, b = background
                self._bg_color = (b, g, r)  # work in OpenCV's BGR order end to end
            else:  # a bad background file is an ImageError for the caller: one line, before any work
                self._bg_image = read_image(background, max_pixels=remover.max_pixels, order="bgr")[0]
        self._fitted_background = lru_cache(maxsize=4)(self._fit_background)

    # I/O-thread work ---------------------------------------------------------------

    def _load(self, job: Job) -> _Loaded:
        size = self.remover.spec.size
        # A mask needs no full-resolution colours: a JPEG can decode at 1/2..1/4 scale, twice faster.
        # Keeping >= 2x the model size there leaves the model input within ~0.4 grey levels on average.
        image, shape = read_image(
            job.source,
            max_pixels=self.remover.max_pixels,
            order="bgr",
            reduce_to=2 * size if self.mode == "mask" else None,
        )
        small = cv2.cvtColor(resize_to_input(image, size), cv2.COLOR_BGR2RGB)
        keep = None if self.mode == "mask" else image
        return _Loaded(job, keep, shape, self.remover.prepare(small))

    def _fit_background(self, shape: tuple[int, int]) -> np.ndarray:
        assert self._bg_image is not None
        return fit_background(self._bg_image, shape)

    def _save(self, loaded: _Loaded, probability: np.ndarray) -> None:
        mask = postprocess(probability, loaded.shape)
        if self.mode == "mask":
            out = mask
        elif self.mode == "cutout":
            out = apply_cutout(loaded.image, mask, clear_hidden=True)
        else:
            background = self._bg_color if self._bg_image is None else self._fitted_background(loaded.shape)
            out = apply_composite(loaded.image, mask, background)
        loaded.image = None  # let the full-resolution copy go before the (slow) encode
        write_atomic(loaded.job.target, encode_image(out, self.encode))

    # main thread ---------------------------------------------------------------------

    def run(self, inputs: Iterable[str]) -> Summary:
        from tqdm import tqdm

        summary = Summary(out_dir=self.out_dir)
        jobs = iter_jobs(inputs, self.out_dir, self.encode.suffix)
        batch_size = self.remover.batch_size
        loads: deque[tuple[Job, Future[_Loaded]]] = deque()
        saves: deque[tuple[Job, Future[None]]] = deque()
        batch: list[_Loaded] = []
        bar = tqdm(unit="img", disable=None if self.progress else True, file=sys.stderr, dynamic_ncols=True)

        def fail(name: str, message: str) -> None:
            summary.failed += 1
            bar.update()
            # ImageError/BackendError messages already start with the file name.
            self.on_error(message if message.startswith(name) else f"{name}: {message}")

        def finish_save(job: Job, future: Future[None]) -> None:
            try:
                future.result()
            except ImageError as exc:
                fail(str(job.source), str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                fail(str(job.source), f"cannot process: {type(exc).__name__}: {exc}")
            else:
                summary.ok += 1
                bar.update()

        def refill() -> None:
            # Keep the loaders one batch plus one image per thread ahead of the engine, never further.
            while len(loads) < batch_size + self.io_threads:
                item = next(jobs, None)
                if item is None:
                    return
                if isinstance(item, Problem):
                    fail(item.name, item.message)
                elif self.skip_existing and item.target.exists():
                    summary.skipped += 1
                    bar.update()
                else:
                    loads.append((item, pool.submit(self._load, item)))

        def run_batch() -> None:
            try:
                probs = self.remover.predict(np.stack([b.model_input for b in batch]))
            except Exception as exc:  # noqa: BLE001 - reported per file, like any other failure
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                for loaded in batch:
                    fail(str(loaded.job.source), f"inference failed: {first}")
            else:
                for loaded, prob in zip(batch, probs, strict=True):
                    saves.append((loaded.job, pool.submit(self._save, loaded, prob)))
            batch.clear()
            while saves and (saves[0][1].done() or len(saves) > self.io_threads):
                finish_save(*saves.popleft())

        start = time.perf_counter()
        pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="u2net-io")
        try:
            refill()
            while loads:
                job, future = loads.popleft()
                refill()
                try:
                    batch.append(future.result())
                except ImageError as exc:
                    fail(str(job.source), str(exc))
                except Exception as exc:  # noqa: BLE001
                    fail(str(job.source), f"cannot read: {type(exc).__name__}: {exc}")
                if batch and (len(batch) >= batch_size or not loads):
                    run_batch()
            while saves:
                finish_save(*saves.popleft())
        finally:
            # On Ctrl-C: drop queued work, let running writes finish (they clean up after themselves).
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        summary.seconds = time.perf_counter() - start
        return summary


def _print_error(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {line}", file=sys.stderr)
