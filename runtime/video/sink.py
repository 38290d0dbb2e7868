"""Writing a video: frames in, one complete file (or PNG folder) out, or nothing at all.

``ContainerSink`` encodes pictures (``runtime.render.draw``'s output: a mask, BGR or BGRA) with a row of
``VIDEO_FORMATS`` into a temporary file beside the target and renames it into place when finished
(``runtime.atomic``): a killed run leaves no half-written video under the output's name, and the next run
into the folder removes the temporary. Each frame keeps its input timestamp (variable frame rates stay
variable), the display matrix is copied, and the sound follows the video: packets copied as they are where
the container takes the codec, else decoded and re-encoded (e.g. AAC to Opus for WebM).

``PngSequenceSink`` writes one PNG per frame with ``runtime.render.encode`` (the image path's own encoder:
a frame's PNG is byte for byte what ``python -m runtime.infer`` makes of the same picture), plus
``timecodes.txt`` (each frame's time, Matroska's v2 timecode format, for variable frame rates) and
``audio.mka`` (the sound, copied), in a private folder published under the target name when complete.

``is_complete`` is ``--skip-existing``'s check: cheap (the container's header and its last packets), so a
cut or foreign file is made again.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime import atomic
from runtime.errors import first_line
from runtime.io import write_atomic
from runtime.render import RenderOptions, encode
from runtime.render import is_complete as is_complete_picture
from runtime.video.formats import AUDIO_ENCODER, CONTAINER_AUDIO, Choice
from runtime.video.source import VideoError, VideoInfo, open_container, require_av

TIMECODES = "timecodes.txt"
AUDIO_FILE = "audio.mka"


def frame_name(n: int) -> str:
    return f"frame_{n:06d}.png"


# --- pictures -> frames --------------------------------------------------------------------------------


def _plane(frame: Any, index: int, dtype: type = np.uint8) -> np.ndarray:
    """A writable numpy view of one plane (its padding cut off)."""
    plane = frame.planes[index]
    item = np.dtype(dtype).itemsize
    return np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // item)[:, : plane.width]


def to_frame(picture: np.ndarray, pix_fmt: str, colour: dict[str, int], full_range_masks: bool) -> Any:
    """A picture from ``runtime.render.draw`` (gray mask, BGR or BGRA uint8) -> an ``av.VideoFrame`` in
    ``pix_fmt``, converted by swscale on this thread with the input's colour matrix and range (so colours
    come back as they went in). Masks are stored full range where the row says so (luma = mask exactly).
    Alpha is copied into the alpha plane as it is (10-bit formats: rescaled), never through a colour matrix."""
    av = require_av()
    ranged = {"dst_colorspace": colour.get("colorspace") or None, "dst_color_range": colour.get("color_range") or None}
    if picture.ndim == 3 and pix_fmt in ("yuv420p", "yuva420p") and _opencv_matrix(picture, colour):
        return _i420(av, picture, pix_fmt)
    if picture.ndim == 2:
        frame = av.VideoFrame.from_ndarray(picture, format="gray")
        if pix_fmt == "gray":
            return frame
        return frame.reformat(format=pix_fmt, dst_color_range="JPEG" if full_range_masks else "MPEG", threads=1)
    if picture.shape[2] == 3 or pix_fmt == "bgra":
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24" if picture.shape[2] == 3 else "bgra")
        return frame if pix_fmt == frame.format.name else frame.reformat(format=pix_fmt, threads=1, **ranged)
    # BGRA -> yuva*: the colour planes by swscale, the alpha plane copied (swscale's packed-alpha path
    # took 39 ms a 1080p frame against 9 for the colour alone).
    colour_fmt = pix_fmt.replace("yuva", "yuv", 1)
    bgr = np.ascontiguousarray(picture[:, :, :3])
    planes = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=colour_fmt, threads=1, **ranged)
    out = av.VideoFrame(picture.shape[1], picture.shape[0], pix_fmt)
    deep = pix_fmt.endswith("le")
    dtype = np.uint16 if deep else np.uint8
    for i in range(3):
        _plane(out, i, dtype)[:] = _plane(planes, i, dtype)
    alpha = picture[:, :, 3]
    _plane(out, 3, dtype)[:] = (alpha.astype(np.uint32) * 1023 + 127) // 255 if deep else alpha
    out.colorspace, out.color_range = planes.colorspace, planes.color_range
    return out


_BT601 = (0, 5, 6)  # colorspace: unspecified (swscale then uses BT.601), BT.470BG, SMPTE 170M


def _opencv_matrix(picture: np.ndarray, colour: dict[str, int]) -> bool:
    """Whether OpenCV's I420 conversion (BT.601, limited range: swscale's numbers within one level, in a third
    of the time: 4 against 15 ms a 1080p frame) is the right matrix for this output, and the size is even."""
    height, width = picture.shape[:2]
    return (colour.get("colorspace", 0) in _BT601 and colour.get("color_range", 0) != 2
            and height % 2 == 0 and width % 2 == 0)  # fmt: skip


def _i420(av: Any, picture: np.ndarray, pix_fmt: str) -> Any:
    """BGR(A) -> yuv420p / yuva420p by OpenCV, the alpha plane copied as it is."""
    height, width = picture.shape[:2]
    code = cv2.COLOR_BGR2YUV_I420 if picture.shape[2] == 3 else cv2.COLOR_BGRA2YUV_I420
    flat = cv2.cvtColor(picture, code).reshape(-1)  # Y, then U and V of (h/2 x w/2) each
    luma, chroma = height * width, (height // 2) * (width // 2)
    out = av.VideoFrame(width, height, pix_fmt)
    _plane(out, 0)[:] = flat[:luma].reshape(height, width)
    _plane(out, 1)[:] = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    _plane(out, 2)[:] = flat[luma + chroma :].reshape(height // 2, width // 2)
    if pix_fmt == "yuva420p":
        _plane(out, 3)[:] = picture[:, :, 3] if picture.shape[2] == 4 else 255
    return out


# --- sound ---------------------------------------------------------------------------------------------


class _Audio:
    """The input's first audio stream, read from a second handle on the file and fed to an output container
    up to a time: copied packet by packet, or decoded, resampled and re-encoded. Everything is shifted by
    ``start`` (seconds of the input: the first kept frame's time); with ``cut`` the sound before it is
    dropped (a preview from frame A), else kept (an encoder's priming packet before 0 stays)."""

    def __init__(self, source: Path, out: Any, start: float, copy: bool, encoder: str, cut: bool) -> None:
        av = require_av()
        self.av = av
        self.input = open_container(source)
        self.stream = self.input.streams.audio[0]
        self.start = start
        self.keep_from = start - 1e-9 if cut else float("-inf")
        self.copy = copy
        self.packets: Iterator[Any] = self.input.demux(self.stream)
        self.pending: Any = None
        self.done = False
        self.samples = 0
        if copy:
            self.out = out.add_stream_from_template(self.stream)
        else:
            ctx = self.stream.codec_context
            rate = 48000 if encoder == "libopus" else (ctx.sample_rate or 48000)
            layout = ctx.layout.name if ctx.layout and ctx.layout.nb_channels <= 2 else "stereo"
            self.out = out.add_stream(encoder, rate=rate, layout=layout)
            fmt = self.out.codec_context.codec.audio_formats[0].name
            self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
            self.rate = rate

    def feed(self, container: Any, until: float | None) -> None:
        """Mux the sound that starts before ``until`` seconds of the input (None: all that is left)."""
        tb = self.stream.time_base
        while not self.done:
            if self.pending is None:
                try:
                    packet = next(self.packets)
                except StopIteration:
                    self.done = True
                    break
                except self.av.FFmpegError:
                    self.done = True  # damaged sound ends the sound; the video's reader reports damage
                    break
                if packet.dts is None or packet.pts is None:
                    continue
                self.pending = packet
            packet = self.pending
            at = float(packet.pts * tb)
            if until is not None and at >= until - 1e-9:
                return
            self.pending = None
            if at >= self.keep_from:
                self._mux(container, packet)

    def finish(self, container: Any, end: float | None) -> None:
        """The rest of the sound up to ``end`` (None: to its end), then the encoder's last packets."""
        self.feed(container, end)
        if not self.copy:
            self._encode(container, None)

    def _mux(self, container: Any, packet: Any) -> None:
        shift = round(self.start / self.stream.time_base)
        if self.copy:
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = self.out
            container.mux(packet)
            return
        try:
            frames = packet.decode()
        except self.av.FFmpegError:
            return
        for frame in frames:
            self._encode(container, frame)

    def _encode(self, container: Any, frame: Any) -> None:
        for part in self.resampler.resample(frame):
            part.pts = self.samples
            part.time_base = Fraction(1, self.rate)
            self.samples += part.samples
            container.mux(self.out.encode(part))
        if frame is None:
            container.mux(self.out.encode(None))

    def close(self) -> None:
        self.input.close()


# --- container files -----------------------------------------------------------------------------------


class ContainerSink:
    """One output video being written (see the module docstring). ``write`` takes pictures in display
    order with their input pts and duration; ``finish`` flushes, closes and renames; ``abort`` drops it."""

    def __init__(self, target: Path, choice: Choice, mode: str, info: VideoInfo, matrix: tuple[int, ...] | None,
                 start: float, cut: bool, preview: bool) -> None:  # fmt: skip
        av = require_av()
        self.av = av
        self.target = target
        self.choice = choice
        self.info = info
        self.pix_fmt = choice.pix_fmt(mode)
        self.colour = {} if mode == "mask" else info.colour
        self.shift = round(start / info.time_base)  # the first kept frame's pts becomes 0
        self.preview = preview  # a part of the clip: the sound ends with its last frame
        self.last_end = start
        self._stack = ExitStack()
        self.tmp = self._stack.enter_context(atomic.atomic_path(target, keep_suffix=True))
        try:
            self.out = av.open(str(self.tmp), "w", format=choice.muxer)
            fmt = choice.format
            stream = self.out.add_stream(fmt.codec, rate=info.rate or Fraction(25), options=choice.options)
            stream.width, stream.height, stream.pix_fmt = info.width, info.height, self.pix_fmt
            stream.time_base = info.time_base
            stream.codec_context.time_base = info.time_base
            stream.codec_context.thread_count = 0  # the encoder's own threads (libvpx rows, x264 frames)
            if fmt.codec_tag:
                stream.codec_context.codec_tag = fmt.codec_tag
            if mode == "mask":
                stream.codec_context.color_range = 2 if fmt.full_range_masks and self.pix_fmt != "gray" else 1
            else:
                for key, value in info.colour.items():
                    if value:
                        setattr(stream.codec_context, key, value)
            if matrix is not None:
                stream.set_display_matrix(list(matrix))
            self.stream = stream
            self.audio: _Audio | None = None
            if info.audio_codec:
                allowed = CONTAINER_AUDIO.get(choice.muxer)
                copy = allowed is None or info.audio_codec in allowed
                self.audio = _Audio(info.path, self.out, start, copy, AUDIO_ENCODER.get(choice.muxer, "aac"), cut)
        except av.FFmpegError as exc:
            self.abort()
            raise VideoError(f"{target}: cannot write {choice.format.name}: {first_line(exc)}") from None
        except BaseException:
            self.abort()
            raise
        self.frames = 0

    def write(self, picture: np.ndarray, pts: int, duration: int) -> None:
        frame = to_frame(picture, self.pix_fmt, self.colour, self.choice.format.full_range_masks)
        frame.pts = pts - self.shift
        frame.time_base = self.info.time_base
        frame.duration = duration
        try:
            self.out.mux(self.stream.encode(frame))  # the encoder opens at its first frame
        except self.av.FFmpegError as exc:
            raise VideoError(f"{self.target}: cannot encode {self.choice.format.name}: {first_line(exc)}") from None
        self.frames += 1
        self.last_end = float((pts + duration) * self.info.time_base)
        if self.audio is not None:
            self.audio.feed(self.out, self.last_end)

    def finish(self) -> None:
        try:
            self.out.mux(self.stream.encode(None))
            if self.audio is not None:
                self.audio.finish(self.out, self.last_end if self.preview else None)
                self.audio.close()
            self.out.close()
        except self.av.FFmpegError as exc:
            self.abort()
            raise VideoError(f"{self.target}: cannot write: {first_line(exc)}") from None
        except BaseException:
            self.abort()
            raise
        try:
            self._stack.close()  # renames the temporary file to the target
        except OSError as exc:
            raise VideoError(f"{self.target}: cannot write: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Drop everything written (the temporary file is removed)."""
        for closing in (getattr(getattr(self, "audio", None), "close", None), getattr(getattr(self, "out", None), "close", None)):
            if closing is not None:
                try:
                    closing()
                except Exception:  # noqa: BLE001, S110 - already failing; the file is removed below
                    pass
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file


# --- PNG folders ---------------------------------------------------------------------------------------


class PngSequenceSink:
    """A folder of PNG frames (see the module docstring), encoded on ``threads`` threads, in order."""

    def __init__(self, target: Path, options: RenderOptions, info: VideoInfo, start: float, cut: bool,
                 preview: bool, threads: int = 2) -> None:  # fmt: skip
        self.target = target
        self.options = RenderOptions(mode=options.mode, format="png", background=options.background,
                                     colours=options.colours, decontaminate=options.decontaminate,
                                     png_level=options.png_level)  # fmt: skip
        self.info = info
        self.start, self.cut, self.preview, self.last_end = start, cut, preview, start
        self._stack = ExitStack()
        self.stage = self._stack.enter_context(atomic.staged_dir(target.parent))
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="u2net-png")
        self.pending: deque[Future[None]] = deque()
        self.limit = 2 * threads
        self.times: list[float] = []
        self.frames = 0

    def _save(self, n: int, picture: np.ndarray) -> None:
        write_atomic(self.stage / frame_name(n), encode(picture, self.options))

    def write(self, picture: np.ndarray, pts: int, duration: int) -> None:
        self.pending.append(self.pool.submit(self._save, self.frames, picture))
        self.times.append(float(pts * self.info.time_base) - self.start)
        self.last_end = float((pts + duration) * self.info.time_base)
        self.frames += 1
        while len(self.pending) > self.limit:
            self.pending.popleft().result()

    def finish(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
            self.pool.shutdown()
            if self.info.audio_codec:
                self._audio()
            lines = ["# timecode format v2", *(f"{t * 1000:.3f}" for t in self.times)]
            atomic.write_text(self.stage / TIMECODES, "\n".join(lines) + "\n")
            old = None
            if os.path.lexists(self.target):  # made again (--skip-existing found it broken): swap, then delete
                old = self.target.with_name(atomic.temp_name(".old"))
                os.replace(self.target, old)
            atomic.publish([(self.stage, self.target)])
            if old is not None:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        except OSError as exc:
            self.abort()
            raise VideoError(f"{self.target}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            self.abort()
            raise
        self._stack.close()

    def _audio(self) -> None:
        av = require_av()
        path = self.stage / AUDIO_FILE
        out = av.open(str(path), "w", format="matroska")
        try:
            audio = _Audio(self.info.path, out, self.start, True, "libopus", self.cut)
            audio.finish(out, self.last_end if self.preview else None)
            audio.close()
        finally:
            out.close()

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


# --- completeness --------------------------------------------------------------------------------------


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole output: a PNG folder with its timecodes and every frame listed there, the
    last one a complete PNG; or a video whose header opens, whose last packets can be read, and whose end
    reaches the duration its header declares (a cut Matroska file still opens, but ends short)."""
    path = Path(path)
    if path.is_dir():
        try:
            lines = (path / TIMECODES).read_text().split("\n")
        except (OSError, UnicodeDecodeError):
            return False
        count = sum(1 for line in lines[1:] if line.strip())
        return (lines[0] == "# timecode format v2" and count > 0
                and is_complete_picture(path / frame_name(count - 1), "png")
                and all((path / frame_name(n)).is_file() for n in range(count)))  # fmt: skip
    try:
        av = require_av()
        container = open_container(path)
    except VideoError:
        return False
    try:
        if not container.streams.video or not container.duration:
            return False
        declared = container.duration / 1_000_000
        container.seek(max(0, container.duration - 2_000_000), any_frame=False, backward=True)
        end = 0.0
        for packet in container.demux():
            if packet.pts is not None and packet.time_base is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        start = (container.start_time or 0) / 1_000_000
        return end - start >= declared - 0.1
    except av.FFmpegError:
        return False
    finally:
        container.close()
