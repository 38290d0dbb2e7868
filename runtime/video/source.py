"""Reading a video: the checks made before any frame is decoded, then its frames in display order.

``open_video`` is to a clip what ``runtime.io.read_image`` is to a photo: only regular files are opened,
and a file with no video stream, a codec this FFmpeg cannot decode, frames above the pixel limit or more
frames than ``max_frames`` is refused with one line naming it, before decoding. ``Source.frames`` then
yields the frames the options keep, as BGR arrays in the orientation they are stored in (their display
matrix is handled by ``Orientation``), and ends with ``Stopped`` when the file is corrupt or shorter than
its header says: the frames before it were good, and the caller writes them.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.errors import first_line
from runtime.io import file_kind
from runtime.video.formats import VideoOptions

log = logging.getLogger(__name__)


class VideoError(Exception):
    """A video that cannot be read or written; the message is one line naming the file."""


class Stopped(VideoError):
    """Decoding stopped early (corrupt or cut short): ``frames`` frames before it were decoded."""

    def __init__(self, message: str, frames: int) -> None:
        super().__init__(message)
        self.frames = frames


def av_message(exc: BaseException) -> str:
    """An FFmpeg error as a short phrase: its text without PyAV's '[Errno N]' and the repeated file name."""
    text = getattr(exc, "strerror", None)
    return str(text) if text else first_line(exc)


def require_av() -> Any:
    """PyAV, or VideoError saying how to install it (the runtime's images never need it)."""
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV: pip install 'u2net-toolkit[video]' (or pip install av)") from None
    return av


# --- orientation: the display matrix, applied the way FFmpeg's own autorotation does -------------------

_TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    # name: (stored -> displayed, displayed -> stored)
    "clock": (lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE), lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)),
    "cclock": (lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE), lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)),
    "transpose": (cv2.transpose, cv2.transpose),
    "antitranspose": (lambda a: cv2.flip(cv2.transpose(a), -1), lambda a: cv2.flip(cv2.transpose(a), -1)),
    "hflip": (lambda a: cv2.flip(a, 1), lambda a: cv2.flip(a, 1)),
    "vflip": (lambda a: cv2.flip(a, 0), lambda a: cv2.flip(a, 0)),
}  # fmt: skip


@dataclass(frozen=True)
class Orientation:
    """How a stored frame is turned for display: the display matrix's rotation by quarter turns and its
    flips, in the steps FFmpeg's command line applies (``transpose``/``hflip``/``vflip``). The model sees
    frames as displayed (upright people); outputs are stored as the input was, with its matrix copied."""

    steps: tuple[str, ...] = ()
    matrix: tuple[int, ...] | None = None

    @classmethod
    def of(cls, matrix: tuple[int, ...] | None) -> Orientation:
        if matrix is None or len(matrix) != 9:
            return cls()
        a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
        scale_x, scale_y = float(np.hypot(a, c)), float(np.hypot(b, d))
        if not scale_x or not scale_y:
            return cls(matrix=matrix)
        # FFmpeg: av_display_rotation_get is -atan2(..) (counter-clockwise); the command line turns by its negative.
        theta = round(float(np.degrees(np.arctan2(b / scale_y, a / scale_x)))) % 360
        if abs(theta - 90) < 1:
            steps: tuple[str, ...] = ("transpose",) if c > 0 else ("clock",)
        elif abs(theta - 180) < 1:
            steps = (("hflip",) if a < 0 else ()) + (("vflip",) if d < 0 else ())
        elif abs(theta - 270) < 1:
            steps = ("antitranspose",) if c < 0 else ("cclock",)
        elif theta < 1 or theta > 359:
            steps = ("vflip",) if d < 0 else ()
        else:
            log.warning("a display rotation of %d degrees is not a quarter turn; frames are used as stored", theta)
            steps = ()
        return cls(steps, matrix)

    def display(self, image: np.ndarray) -> np.ndarray:
        for step in self.steps:
            image = _TRANSFORMS[step][0](image)
        return image

    def store(self, image: np.ndarray) -> np.ndarray:
        for step in reversed(self.steps):
            image = _TRANSFORMS[step][1](image)
        return image

    def shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) as displayed."""
        turns = sum(step in ("clock", "cclock", "transpose", "antitranspose") for step in self.steps)
        return (width, height) if turns % 2 else (height, width)


# --- what a file holds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """The facts about a clip that outputs copy: size as stored, codec, timing, display matrix, audio."""

    path: Path
    muxer: str
    codec: str
    width: int
    height: int
    frames: int  # declared by the container; 0 = not declared
    rate: Fraction | None  # average frame rate
    time_base: Fraction
    duration: float | None  # of the video stream, in seconds, when the container says
    audio_codec: str | None
    colour: dict[str, int]  # colorspace, color_range, color_primaries, color_trc of the stream


def _check_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise VideoError(f"{path}: cannot open: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise VideoError(f"{path}: is {file_kind(mode)}, not a video file; not opened")


def open_container(path: str | os.PathLike) -> Any:
    """``av.open`` for reading, as one VideoError line when it fails."""
    av = require_av()
    path = Path(path)
    _check_regular(path)
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        hint = " (cut short? an MP4's index is written at its end)" if path.suffix.lower() in (".mp4", ".mov", ".m4v") else ""
        raise VideoError(f"{path}: not a readable video: {av_message(exc)}{hint}") from None


def frame_matrix(frame: Any) -> tuple[int, ...] | None:
    """A decoded frame's display matrix (FFmpeg attaches the stream's to every frame), or None."""
    import struct

    for side in frame.side_data:
        if "DISPLAYMATRIX" in str(side.type) and side.buffer_size == 36:
            return struct.unpack("<9i", bytes(side))
    return None


class Source:
    """An open clip (a context manager): ``info`` after the checks, ``frames()`` to decode. ``orientation``
    is known once the first frame is decoded (the display matrix travels on the frames)."""

    def __init__(self, path: str | os.PathLike, *, max_pixels: int, options: VideoOptions) -> None:
        av = require_av()
        self.path = Path(path)
        self.options = options
        self.container = open_container(self.path)
        self.orientation = Orientation()
        try:
            self.info = self._check(av, max_pixels)
        except BaseException:
            self.container.close()
            raise

    def _check(self, av: Any, max_pixels: int) -> VideoInfo:
        path, container = self.path, self.container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError(f"{path}: has no video stream ({', '.join(kinds)}); nothing to cut out")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        name = getattr(ctx, "name", None)
        if ctx is None or not name:
            raise VideoError(f"{path}: its video codec is unknown to this FFmpeg build; cannot decode it")
        try:
            av.codec.Codec(name, "r")
        except Exception:  # noqa: BLE001 - PyAV raises different types for unknown and missing codecs
            raise VideoError(f"{path}: video codec {name!r} cannot be decoded by this FFmpeg build") from None
        width, height = ctx.width, ctx.height
        if width <= 0 or height <= 0:
            raise VideoError(f"{path}: video stream has no frame size ({width}x{height}); corrupt header?")
        if width * height > max_pixels:
            raise VideoError(f"{path}: {width}x{height} = {width * height / 1e6:.1f} MP per frame exceeds the limit "
                             f"of {max_pixels / 1e6:g} MP (raise --max-pixels if this video is genuine)")
        if stream.frames > self.options.max_frames:
            raise VideoError(f"{path}: declares {stream.frames} frames, above the limit of {self.options.max_frames} "
                             "(raise --max-frames if this video is genuine)")
        stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads: decoding overlaps with the model
        duration = float(stream.duration * stream.time_base) if stream.duration else _tag_seconds(stream.metadata)
        if duration is None and container.duration and len(container.streams) == 1:
            duration = container.duration / 1_000_000
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        colour = {key: int(getattr(ctx, key, 0) or 0) for key in ("colorspace", "color_range", "color_primaries",
                                                                  "color_trc")}  # fmt: skip
        return VideoInfo(path=path, muxer=container.format.name.split(",")[0], codec=name, width=width,
                         height=height, frames=stream.frames, rate=stream.average_rate or stream.guessed_rate,
                         time_base=stream.time_base or Fraction(1, 90000), duration=duration,
                         audio_codec=audio, colour=colour)  # fmt: skip

    def frames(self) -> Iterator[tuple[int, int, int, Any]]:
        """(index in display order, pts, duration, av.VideoFrame) for each kept frame; raises ``Stopped``
        at a decode error or when the clip ends before the frame count or duration its header declares."""
        av = require_av()
        info, options = self.info, self.options
        stream = self.container.streams.video[0]
        index, last_pts, last_end, step = -1, None, 0, _frame_ticks(info)
        gap = (0, -1)  # the largest jump between timestamps seen: (ticks, the frame before it)
        intervals: Counter[int] = Counter()  # to tell a constant frame rate with holes from a variable one
        packets = self.container.demux(stream)
        try:
            for packet in packets:
                for frame in packet.decode():
                    index += 1
                    if index == 0:
                        self.orientation = Orientation.of(frame_matrix(frame))
                    if index >= options.max_frames:
                        raise Stopped(f"{self.path}: more than {options.max_frames} frames (raise --max-frames if "
                                      "this video is genuine)", index)  # fmt: skip
                    if frame.is_corrupt:  # concealed by the decoder: not the picture that was filmed
                        at = float(frame.time or 0.0)
                        raise Stopped(f"{self.path}: frame {index} ({at:.2f} s) is damaged; stopped there", index)
                    pts = frame.pts if frame.pts is not None else (last_pts + step if last_pts is not None else 0)
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # decoders that repeat a timestamp: keep them increasing
                    if last_pts is not None:
                        if pts - last_pts > gap[0]:
                            gap = (pts - last_pts, index - 1)
                        if len(intervals) < 64 or pts - last_pts in intervals:
                            intervals[pts - last_pts] += 1
                    duration = frame.duration or step
                    last_pts, last_end = pts, pts + duration
                    if options.stop is not None and index >= options.stop:
                        return
                    if options.keeps(index):
                        yield index, pts, duration, frame
        except av.FFmpegError as exc:
            at = float(last_end * info.time_base) if last_pts is not None else 0.0
            raise Stopped(f"{self.path}: decoding stopped at frame {index + 1} ({at:.2f} s): {av_message(exc)}",
                          index + 1) from None
        decoded = index + 1
        if info.frames and decoded < info.frames:
            raise Stopped(f"{self.path}: ends at frame {decoded} of the {info.frames} its header declares "
                          "(cut short?)", decoded)
        end = float(last_end * info.time_base) - float(stream.start_time * info.time_base if stream.start_time else 0)
        if info.duration and decoded and end < info.duration - max(0.25, 3 * float(step * info.time_base)):
            raise Stopped(f"{self.path}: ends at {end:.2f} s of the {info.duration:.2f} s its header declares "
                          f"({decoded} frames; cut short?)", decoded)
        if decoded == 0:
            raise Stopped(f"{self.path}: no frame could be decoded", 0)
        # A constant frame rate (nearly all steps alike) whose duration holds more frames than decoded: the
        # demuxer skipped damaged data (Matroska resynchronises silently). Variable rates are not judged.
        interval, count = intervals.most_common(1)[0] if intervals else (0, 0)
        if not info.frames and info.duration and interval and count >= 0.9 * (decoded - 1) - 1:
            expected = round(info.duration / float(interval * info.time_base))
            if decoded < expected - max(1, expected // 100):
                at = float((gap[1] + 1) * interval * info.time_base)
                raise Stopped(f"{self.path}: {expected - decoded} of its {expected} frames are missing (damaged data "
                              f"skipped), the first after frame {gap[1]} ({at:.2f} s)", decoded)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tag_seconds(metadata: dict[str, str]) -> float | None:
    """A Matroska track's DURATION tag ('00:01:02.500000000', what FFmpeg's muxer writes) in seconds."""
    text = metadata.get("DURATION") or metadata.get("duration")
    try:
        hours, minutes, seconds = text.split(":")  # type: ignore[union-attr]
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


def _frame_ticks(info: VideoInfo) -> int:
    """One frame's duration in time-base ticks (1/25 s when the rate is unknown), at least 1."""
    rate = info.rate or Fraction(25)
    return max(1, round(1 / (rate * info.time_base)))


def to_bgr(frame: Any) -> np.ndarray:
    """A decoded frame -> BGR uint8 as stored, converted by swscale on this thread with the frame's own
    colour matrix and range (one thread: swscale's own thread pool cost 14 ms a 1080p frame against 1 ms)."""
    return frame.to_ndarray(format="bgr24", threads=1, src_color_range=frame.color_range or None)
