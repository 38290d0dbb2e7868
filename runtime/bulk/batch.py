"""The per-batch function every bulk task runs: (source, target) pairs in, counts and error lines out.

``process_batch(pairs, engine, settings)`` is pure from its caller's point of view: plain strings and frozen,
picklable settings in, a ``BatchResult`` out, no state visible between calls. That is what lets any engine of
distributed work drive it: a Dask task (``runtime.bulk.runner``), or a Spark ``mapInPandas`` function
(docs/serving.md, "Bulk jobs on a cluster"). Inside, the one thing kept between calls is the engine: each process loads
it once (``remover_for``) and reuses it for every later batch, so a worker pays the engine's start-up once,
not once per task.

A batch runs through ``runtime.pipeline.Pipeline.process``, the code a local run uses (same load, engine,
render and write steps, same I/O threads), so its files are byte for byte a local run's with the same engine
settings. Writes are atomic (a temporary name and a rename locally, one put on a store), so a batch that Dask
runs again after its worker died rewrites the same files with the same bytes and leaves no partial file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime import allocator, store
from runtime.api import Remover
from runtime.backends import BackendError, find_backend
from runtime.errors import first_line
from runtime.inputs import Job
from runtime.io import DEFAULT_MAX_PIXELS
from runtime.pipeline import IO_THREADS, Pipeline
from runtime.render import Backdrop, RenderOptions
from runtime.video import VideoOptions


class EngineUnusable(Exception):
    """The engine cannot be loaded or run on a worker (missing file, wrong engine, absent backend): the run stops
    with this one line, as a local run does (exit status 2)."""


@dataclass(frozen=True)
class EngineSpec:
    """How each worker opens the engine (``Remover``'s arguments); hashable, so it keys the per-process cache.
    The engine path must be readable on every worker (a shared volume, the same image), or be a Triton URL."""

    engine: str
    backend: str | None = None
    provider: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    precision: str | None = None

    def open(self) -> Remover:
        _share_cores(self)
        try:
            return Remover(self.engine, backend=self.backend, provider=self.provider, threads=self.threads,
                           batch_size=self.batch_size, max_pixels=self.max_pixels, precision=self.precision)  # fmt: skip
        except BackendError as exc:
            raise EngineUnusable(str(exc)) from None
        except ImportError as exc:  # e.g. the TensorRT backend's own dependencies
            raise EngineUnusable(f"{self.engine}: cannot load its backend: {first_line(exc)}") from None


def _share_cores(spec: EngineSpec) -> None:
    """Let the engines of several worker processes on one machine use different cores.

    OpenVINO pins each inference thread to a core, counting from the first one, so two worker processes of one
    engine thread each ran on the same core: 440 ms per U²-NetP 320 image each, against 218 ms for one alone
    (2-core AMD EPYC; unpinned, 216 and 220 ms side by side). Pinning helps one process that owns the machine,
    which a worker never does, so it is turned off in the worker process (OpenVINO's one shared ``Core``)."""
    try:
        if find_backend(spec.engine, spec.backend, spec.provider).name != "openvino":
            return
        import openvino

        from runtime.backends.openvino import shared_core
    except (BackendError, ImportError):
        return  # the engine's own load says what is wrong
    shared_core(openvino).set_property("CPU", {"ENABLE_CPU_PINNING": False})


@dataclass(frozen=True)
class RunSettings:
    """What every batch of one run shares besides the engine: where outputs go and how they are made.

    ``RenderOptions`` travels as plain fields (its background picture as an array), because its ``Backdrop``
    holds a per-instance cache that pickle cannot carry; ``options`` rebuilds it on the worker.
    """

    out: str
    render: tuple[tuple[str, object], ...]
    background: tuple[tuple[int, int, int] | None, np.ndarray | None]
    video: VideoOptions = field(default_factory=VideoOptions)
    skip_existing: bool = False
    io_threads: int = IO_THREADS
    keep_freed_memory: bool = False  # the CLI's allocator choice, made in each worker process (runtime.allocator)

    @classmethod
    def of(cls, out: str | os.PathLike, options: RenderOptions, video: VideoOptions | None = None, *,
           skip_existing: bool = False, io_threads: int = IO_THREADS, keep_freed_memory: bool = False) -> RunSettings:  # fmt: skip
        fields = tuple((f.name, getattr(options, f.name)) for f in dataclasses.fields(options) if f.name != "background")
        return cls(str(out), fields, (options.background.color, options.background.picture), video or VideoOptions(),
                   skip_existing, io_threads, keep_freed_memory)  # fmt: skip

    @property
    def options(self) -> RenderOptions:
        color, picture = self.background
        return RenderOptions(**dict(self.render), background=Backdrop(color=color, picture=picture))  # type: ignore[arg-type]


@dataclass
class BatchResult:
    """What one batch did: counts, one line per failed file, the warnings it logged, where and how long."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # processing time on the worker (the engine's first load excluded)
    worker: str = ""  # host:pid

    @property
    def files(self) -> int:
        return self.ok + self.failed + self.skipped


_engines: dict[EngineSpec, Remover] = {}
_engines_lock = threading.Lock()
_one_batch = threading.Lock()  # a Remover is not thread-safe, and a batch already uses every core
_allocator_set = False


def remover_for(spec: EngineSpec) -> Remover:
    """This process's engine for ``spec``, loaded on first use and kept; an engine of another spec is closed
    first (a worker serves one run at a time, and two engines would double its memory)."""
    with _engines_lock:
        remover = _engines.get(spec)
        if remover is None:
            for other in list(_engines):
                _engines.pop(other).close()
            remover = _engines[spec] = spec.open()
        return remover


def warm_engine(spec: EngineSpec) -> tuple[int, str]:
    """Load the engine here (once per process) and say what runs: (images per engine call, the backend's line)."""
    remover = remover_for(spec)
    return remover.batch_size, remover.backend.describe()


class _Collect(logging.Handler):
    """Warnings the pipeline logs during a batch (a broken output made again, a reduced batch), for the client."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def process_batch(pairs: Sequence[tuple[str, str]], engine: EngineSpec, settings: RunSettings) -> BatchResult:
    """Make the output of each (source, target) pair (local paths or store URLs, as planned by the client);
    one line per failed file in ``errors``. Raises ``EngineUnusable`` when the engine cannot run here."""
    global _allocator_set
    with _one_batch:
        if settings.keep_freed_memory and not _allocator_set:
            _allocator_set = allocator.keep_freed_memory()
        remover = remover_for(engine)
        errors: list[str] = []
        pipeline = Pipeline(remover, settings.out, options=settings.options, skip_existing=settings.skip_existing,
                            io_threads=settings.io_threads, progress=False, on_error=errors.append,
                            video=settings.video)  # fmt: skip
        collect = _Collect()
        runtime_log = logging.getLogger("runtime")
        runtime_log.addHandler(collect)
        start = time.perf_counter()
        try:
            summary = pipeline.process([Job(store.location(source), store.location(target)) for source, target in pairs])
        finally:
            runtime_log.removeHandler(collect)
        return BatchResult(summary.ok, summary.failed, summary.skipped, errors, collect.lines,
                           time.perf_counter() - start, f"{socket.gethostname()}:{os.getpid()}")  # fmt: skip


__all__ = ["BatchResult", "EngineSpec", "EngineUnusable", "RunSettings", "process_batch", "remover_for", "warm_engine"]
