"""What a video output can be: one table of formats, and the rule that picks a row for a mode and an input.

Like ``runtime.render.FORMATS`` for pictures, ``VIDEO_FORMATS`` holds everything about an output kind in one
row (encoder, container, pixel formats for colour, alpha and masks, encoder settings, its lossless mode), so
the CLI's ``--video-format`` choices and help come from it and a new kind is one row. ``choose`` applies the
issue's rules: a cutout needs alpha (VP9 WebM by default), a mask or a composite keeps the input's codec
family and container, ``--lossless`` asks for a codec's exact mode.

Nothing here imports PyAV, so planning a run (which output name a video gets) works without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.video.smooth import Setting

# Containers a video is read from; an animated GIF is a video too (``is_animated_gif``).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
          ".gif": "gif"}  # fmt: skip

# Video codecs (FFmpeg decoder names) each container can hold as they are; None: any.
CONTAINER_VIDEO: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"h264", "hevc", "mpeg4", "av1", "vp9"}),
    "mov": frozenset({"h264", "hevc", "mpeg4", "prores", "av1"}),
    "matroska": None,
    "webm": frozenset({"vp9", "vp8", "av1"}),
    "avi": frozenset({"h264", "mpeg4", "mjpeg"}),
}
# Audio codecs each container takes by stream copy; anything else is re-encoded to AUDIO_ENCODER's.
CONTAINER_AUDIO: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "opus", "alac", "ac3", "eac3", "flac"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                      "pcm_f32le"}),  # fmt: skip
    "matroska": None,
    "webm": frozenset({"opus", "vorbis"}),
    "avi": frozenset({"mp3", "ac3", "pcm_s16le"}),
}
AUDIO_ENCODER = {"mp4": "aac", "mov": "aac", "matroska": "libopus", "webm": "libopus", "avi": "ac3"}


@dataclass(frozen=True)
class VideoFormat:
    """One ``--video-format``: encoder and container, the pixel format per kind of picture (None: that kind
    cannot be stored: no alpha channel), the encoder's settings, and its lossless settings (None: it has no
    lossless mode). ``full_range_masks``: a mask is stored with luma 0..255 (tagged full range) rather than
    squeezed to 16..235. ``sequence``: not a container but a folder of PNG files."""

    name: str
    help: str
    suffix: str
    codec: str | None
    colour: str
    alpha: str | None
    gray: str
    options: dict[str, str] = field(default_factory=dict)
    alpha_options: dict[str, str] = field(default_factory=dict)  # replace ``options`` for pictures with alpha
    lossless: dict[str, str] | None = None
    full_range_masks: bool = True
    codec_tag: str | None = None
    sequence: bool = False

    @property
    def muxer(self) -> str:
        return MUXERS.get(self.suffix, "")


_X264 = {"preset": "veryfast", "crf": "18"}
# Real-time VP9: about 3x the speed of "good" at speed 8 for files ~1.6x larger (docs/video.md); crf 30 keeps
# edges clean, and the alpha plane (a second VP9 stream) gets the same quantiser.
_VP9 = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "30", "b": "0"}

VIDEO_FORMATS: dict[str, VideoFormat] = {f.name: f for f in (
    VideoFormat("webm", "VP9 in WebM; cutouts keep alpha (yuva420p), as browsers and editors read it",
                ".webm", "libvpx-vp9", "yuv420p", "yuva420p", "yuv420p", _VP9, {},
                {"lossless": "1", "deadline": "good", "cpu-used": "5", "row-mt": "1"}),
    VideoFormat("prores", "ProRes in MOV: 4444 with alpha for cutouts, 422 HQ otherwise (editing intermediates)",
                ".mov", "prores_ks", "yuv422p10le", "yuva444p10le", "yuv422p10le",
                {"profile": "3", "vendor": "apl0"}, {"profile": "4", "vendor": "apl0", "alpha_bits": "16"},
                None, full_range_masks=False),
    VideoFormat("png", "a folder of PNG files (RGBA for cutouts), audio beside them in audio.mka",
                "", None, "bgr24", "bgra", "gray", lossless={}, sequence=True),
    VideoFormat("ffv1", "FFV1 in Matroska: lossless, RGB(A) or 8-bit gray", ".mkv", "ffv1", "bgr0", "bgra", "gray",
                {"level": "3", "slices": "4", "slicecrc": "1", "g": "1"}, {},
                {"level": "3", "slices": "4", "slicecrc": "1", "g": "1"}),
    VideoFormat("h264", "H.264 in MP4 (no alpha)", ".mp4", "libx264", "yuv420p", None, "yuv420p", _X264, {},
                {"preset": "veryfast", "qp": "0"}),
    VideoFormat("hevc", "H.265 in MP4 (no alpha)", ".mp4", "libx265", "yuv420p", None, "yuv420p",
                {"preset": "veryfast", "crf": "20", "x265-params": "log-level=error"}, {},
                {"preset": "veryfast", "x265-params": "lossless=1:log-level=error"}, codec_tag="hvc1"),
)}  # fmt: skip

# The input's codec (FFmpeg decoder name) -> the row that continues its family; anything else is H.264,
# or VP9 in a WebM container.
FAMILY = {"h264": "h264", "hevc": "hevc", "vp9": "webm", "vp8": "webm", "prores": "prores", "ffv1": "ffv1"}
AUTO = "auto"
FORMAT_CHOICES = (AUTO, *VIDEO_FORMATS)


@dataclass(frozen=True)
class VideoOptions:
    """How a video is cut: which frames, which output kind, how the mask is steadied over time.

    ``start``/``stop``/``step``: frames ``start, start+step, ...`` before ``stop`` (indices in display order,
    ``stop`` None = the end), for previews; kept frames keep their timestamps, so a preview with a step
    plays at the original speed, with the sound. ``format``: a row of ``VIDEO_FORMATS`` or "auto" (``choose``).
    ``lossless``: the codec's exact mode (auto: FFV1). ``smooth``: a row of ``runtime.video.smooth.SETTINGS``
    (or a ``Setting`` of one's own).
    ``max_frames``: refuse longer videos (their declared count, and while decoding).
    """

    format: str = AUTO
    lossless: bool = False
    start: int = 0
    stop: int | None = None
    step: int = 1
    smooth: str | Setting = "medium"
    max_frames: int = 1_000_000

    def __post_init__(self) -> None:
        from runtime.video.smooth import SETTINGS, Setting

        if self.format not in FORMAT_CHOICES:
            raise ValueError(f"video format must be one of {', '.join(FORMAT_CHOICES)}, not {self.format!r}")
        if not isinstance(self.smooth, Setting) and self.smooth not in SETTINGS:
            raise ValueError(f"smooth must be one of {', '.join(SETTINGS)}, not {self.smooth!r}")
        if self.start < 0 or self.step < 1 or (self.stop is not None and self.stop <= self.start):
            raise ValueError(f"frames {self.start}:{self.stop} step {self.step}: need 0 <= A < B and a step >= 1")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, not {self.max_frames}")
        if self.format != AUTO and self.lossless and VIDEO_FORMATS[self.format].lossless is None:
            raise ValueError(f"{self.format} has no lossless mode; use {', '.join(lossless_formats())}")

    @property
    def whole(self) -> bool:
        """Every frame of the clip (no preview selection)."""
        return self.start == 0 and self.stop is None and self.step == 1

    def keeps(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.step == 0 and (self.stop is None or index < self.stop)


def parse_frames(text: str) -> tuple[int, int | None]:
    """'A:B' (frames A..B-1), 'A:' (from A) or ':B' (the first B) -> (start, stop); ValueError otherwise."""
    head, sep, tail = text.partition(":")
    try:
        if not sep:
            raise ValueError
        start = int(head) if head.strip() else 0
        stop = int(tail) if tail.strip() else None
    except ValueError:
        raise ValueError(f"not a frame range: {text!r} (use A:B, A: or :B, frames counted from 0)") from None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"frame range {text!r} is empty or negative (need 0 <= A < B)")
    return start, stop


def lossless_formats() -> list[str]:
    return [f.name for f in VIDEO_FORMATS.values() if f.lossless is not None]


def alpha_formats() -> list[str]:
    return [f.name for f in VIDEO_FORMATS.values() if f.alpha is not None]


@dataclass(frozen=True)
class Choice:
    """The output a video gets: its row, the container (muxer) and suffix, and the encoder settings."""

    format: VideoFormat
    muxer: str
    suffix: str
    options: dict[str, str]

    def pix_fmt(self, mode: str) -> str:
        fmt = self.format
        return fmt.gray if mode == "mask" else fmt.alpha if mode == "cutout" else fmt.colour  # type: ignore[return-value]


def choose(mode: str, video: VideoOptions, source: str | Path, codec: str | None = None) -> Choice:
    """The output for ``mode`` of the input ``source`` (its ``codec`` when known: the family rule needs it;
    without it the container's default codec stands in, which gives the same suffix).

    - ``cutout``: alpha is needed: WebM (VP9 yuva420p) unless a format with alpha is named; a format
      without alpha is a ValueError naming those that have it;
    - ``mask``/``composite``: the input's family (H.264 in, H.264 out), in the input's container when it can
      hold that codec (an animated GIF gives MP4);
    - ``lossless`` with "auto": FFV1 in Matroska, whatever the mode.
    """
    suffix_in = Path(source).suffix.lower()
    name = video.format
    if name == AUTO:
        name = "ffv1" if video.lossless else "webm" if mode == "cutout" else ""
    if name:
        fmt = VIDEO_FORMATS[name]
        if mode == "cutout" and fmt.alpha is None:
            raise ValueError(f"{name} has no alpha channel for cutouts; use {', '.join(alpha_formats())}")
        return Choice(fmt, fmt.muxer, fmt.suffix, _settings(fmt, mode, video.lossless))
    muxer = MUXERS.get(suffix_in, "mp4")
    suffix = suffix_in if muxer in CONTAINER_VIDEO else ".mp4"
    muxer = MUXERS[suffix]
    allowed = CONTAINER_VIDEO[muxer]
    row = FAMILY.get(codec or "", "")
    if not row or (allowed is not None and VIDEO_FORMATS[row].codec and _decoder(row) not in allowed):
        row = "webm" if muxer == "webm" else "h264"
    fmt = VIDEO_FORMATS[row]
    return Choice(fmt, muxer, suffix, _settings(fmt, mode, False))


def _decoder(row: str) -> str:
    """The decoder name of a row's codec (what CONTAINER_VIDEO lists)."""
    return {"webm": "vp9", "h264": "h264", "hevc": "hevc", "prores": "prores", "ffv1": "ffv1"}[row]


def _settings(fmt: VideoFormat, mode: str, lossless: bool) -> dict[str, str]:
    if lossless and fmt.lossless is not None:
        return dict(fmt.lossless)
    if mode == "cutout" and fmt.alpha_options:
        return dict(fmt.alpha_options)
    return dict(fmt.options)


def output_suffix(source: str | Path, mode: str, video: VideoOptions) -> str:
    """The suffix of ``source``'s output ("" for a PNG folder), decided from names alone (for planning)."""
    return choose(mode, video, source).suffix


def is_animated_gif(path: str | Path, limit: int = 1 << 20) -> bool:
    """Whether a GIF holds more than one frame: its blocks are walked (no pixel decoded) until a second image
    descriptor, the trailer or ``limit`` bytes. A GIF that cannot be read is not animated (the image reader
    then says what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return False
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return False
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x2C:  # image descriptor, then an optional local colour table, then the LZW data
            frames += 1
            if frames > 1:
                return True
            if pos + 10 > len(data):
                return False
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1  # + the LZW minimum code size
        elif block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:
            return False  # trailer (0x3B) or something else
        while pos < len(data) and data[pos]:  # sub-blocks until a zero length
            pos += data[pos] + 1
        pos += 1
    return False
