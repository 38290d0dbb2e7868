"""The client side of a bulk run on Dask: plan here, send batches of files to the workers, count what comes back.

1. Inputs are planned on the client with the local run's rules (``runtime.store_inputs``; ``--shard`` too),
   so the output tree is the local run's; problems found while planning are reported here, one line each.
2. Every worker loads the engine once (``batch.warm_engine`` through ``Client.run``): an engine that cannot
   run stops the run before any file is touched (``EngineUnusable``, exit status 2).
3. Images go out in tasks of ``task_images`` files (whole engine batches), each video in a task of its own,
   through a window of at most a few tasks per worker thread, so a million files never sit in the scheduler.
   Dask reruns the task of a worker that dies elsewhere (up to ``distributed.scheduler.allowed-failures``
   times); as writes are atomic and names fixed, the rerun leaves no partial and no duplicate.
4. Each finished task moves the one progress bar by its files and prints its error lines; a task Dask gave
   up on (``KilledWorker``) fails its files with one line each.
5. A scheduler that goes away cancels every future: the run stops with ``SchedulerLost`` (one line, exit
   status 2), saying how many files were finished; those outputs are complete and stay.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import atomic, store
from runtime.bulk.batch import BatchResult, EngineSpec, EngineUnusable, RunSettings, process_batch, warm_engine
from runtime.errors import first_line
from runtime.inputs import Job, Problem
from runtime.io import DEFAULT_MAX_PIXELS
from runtime.pipeline import IO_THREADS, Summary, output_suffix_of
from runtime.render import RenderOptions
from runtime.shard import Shard
from runtime.store_inputs import plan as plan_any
from runtime.video import VideoOptions, is_video

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

BATCHES_PER_TASK = 8  # at most this many engine batches per task: a lost worker's task is cheap to redo
TASKS_PER_THREAD = 4  # at least this many tasks per worker thread when there are enough files: an even finish
WINDOW_PER_THREAD = 2  # tasks in flight per worker thread (plus two): the next one is always waiting


class SchedulerLost(Exception):
    """The scheduler went away during the run; ``done`` files were finished (their outputs are complete)."""

    def __init__(self, message: str, done: int) -> None:
        super().__init__(message)
        self.done = done


@dataclass(frozen=True)
class Task:
    """One unit of work sent to a worker: planned (source, target) pairs, as strings."""

    index: int
    pairs: tuple[tuple[str, str], ...]


def task_images(images: int, batch: int, threads: int) -> int:
    """Images per task: whole engine batches, at most ``BATCHES_PER_TASK`` of them (a lost worker costs little
    to redo), and few enough that each worker thread gets about ``TASKS_PER_THREAD`` tasks (no long tail)."""
    share = math.ceil(images / (TASKS_PER_THREAD * max(1, threads)))
    batches = max(1, min(BATCHES_PER_TASK, math.ceil(share / batch)))
    return batches * batch


def make_tasks(jobs: Sequence[Job], size: int, videos: set[Path | str]) -> list[Task]:
    """Images in tasks of ``size`` in plan order, then each video in a task of its own (a clip is one long job)."""
    def pair(job: Job) -> tuple[str, str]:
        return _wire(job.source), _wire(job.target)

    images = [pair(job) for job in jobs if job.source not in videos]
    groups = [tuple(images[i : i + size]) for i in range(0, len(images), size)]
    groups += [(pair(job),) for job in jobs if job.source in videos]
    return [Task(i, group) for i, group in enumerate(groups)]


def _wire(place: Path | str) -> str:
    """A job's place as the workers see it: a URL as is, a local path made absolute (their working folder is
    not the client's; symlinks are kept, as the local run keeps them)."""
    return place if isinstance(place, str) else os.path.abspath(place)


def engine_threads(client: Client) -> int:
    """Engine threads per worker: its machine's cores shared by the worker processes on that machine."""
    workers = client.scheduler_info()["workers"]
    per_host = Counter(info["host"] for info in workers.values())
    cores = client.run(os.cpu_count)
    return max(1, min((cores.get(address) or 1) // per_host[info["host"]] for address, info in workers.items()))


def _worker_threads(client: Client) -> int:
    return sum(info.get("nthreads", 1) for info in client.scheduler_info()["workers"].values()) or 1


def run(
    client: Client,
    inputs: Iterable[str],
    out: str | os.PathLike,
    *,
    engine: str | os.PathLike,
    options: RenderOptions | None = None,
    video: VideoOptions | None = None,
    backend: str | None = None,
    provider: str | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    precision: str | None = None,
    skip_existing: bool = False,
    io_threads: int = IO_THREADS,
    shard: Shard | None = None,
    task_size: int | None = None,
    progress: bool = True,
    on_error: Callable[[str], None] | None = None,
    keep_freed_memory: bool = False,
) -> Summary:
    """Process ``inputs`` into ``out`` on the cluster behind ``client``, as ``python -m runtime.infer`` would
    locally (same planning, same files); returns the ``Summary``. Raises ``EngineUnusable`` when the engine
    cannot run on the workers and ``SchedulerLost`` when the scheduler goes away.

    ``threads``: engine threads per worker (default: the machine's cores shared by its worker processes).
    ``task_size``: images per task (default: ``task_images``). ``keep_freed_memory``: the CLI's allocator
    choice, made in each worker process (``runtime.allocator``); the library default leaves workers alone.
    """
    from tqdm import tqdm

    options = options or RenderOptions()
    video = video or VideoOptions()
    report = on_error or _print_error
    out_place = store.location(out)
    kinds: dict[Path | str, bool] = {}

    def suffix(source: Path | str) -> str:
        kinds[source] = is_video(str(source))
        return output_suffix_of(source, options, video, clip=kinds[source])

    plan = plan_any(inputs, out_place, suffix)
    if shard is not None:
        plan = list(shard.select(plan, out_place))
    jobs = [item for item in plan if isinstance(item, Job)]
    summary = Summary(out_dir=out_place)
    bar = tqdm(total=len(plan), unit="img", disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for item in plan:
            if isinstance(item, Problem):
                summary.failed += 1
                bar.update()
                report(item.message if item.message.startswith(item.name) else f"{item.name}: {item.message}")
        if jobs:
            spec = EngineSpec(str(engine), backend, provider, threads or engine_threads(client), batch_size,
                              max_pixels, precision)  # fmt: skip
            batch, described = _warm(client, spec)
            worker_threads = _worker_threads(client)
            images = sum(1 for job in jobs if not kinds.get(job.source))
            size = task_size or task_images(images, batch, worker_threads)
            tasks = make_tasks(jobs, size, {s for s, clip in kinds.items() if clip})
            log.info("on Dask at %s: %d workers, engine threads per worker: %d; %s; %d tasks of up to %d images",
                     client.scheduler.address, len(client.scheduler_info()["workers"]), spec.threads, described,
                     len(tasks), size)  # fmt: skip
            start = time.perf_counter()  # the engines are loaded: from here on it is the files' time
            settings = RunSettings.of(out_place, options, video, skip_existing=skip_existing, io_threads=io_threads,
                                      keep_freed_memory=keep_freed_memory)  # fmt: skip
            _Submitter(client, spec, settings, tasks, summary, bar, report).run()
            _sweep(jobs)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _warm(client: Client, spec: EngineSpec) -> tuple[int, str]:
    """Load the engine on every worker now (``Client.run``): all fail before any file is touched, or all are
    ready; returns the engine's batch and the backend's line from one of them."""
    answers = client.run(warm_engine, spec)
    batch, described = min(answers.values())
    return batch, described


def _sweep(jobs: Sequence[Job]) -> None:
    """After every task is done, remove temporaries a killed worker left in the local output folders (the next
    write there would have, but a folder may get none)."""
    folders = {job.target.parent for job in jobs if isinstance(job.target, Path)}
    for folder in folders:
        atomic.remove_stale(folder)


class _Submitter:
    """The window of tasks in flight, and what to do with each one that comes back."""

    def __init__(self, client: Client, spec: EngineSpec, settings: RunSettings, tasks: Sequence[Task],
                 summary: Summary, bar, report: Callable[[str], None]) -> None:  # fmt: skip
        self.client = client
        self.spec = spec
        self.settings = settings
        self.todo = deque(tasks)
        self.pending: dict[Future, Task] = {}
        self.summary = summary
        self.bar = bar
        self.report = report
        self.run_id = secrets.token_hex(4)

    def run(self) -> None:
        from distributed import wait
        from distributed.client import FuturesCancelledError
        from distributed.comm import CommClosedError

        try:
            self.fill()
            while self.pending:
                try:
                    done, _ = wait(list(self.pending), timeout=1.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                except FuturesCancelledError:  # the client cancels every future when the scheduler goes away
                    done = set()
                self.check_scheduler()
                for future in done:
                    self.finish(future)
                self.fill()
        except (CommClosedError, ConnectionError):
            # The scheduler went away between a task finishing and its result being fetched from it (or a submit):
            # the same lost scheduler as above, seen from another call.
            for future in self.pending:
                future.cancel()
            raise self.lost() from None
        except BaseException:
            for future in self.pending:  # Ctrl-C, a lost scheduler, an unusable engine: nothing more is started
                future.cancel()
            raise

    def fill(self) -> None:
        limit = WINDOW_PER_THREAD * _worker_threads(self.client) + 2
        while self.todo and len(self.pending) < limit:
            task = self.todo.popleft()
            future = self.client.submit(process_batch, task.pairs, self.spec, self.settings, pure=False,
                                        key=f"u2net-batch-{self.run_id}-{task.index}")  # fmt: skip
            self.pending[future] = task

    def check_scheduler(self) -> None:
        """Futures cancelled by no one here, or a client no longer running, mean the scheduler is gone."""
        lost = self.client.status not in ("running", "connecting") or any(
            f.status == "cancelled" for f in self.pending
        )
        if lost:
            raise self.lost()

    def lost(self) -> SchedulerLost:
        done = self.summary.ok + self.summary.skipped
        return SchedulerLost(f"lost the Dask scheduler at {self.client.scheduler.address}", done)

    def finish(self, future: Future) -> None:
        task = self.pending.pop(future)
        if future.status == "cancelled":
            self.pending[future] = task
            self.check_scheduler()
        if future.status == "finished":
            result: BatchResult = future.result()
            self.summary.ok += result.ok
            self.summary.failed += result.failed
            self.summary.skipped += result.skipped
            for line in result.warnings:
                log.warning("%s", line)
            for line in result.errors:
                self.report(line)
        else:
            exc = future.exception()
            if isinstance(exc, EngineUnusable):
                raise exc
            why = _task_failure(exc)
            self.summary.failed += len(task.pairs)
            for source, _ in task.pairs:
                self.report(f"{source}: {why}")
        self.bar.update(len(task.pairs))
        future.release()


def _task_failure(exc: BaseException | None) -> str:
    """Why a whole task failed, for each of its files' lines."""
    if type(exc).__name__ == "KilledWorker":
        return ("not processed: the Dask workers running its batch died each time it was tried (out of memory, "
                "or killed)")  # fmt: skip
    return f"its batch failed on a Dask worker: {type(exc).__name__}: {first_line(exc or 'unknown error')}"


def _print_error(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {line}", file=sys.stderr)


__all__ = ["SchedulerLost", "Task", "engine_threads", "make_tasks", "run", "task_images"]
