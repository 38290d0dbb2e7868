"""Streaming, threaded, batched processing of many image files.

    inputs ──plan_jobs──> decode+preprocess (I/O threads) ──> batches ──> engine (main thread)
                                                                            │
    OUT_DIR/<relative path>.png <── postprocess+compose+encode+write (I/O threads)

Which files become which outputs is decided first, on resolved paths (``runtime.inputs``: no
input is ever replaced, nothing is written outside ``-o``, each file is done once). Images are
loaded by ``Remover.load_prepared``, the path the API uses, so a file's mask is the same from the
CLI and from Python. At most ``2·batch + 2·io_threads`` decoded images are alive at once (loads
queued ahead, the batch at the engine, writes pending), so memory stays bounded on any folder
size. Decoding, resizing and encoding run in OpenCV, which releases the GIL, so they overlap with
inference. Every failure is one line naming the file; the rest goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import atomic, store
from runtime.api import Prepared, Remover
from runtime.errors import first_line
from runtime.inputs import Job, Problem, plan_jobs
from runtime.io import ImageError, write_atomic
from runtime.render import MODES, RenderOptions, is_complete
from runtime.shard import Shard
from runtime.store_inputs import plan as plan_any
from runtime.video import VideoOptions, is_video, output_suffix

log = logging.getLogger(__name__)

IO_THREADS = 2  # decode/encode threads beside the engine's (the CLI's --io-threads default)


def images_alive(batch_size: int, io_threads: int = IO_THREADS) -> int:
    """The most decoded images a run holds at once: loads queued ahead, the batch at the engine, writes pending."""
    return 2 * batch_size + 2 * io_threads

__all__ = ["IO_THREADS", "MODES", "Job", "Pipeline", "Problem", "Summary", "images_alive", "output_suffix_of",
           "plan_jobs"]


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    out_dir: Path | str = field(default_factory=lambda: Path("out"))  # a str: a store URL

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

    ``options``: what each output is (mode, background, format; ``runtime.render.RenderOptions``).
    ``skip_existing`` skips inputs whose output is already a complete file of the format (a 0-byte,
    cut or foreign file there is made again, with one line saying so). ``on_error`` receives one
    line per failed input (default: stderr). Video files (and animated GIFs) among the inputs are cut one
    after another after the images, each by ``runtime.video`` with ``video`` (frames, format, smoothing).
    Inputs and ``out_dir`` may be store URLs (``s3://...``; ``runtime.store``): read with the header checked
    before the body, written with one put per file. ``process(plan)`` runs jobs planned elsewhere (a Dask
    worker's share of a run, ``runtime.bulk``).
    """

    def __init__(
        self,
        remover: Remover,
        out_dir: str | os.PathLike,
        *,
        options: RenderOptions | None = None,
        skip_existing: bool = False,
        io_threads: int = IO_THREADS,
        progress: bool = True,
        on_error: Callable[[str], None] | None = None,
        shard: Shard | None = None,
        video: VideoOptions | None = None,
    ) -> None:
        if io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, not {io_threads}")
        self.remover = remover
        self.out_dir = store.location(out_dir)  # a Path, or a store URL
        self.options = options or RenderOptions()
        self.skip_existing = skip_existing
        self.io_threads = io_threads
        self.progress = progress
        self.on_error = on_error or _print_error
        self.shard = shard  # only this shard's inputs (runtime.shard); None: all of them
        self.video = video or VideoOptions()
        self._kinds: dict[Path | str, bool] = {}  # planned sources: whether each is a video
        self._cleaned: set[Path] = set()
        self._cleaned_lock = threading.Lock()

    # I/O-thread work ---------------------------------------------------------------

    def _load(self, job: Job) -> Prepared:
        return self.remover.load_for(job.source, self.options)

    def _save(self, job: Job, loaded: Prepared, probability: np.ndarray) -> None:
        data = self.remover.output(loaded, probability, self.options)
        if isinstance(job.target, str):  # a store: the whole file in one put, no temporary object
            try:
                store.publish(job.target, data)
            except Exception as exc:  # noqa: BLE001 - any store's refusal is one line naming the object
                raise ImageError(f"{job.target}: cannot write: {type(exc).__name__}: {first_line(exc)}") from None
            return
        self._clean_folder(job.target.parent)
        write_atomic(job.target, data)

    def _clean_folder(self, folder: Path) -> None:
        """Remove what killed runs left in an output folder, the first time this run writes there."""
        with self._cleaned_lock:
            if folder in self._cleaned:
                return
            self._cleaned.add(folder)
        atomic.remove_stale(folder)

    # main thread ---------------------------------------------------------------------

    def run(self, inputs: Iterable[str]) -> Summary:
        """Process every input; one line per failure to ``on_error``; returns the counts."""
        plan = plan_any(inputs, self.out_dir, self._suffix)
        if self.shard is not None:
            plan = list(self.shard.select(plan, self.out_dir))
        return self.process(plan)

    def process(self, plan: Sequence[Job | Problem]) -> Summary:
        """Run planned jobs (images first, then videos) and report the problems; returns the counts."""
        from tqdm import tqdm

        videos = [item for item in plan if isinstance(item, Job) and self._is_video(item.source)]
        bar = tqdm(total=len(plan), unit="img", disable=None if self.progress else True, file=sys.stderr,
                   dynamic_ncols=True)
        run = _Run(self, Summary(out_dir=self.out_dir), bar)
        start = time.perf_counter()
        try:
            run.process([item for item in plan if not (isinstance(item, Job) and self._is_video(item.source))])
            for job in videos:
                run.video(job)
        finally:
            run.stop()
            bar.close()
        run.summary.seconds = time.perf_counter() - start
        return run.summary

    def _suffix(self, source: Path | str) -> str:
        """The output suffix of a planned source: the render format's, or for a video its container's."""
        self._kinds[source] = is_video(str(source))
        return output_suffix_of(source, self.options, self.video, clip=self._kinds[source])

    def _is_video(self, source: Path | str) -> bool:
        """Known from planning here; for jobs planned elsewhere, by name (and a GIF's frame count)."""
        known = self._kinds.get(source)
        return known if known is not None else isinstance(source, Path) and is_video(str(source))


def output_suffix_of(source: Path | str, options: RenderOptions, video: VideoOptions, *,
                     clip: bool | None = None) -> str:  # fmt: skip
    """The output suffix a planned source gets: the render format's, or for a video (``clip``: known to be
    one or not; None: look) its container's. ``Pipeline`` and the Dask client plan with it."""
    if clip is None:
        clip = is_video(str(source))
    return output_suffix(source, options.mode, video) if clip else options.suffix


class _Run:
    """The state of one ``Pipeline.run``: work in flight, counts, and the steps that move work along."""

    def __init__(self, pipeline: Pipeline, summary: Summary, bar) -> None:
        self.pipeline = pipeline
        self.summary = summary
        self.bar = bar
        self.batch_size = pipeline.remover.batch_size
        self.pool = ThreadPoolExecutor(pipeline.io_threads, thread_name_prefix="u2net-io")
        self.loads: deque[tuple[Job, Future[Prepared]]] = deque()
        self.batch: list[tuple[Job, Prepared]] = []
        self.saves: deque[tuple[Job, Future[None]]] = deque()

    def process(self, plan: Sequence[Job | Problem]) -> None:
        items = iter(plan)
        self.refill(items)
        while self.loads:
            job, future = self.loads.popleft()
            self.refill(items)
            ok, loaded = self.outcome(job, future, "cannot read")
            if ok:
                self.batch.append((job, loaded))
            if self.batch and (len(self.batch) >= self.batch_size or not self.loads):
                self.run_batch()
        while self.saves:
            self.finish_save()

    def refill(self, items: Iterable[Job | Problem]) -> None:
        """Keep the loaders one batch plus one image per thread ahead of the engine, never further."""
        while len(self.loads) < self.batch_size + self.pipeline.io_threads:
            item = next(items, None)  # type: ignore[call-overload]
            if item is None:
                return
            if isinstance(item, Problem):
                self.fail(item.name, item.message)
            elif self.pipeline.skip_existing and self.already_done(item):
                self.summary.skipped += 1
                self.bar.update()
            else:
                self.loads.append((item, self.pool.submit(self.pipeline._load, item)))

    def video(self, job: Job) -> None:
        """One clip, whole, through ``runtime.video`` (which threads it itself); one line when it fails, and
        when it stopped early at damage (the frames before it are written, and the clip counts as failed)."""
        from runtime.video.process import process_video
        from runtime.video.sink import is_complete as video_complete
        from runtime.video.source import VideoError

        if self.pipeline.skip_existing and os.path.lexists(job.target):
            if video_complete(job.target):
                self.summary.skipped += 1
                self.bar.update()
                return
            log.warning("%s: the existing output is not a complete video; making it again", job.target)
        self.pipeline._clean_folder(job.target.parent)
        name = job.source.name
        try:
            result = process_video(self.pipeline.remover, job.source, job.target, self.pipeline.options,
                                   self.pipeline.video, io_threads=self.pipeline.io_threads,
                                   progress=lambda n: self.bar.set_postfix_str(f"{name}: frame {n}"))  # fmt: skip
        except VideoError as exc:
            self.fail(str(job.source), str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the others
            self.fail(str(job.source), f"cannot process: {type(exc).__name__}: {first_line(exc)}")
        else:
            if result.stopped:
                self.fail(str(job.source), f"{result.stopped}; its first {result.frames} frames are in {job.target}")
            else:
                self.summary.ok += 1
                self.bar.update()

    def already_done(self, job: Job) -> bool:
        """A complete output of the run's format is there; a broken one is said and made again."""
        if isinstance(job.target, str):  # a store object: its size, first and last bytes
            try:
                state = store.state(job.target, self.pipeline.options.format)
            except Exception:  # noqa: BLE001 - cannot tell: make it again (a write error would then say why)
                state = "missing"
            if state != "partial":
                return state == "complete"
        elif not os.path.lexists(job.target):
            return False
        elif is_complete(job.target, self.pipeline.options.format):
            return True
        log.warning("%s: the existing output is not a complete %s file; making it again",
                    job.target, self.pipeline.options.format.upper())  # fmt: skip
        return False

    def run_batch(self) -> None:
        try:
            probs = self.pipeline.remover.predict(np.stack([loaded.model_input for _, loaded in self.batch]))
        except Exception as exc:  # noqa: BLE001 - reported per file, like any other failure
            for job, _ in self.batch:
                self.fail(str(job.source), f"inference failed: {first_line(exc)}")
        else:
            for (job, loaded), prob in zip(self.batch, probs, strict=True):
                self.saves.append((job, self.pool.submit(self.pipeline._save, job, loaded, prob)))
        self.batch.clear()
        while self.saves and (self.saves[0][1].done() or len(self.saves) > self.pipeline.io_threads):
            self.finish_save()

    def finish_save(self) -> None:
        job, future = self.saves.popleft()
        if self.outcome(job, future, "cannot process")[0]:
            self.summary.ok += 1
            self.bar.update()

    def outcome(self, job: Job, future: Future, what: str) -> tuple[bool, object]:
        """(True, the future's result), or (False, None) after reporting its failure as one line."""
        try:
            return True, future.result()
        except ImageError as exc:
            self.fail(str(job.source), str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
            self.fail(str(job.source), f"{what}: {type(exc).__name__}: {exc}")
        return False, None

    def fail(self, name: str, message: str) -> None:
        self.summary.failed += 1
        self.bar.update()
        # ImageError/BackendError messages already start with the file name.
        self.pipeline.on_error(message if message.startswith(name) else f"{name}: {message}")

    def stop(self) -> None:
        """On success a no-op; on Ctrl-C/SIGTERM: drop queued work, let running writes finish (they
        clean up after themselves), then remove any temporary file still there."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        atomic.remove_live()


def _print_error(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {line}", file=sys.stderr)
