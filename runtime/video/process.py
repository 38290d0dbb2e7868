"""One clip through the one load -> run -> render path, on threads, in bounded memory.

    decode + to BGR + preprocess (reader thread) ──queue──> engine batches + postprocess + smoothing (caller's
    thread) ──queue──> draw + convert + encode + mux, sound alongside (writer thread)

Frames are prepared exactly as ``Remover.mask`` prepares an array (``prepare_input``, BGR as decoded), in
the orientation they are displayed in, batched to ``remover.batch_size``; masks come from ``postprocess``
(and ``Smoother``), and pictures from ``runtime.render.draw``. With smoothing off a frame's mask *is*
``Remover.mask(frame)`` (tested). The two queues hold at most ``batch + 2`` frames each, so memory does
not grow with the clip's length (tested with peak RSS). PyAV's codecs, swscale and OpenCV release the GIL,
so decoding, inference and encoding overlap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from runtime.preprocess import postprocess, prepare_input
from runtime.render import RenderOptions, draw
from runtime.video.formats import MUXERS, VideoOptions, choose
from runtime.video.sink import ContainerSink, PngSequenceSink
from runtime.video.smooth import Setting, Smoother
from runtime.video.source import Orientation, Source, Stopped, VideoError, to_bgr

if TYPE_CHECKING:
    from runtime.api import Remover

log = logging.getLogger(__name__)

STEPS = ("decode", "preprocess", "infer", "postprocess", "encode")


@dataclass
class _Frame:
    """One frame on its way through: where it sits in time, its pixels as stored and as displayed."""

    index: int
    pts: int
    duration: int
    stored: np.ndarray  # BGR, as the file stores it
    display: np.ndarray  # BGR, turned for display (the same array when the clip is not rotated)
    model_input: np.ndarray | None = None


@dataclass(frozen=True)
class FrameMask:
    """What the iterator API yields: the frame as displayed (RGB uint8), its mask (uint8, same size),
    its index in the clip and its time in seconds."""

    index: int
    time: float
    image: np.ndarray
    mask: np.ndarray


@dataclass
class VideoResult:
    """One written clip: how many frames, how long, the time each step took (seconds, summed over frames),
    and, when the input stopped early (corrupt or cut short), the one line saying where."""

    target: Path
    frames: int = 0
    seconds: float = 0.0
    stopped: str | None = None
    steps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Masker:
    """Probability maps -> masks as displayed, through ``postprocess`` and the smoother, in display order."""

    def __init__(self, remover: Remover, smooth: str | Setting) -> None:
        self.size = remover.spec.size
        self.smoother = Smoother(smooth)

    def __call__(self, probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if self.smoother.setting.strength <= 0:
            return postprocess(probability, shape)
        steady = self.smoother.step(postprocess(probability, (self.size, self.size)))
        height, width = shape
        if steady.shape == (height, width):
            return steady
        return cv2.resize(steady, (width, height), interpolation=cv2.INTER_LINEAR)  # as postprocess resizes


def _read(source: Source, remover: Remover, put: Callable[[object], None], steps: dict[str, float]) -> None:
    """The reader: decoded frames -> BGR -> turned for display -> model input, until the end or an error."""
    spec = remover.spec
    clock = time.perf_counter()
    try:
        for index, pts, duration, frame in source.frames():
            stored = to_bgr(frame)
            now = time.perf_counter()
            steps["decode"] += now - clock
            display = source.orientation.display(stored)
            item = _Frame(index, pts, duration, stored, display, prepare_input(display, spec, bgr=True))
            clock = time.perf_counter()
            steps["preprocess"] += clock - now
            put(item)
            clock = time.perf_counter()
        put(_END)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides
        put(_Failed(exc))


class _Stop(Exception):
    """The consumer went away: the producer thread ends quietly."""


def _putter(q: queue.Queue, stop: threading.Event) -> Callable[[object], None]:
    def put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    return put


def _get(q: queue.Queue, alive: Callable[[], bool]) -> object:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if not alive():  # it may have put its last item just before ending
                try:
                    return q.get_nowait()
                except queue.Empty:
                    return _Failed(RuntimeError("a video worker thread ended unexpectedly"))


def _start(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True, name="u2net-video")
    thread.start()
    return thread


def _batches(remover: Remover, frames: queue.Queue, alive: Callable[[], bool]) -> Iterator[list[_Frame]]:
    """Frames from the reader in batches of ``remover.batch_size`` (the last may be short); raises what the
    reader raised, after the frames decoded before it."""
    batch: list[_Frame] = []
    while True:
        item = _get(frames, alive)
        if isinstance(item, _Frame):
            batch.append(item)
            if len(batch) >= remover.batch_size:
                yield batch
                batch = []
            continue
        if batch:
            yield batch
        if isinstance(item, _Failed):
            raise item.exc
        return


def process_video(remover: Remover, source: str | Path, target: str | Path, options: RenderOptions | None = None,
                  video: VideoOptions | None = None, *, io_threads: int = 2,
                  progress: Callable[[int], None] | None = None) -> VideoResult:  # fmt: skip
    """Cut out every kept frame of ``source`` and write ``target`` (a file, or a folder for PNG frames).

    Raises ``VideoError`` (one line naming the file) when nothing could be written. When the input stops
    early, the frames before the damage are written and ``VideoResult.stopped`` says where it stopped.
    ``progress`` is called with the number of frames written so far.
    """
    options = options or RenderOptions()
    video = video or VideoOptions()
    target = Path(target)
    result = VideoResult(target)
    started = time.perf_counter()
    with Source(source, max_pixels=remover.max_pixels, options=video) as src:
        try:
            choice = choose(options.mode, video, source, src.info.codec)
        except ValueError as exc:
            raise VideoError(f"{source}: {exc}") from None
        if not choice.format.sequence and MUXERS.get(target.suffix.lower()) != choice.muxer:
            raise VideoError(f"{target}: this output is {choice.format.name} in {choice.muxer}; name it "
                             f"{target.stem}{choice.suffix} or choose another VideoOptions.format")
        stop = threading.Event()
        frames: queue.Queue = queue.Queue(maxsize=remover.batch_size + 2)
        masks: queue.Queue = queue.Queue(maxsize=remover.batch_size + 2)
        reader = _start(_run_reader, src, remover, _putter(frames, stop), result.steps)
        writer_state: dict[str, Any] = {}
        writer = _start(_run_writer, src, target, choice, options, video, io_threads, masks, stop, result,
                        writer_state, progress)  # fmt: skip
        masker = _Masker(remover, video.smooth)
        put = _putter(masks, stop)
        try:
            try:
                for batch in _batches(remover, frames, reader.is_alive):
                    clock = time.perf_counter()
                    probs = remover.predict(np.stack([f.model_input for f in batch]))
                    now = time.perf_counter()
                    result.steps["infer"] += now - clock
                    for item, prob in zip(batch, probs, strict=True):
                        item.model_input = None
                        mask = masker(prob, item.display.shape[:2])
                        put((item, src.orientation.store(mask)))
                    result.steps["postprocess"] += time.perf_counter() - now
            except Stopped as exc:
                result.stopped = str(exc)
            put(_END)
        except _Stop:
            pass  # the writer gave up: its error is raised below
        except BaseException:
            stop.set()  # Ctrl-C, or the engine failed: the writer drops its file
            raise
        finally:
            writer.join()
            stop.set()
            reader.join()
    if "error" in writer_state:
        raise writer_state["error"]
    if result.frames == 0:
        raise VideoError(result.stopped or f"{source}: no frames selected (--frames {video.start}:{video.stop})")
    result.seconds = time.perf_counter() - started
    return result


def _run_reader(src: Source, remover: Remover, put: Callable[[object], None], steps: dict[str, float]) -> None:
    try:
        _read(src, remover, put, steps)
    except _Stop:
        pass


def _run_writer(src: Source, target: Path, choice: Any, options: RenderOptions, video: VideoOptions,
                io_threads: int, masks: queue.Queue, stop: threading.Event, result: VideoResult,
                state: dict[str, Any], progress: Callable[[int], None] | None) -> None:  # fmt: skip
    """The writer: masks -> pictures (``draw``) -> the sink, opened at the first frame (when the display
    matrix and the first timestamp are known). Any failure drops the output and is kept in ``state``."""
    sink: ContainerSink | PngSequenceSink | None = None
    info = src.info
    try:
        while True:
            try:
                item = masks.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    raise _Stop from None
                continue
            if item is _END:
                break
            frame, mask = item
            clock = time.perf_counter()
            picture = draw(frame.stored if options.needs_colours else None, mask, options, "bgr")
            now = time.perf_counter()
            result.steps["postprocess"] += now - clock
            if sink is None:
                start = float(frame.pts * info.time_base)  # the output starts at its first frame
                cut, preview = video.start > 0, video.stop is not None  # sound only for the frames kept
                if choice.format.sequence:
                    sink = PngSequenceSink(target, options, info, start, cut, preview, threads=io_threads)
                else:
                    sink = ContainerSink(target, choice, options.mode, info, src.orientation.matrix, start, cut,
                                         preview)  # fmt: skip
            sink.write(picture, frame.pts, frame.duration)
            result.frames += 1
            result.steps["encode"] += time.perf_counter() - now
            if progress is not None:
                progress(result.frames)
        if sink is not None:
            clock = time.perf_counter()
            sink.finish()
            result.steps["encode"] += time.perf_counter() - clock
    except BaseException as exc:  # noqa: BLE001 - reported by process_video on the caller's thread
        if sink is not None:
            sink.abort()
        if not isinstance(exc, _Stop):
            state["error"] = exc
        stop.set()


def iter_frames(remover: Remover, source: str | Path, video: VideoOptions | None = None) -> Iterator[FrameMask]:
    """The frames of ``source`` that ``video`` keeps, each with its mask (``FrameMask``), in display order
    and orientation, as a generator: one batch of frames in memory at a time, decoded ahead on a thread.
    With ``smooth="off"`` each mask equals ``remover.mask(item.image)``. A damaged clip yields its good
    frames, then raises ``Stopped``."""
    video = video or VideoOptions()
    steps = dict.fromkeys(STEPS, 0.0)
    with Source(source, max_pixels=remover.max_pixels, options=video) as src:
        stop = threading.Event()
        frames: queue.Queue = queue.Queue(maxsize=remover.batch_size + 2)
        reader = _start(_run_reader, src, remover, _putter(frames, stop), steps)
        masker = _Masker(remover, video.smooth)
        try:
            for batch in _batches(remover, frames, reader.is_alive):
                probs = remover.predict(np.stack([f.model_input for f in batch]))
                for item, prob in zip(batch, probs, strict=True):
                    mask = masker(prob, item.display.shape[:2])
                    rgb = cv2.cvtColor(item.display, cv2.COLOR_BGR2RGB)
                    yield FrameMask(item.index, float(item.pts * src.info.time_base), rgb, mask)
        finally:
            stop.set()
            reader.join()


__all__ = ["STEPS", "FrameMask", "Orientation", "VideoResult", "iter_frames", "process_video"]
