"""Image headers: runtime.io's hand-written parsers against Pillow's lazy ``Image.open``.

Measures what the decompression-bomb check needs before any pixel is decoded (format, width, height,
JPEG EXIF orientation):

1. time per header, per format, from a path and from in-memory bytes, and the bytes each side reads
   (the file object is wrapped and its reads counted); Pillow with ``formats=`` the seven formats and
   without it;
2. Pillow's one-off costs in fresh processes: ``import PIL.Image`` and the first ``Image.open`` (plugin
   registration: the five "preinit" plugins, or all ~45 for WebP, TIFF or an unknown file);
3. the answers of both on every awkward file the tests build (built with the tests' own helpers) plus
   the crafted cases the tests lack (OS/2 and top-down BMPs, 0-size images, broken EXIF, GIF frame and
   WebP bombs, BigTIFF, PAM/PFM, JXL, non-images Pillow knows): the hand-written ImageInfo or ImageError
   against Pillow's size/format/orientation or exception, with what OpenCV actually decodes (``.venv``
   and, when present, ``.venv-serve``) as the referee, decoded in a child process under RLIMIT_AS.

    python -m benchmarks.headers                 # everything (about two minutes on 2 cores)
    python -m benchmarks.headers --quick         # fewer, shorter timing rounds
    python -m benchmarks.headers --no-timing     # only the agreement table
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import stat
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import timeit
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from benchmarks.common import REPO, hardware_header
from runtime.io import DEFAULT_MAX_PIXELS, ImageError, ImageInfo, _probe_file, probe

PIL_FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"]  # the seven runtime.io knows, in Pillow's names
_SAME_FORMAT = {"PNM": {"PPM"}, "WebP": {"WEBP"}, "JPEG": {"JPEG", "MPO"}}
SERVE_PYTHON = REPO / ".venv-serve" / "bin" / "python"


class CountingBytesIO(io.BytesIO):
    """A BytesIO that counts the bytes its readers take (re-reads after a seek count again)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self.taken += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = super().readline(size)
        self.taken += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.taken += n
        return n


def pillow_info(source: str | os.PathLike | io.BytesIO, formats: list[str] | None = PIL_FORMATS) -> tuple:
    """What a Pillow-based probe would return: (format, width, height, orientation); orientation for JPEG only.

    ``getexif()`` is asked of JPEGs only: on a PNG without an eXIf chunk before IDAT it calls ``load()``,
    which decodes every pixel (the chunk may follow the image data).
    """
    with Image.open(source, formats=formats) as im:
        orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "MPO") else 1
        return im.format, im.width, im.height, orientation


# --- 1. timing per format ---


def _photo(width: int, height: int) -> np.ndarray:
    """RGB with texture and edges: a small random scene upscaled, plus sensor-like noise."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-6, 6, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _camera_exif(orientation: int) -> bytes:
    """An EXIF block of the size a camera writes (~20 kB): make, model, date, orientation and a maker note."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Camera", "Model 1", "2024:05:01 12:00:00"
    exif[0x0112] = orientation
    exif[0x927C] = bytes(range(256)) * 80
    return exif.tobytes()


def timing_samples(width: int, height: int) -> list[tuple[str, bytes]]:
    rgb = _photo(width, height)

    def encode(fmt: str, image: np.ndarray | Image.Image = rgb, **kwargs: Any) -> bytes:
        buf = io.BytesIO()
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt, **kwargs)
        return buf.getvalue()

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    samples = [
        ("JPEG", encode("JPEG", quality=90)),
        ("JPEG + EXIF (o=6, 20 kB)", encode("JPEG", quality=90, exif=_camera_exif(6))),
        ("PNG", encode("PNG", compress_level=1)),
        ("WebP lossy (VP8)", encode("WEBP", quality=80)),
        ("WebP lossless (VP8L)", encode("WEBP", lossless=True, method=0)),
        ("WebP extended (VP8X, alpha)", encode("WEBP", rgba, quality=80)),
        ("BMP", encode("BMP")),
        ("GIF", encode("GIF", Image.fromarray(rgb).quantize(64))),
        ("TIFF (LZW)", encode("TIFF", compression="tiff_lzw")),
        ("PNM (PPM)", encode("PPM")),
    ]
    assert samples[5][1][12:16] == b"VP8X" and samples[4][1][12:16] == b"VP8L" and samples[3][1][12:16] == b"VP8 "
    return samples


def _time_us(fn: Callable[[], object], repeat: int, budget: float) -> float:
    """Best per-call time of ``repeat`` rounds of about ``budget`` seconds each, in microseconds."""
    fn()
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < budget / 4:
        number *= 4
    number = max(1, int(number * budget / max(timer.timeit(number), 1e-9)))
    return min(timer.repeat(repeat, number)) / number * 1e6


def timing_table(width: int, height: int, repeat: int, budget: float, folder: Path) -> list[str]:
    rows = [
        "| format | file kB | hand path µs | hand bytes µs | Pillow path µs | Pillow bytes µs "
        "| Pillow path, formats=None µs | bytes read hand | bytes read Pillow |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i, (name, data) in enumerate(timing_samples(width, height)):
        path = folder / f"t{i}"
        path.write_bytes(data)
        hand, pil = probe(path), pillow_info(path)
        assert (hand.width, hand.height, hand.orientation) == pil[1:], (name, hand, pil)
        times = [
            _time_us(lambda p=path: probe(p), repeat, budget),
            _time_us(lambda d=data: _probe_file(io.BytesIO(d), "<bytes>"), repeat, budget),
            _time_us(lambda p=path: pillow_info(p), repeat, budget),
            _time_us(lambda d=data: pillow_info(io.BytesIO(d)), repeat, budget),
            _time_us(lambda p=path: pillow_info(p, None), repeat, budget),
        ]
        counted_hand, counted_pil = CountingBytesIO(data), CountingBytesIO(data)
        _probe_file(counted_hand, "<bytes>")
        pillow_info(counted_pil)
        rows.append(
            f"| {name} | {len(data) / 1024:.0f} | "
            + " | ".join(f"{t:.1f}" for t in times)
            + f" | {counted_hand.taken:,} | {counted_pil.taken:,} |"
        )
    return rows


# --- 2. Pillow's one-off costs in a fresh process ---

_FIRST_OPEN = """
import json, sys, time
t0 = time.perf_counter()
from PIL import Image
if sys.argv[3] == "explicit":  # the seven plugins by name: Image.open then never needs Image.init()
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, PpmImagePlugin
    from PIL import TiffImagePlugin, WebPImagePlugin
t1 = time.perf_counter()
formats = json.loads(sys.argv[2])
try:
    with Image.open(sys.argv[1], formats=formats) as im:
        im.size
except Exception:
    pass
t2 = time.perf_counter()
try:
    with Image.open(sys.argv[1], formats=formats) as im:
        im.size
except Exception:
    pass
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, sum(m.startswith("PIL.") for m in sys.modules)]))
"""

_FIRST_PROBE = """
import json, sys, time
import cv2, numpy
t0 = time.perf_counter()
from runtime.io import probe
t1 = time.perf_counter()
probe(sys.argv[1])
t2 = time.perf_counter()
probe(sys.argv[1])
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, 0]))
"""


def first_open_table(folder: Path, runs: int) -> list[str]:
    samples = dict(timing_samples(256, 192))
    files = {}
    for key, name in (("jpg", "JPEG"), ("webp", "WebP lossy (VP8)"), ("tif", "TIFF (LZW)")):
        files[key] = folder / f"first.{key}"
        files[key].write_bytes(samples[name])
    files["txt"] = folder / "first.txt"
    files["txt"].write_text("just some text, not a picture\n")
    scenarios = [
        ("Pillow: JPEG, formats=7", _FIRST_OPEN, files["jpg"], PIL_FORMATS, ""),
        ("Pillow: JPEG, formats=None", _FIRST_OPEN, files["jpg"], None, ""),
        ("Pillow: WebP, formats=7", _FIRST_OPEN, files["webp"], PIL_FORMATS, ""),
        ("Pillow: TIFF, formats=7", _FIRST_OPEN, files["tif"], PIL_FORMATS, ""),
        ("Pillow: text file, formats=7", _FIRST_OPEN, files["txt"], PIL_FORMATS, ""),
        ("Pillow: text file, formats=None", _FIRST_OPEN, files["txt"], None, ""),
        ("Pillow: WebP, formats=7, 7 plugins imported", _FIRST_OPEN, files["webp"], PIL_FORMATS, "explicit"),
        ("Pillow: text file, formats=7, 7 plugins imported", _FIRST_OPEN, files["txt"], PIL_FORMATS, "explicit"),
        ("hand-written: JPEG (cv2, numpy preloaded)", _FIRST_PROBE, files["jpg"], None, ""),
    ]
    rows = [
        "| fresh process | import ms | first open ms | second open ms | PIL modules loaded |",
        "|---|--:|--:|--:|--:|",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name, code, path, formats, how in scenarios:
        results = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", code, str(path), json.dumps(formats), how],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            results.append(json.loads(out))
        med = [statistics.median(r[i] for r in results) for i in range(4)]
        modules = str(int(med[3])) if code is _FIRST_OPEN else "-"
        label = "import runtime.io" if code is _FIRST_PROBE else "import PIL.Image"
        rows.append(f"| {name} ({label}) | {med[0] * 1e3:.1f} | {med[1] * 1e3:.2f} | {med[2] * 1e3:.3f} | {modules} |")
    return rows


# --- 3. the awkward files ---


@dataclass
class Case:
    name: str
    origin: str
    path: Path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(fmt: str, image: np.ndarray | Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _jpeg_with_app1(jpeg: bytes, *bodies: bytes) -> bytes:
    segments = b"".join(b"\xff\xe1" + struct.pack(">H", len(b) + 2) + b for b in bodies)
    return jpeg[:2] + segments + jpeg[2:]


def _exif_body(entries: list[tuple[int, int, int, bytes]], order: str = "II", ifd_offset: int = 8) -> bytes:
    """'Exif\\0\\0' + a TIFF structure whose IFD0 holds (tag, type, count, 4-byte value) entries."""
    e = "<" if order == "II" else ">"
    ifd = struct.pack(e + "H", len(entries)) + b"".join(struct.pack(e + "HHI", t, k, c) + v for t, k, c, v in entries)
    return b"Exif\x00\x00" + order.encode() + struct.pack(e + "HI", 42, ifd_offset) + ifd + struct.pack(e + "I", 0)


def _tiff(order: str, entries: list[tuple[int, int, int]], pixels: bytes = b"") -> bytes:
    """A minimal TIFF: header, IFD0 with (tag, type, value) entries, then ``pixels``."""
    e = "<" if order == "II" else ">"
    n = len(entries) + 1
    strip = 8 + 2 + 12 * n + 4
    ifd = [(t, k, v) for t, k, v in entries] + [(273, 4, strip)]
    body = struct.pack(e + "H", n)
    for tag, kind, value in sorted(ifd):
        body += struct.pack(e + "HHI", tag, kind, 1) + (
            struct.pack(e + "HH", value, 0) if kind == 3 else struct.pack(e + "I", value)
        )
    return order.encode() + struct.pack(e + "HI", 42, 8) + body + struct.pack(e + "I", 0) + pixels


def _gif_frame_bomb(width: int, height: int) -> bytes:
    """A GIF whose logical screen is 1x1 while its one frame's descriptor declares width x height."""
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + descriptor
        + b"\x02\x02\x44\x01\x00\x3b"
    )


def build_cases(folder: Path) -> list[Case]:
    """Write every case into ``folder``; the tests' own helpers build the tests' cases."""
    sys.path.insert(0, str(REPO / "tests"))
    import test_codecs as tc
    import test_runtime_cli as tcli
    import test_runtime_io as tio
    import test_safe_runs as tsr
    from runtime_helpers import save, scene

    cases: list[Case] = []

    def add(name: str, origin: str, content: bytes | Callable[[Path], object], suffix: str = "") -> None:
        path = folder / f"{len(cases):03d}{suffix}"
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        cases.append(Case(name, origin, path))

    # tests/test_runtime_io.py
    for suffix, fmt, kwargs, _ in tio.test_probe_and_read_every_format.pytestmark[0].args[1]:
        add(
            f"{fmt} {kwargs or ''} 53x37".replace(" {", " {").strip(),
            "io: every format",
            lambda p, f=fmt, k=kwargs: save(p, scene(37, 53), f, **k),
            suffix,
        )
    add(
        "WebP with alpha (VP8X)",
        "io: webp alpha",
        lambda p: save(p, np.dstack([scene(30, 41), np.full((30, 41), 128, np.uint8)]), "WEBP", quality=70),
    )
    add("JPEG EXIF o=6 (Pillow-written)", "io: exif", lambda p: tio._exif_jpeg(p, np.zeros((20, 40, 3), np.uint8), 6))
    add(
        "JPEG EXIF o=8, 640x480",
        "io: reduced",
        lambda p: tio._exif_jpeg(p, cv2.resize(scene(48, 64), (640, 480), interpolation=cv2.INTER_NEAREST), 8),
    )
    add("PNG gray (L)", "io: odd pixels", lambda p: save(p, scene(24, 32)[..., 0], "PNG", mode="L"))
    add(
        "PNG RGBA",
        "io: odd pixels",
        lambda p: save(p, np.dstack([scene(24, 32), np.full((24, 32), 7, np.uint8)]), "PNG"),
    )
    add("PNG palette", "io: odd pixels", _encode("PNG", Image.fromarray(scene(24, 32)).quantize(16)))
    add("PNG 16-bit", "io: odd pixels", cv2.imencode(".png", scene(24, 32)[..., 0].astype(np.uint16) << 8)[1].tobytes())
    add("PNG bomb 60000x60000", "io: bomb", lambda p: tio._png_bomb(p, 60_000, 60_000))
    add("JPEG declaring 20000x10000", "io: bomb", lambda p: tio._jpeg_declaring(p, 20_000, 10_000))
    for name, content, _ in tio.test_unreadable_files_name_the_file.pytestmark[0].args[1]:
        add(f"{name} {content[:12]!r}", "io: unreadable", content)
    for fmt in ("JPEG", "PNG", "WEBP"):
        full = _encode(fmt, scene(64, 64))
        add(f"{fmt} cut at 2/3", "io: truncated", full[: len(full) * 2 // 3])
    add("missing path", "io: missing", lambda p: None)
    add("a folder", "io: folder", lambda p: p.mkdir())
    # tests/test_safe_runs.py
    add("FIFO", "safe: rule 2", lambda p: os.mkfifo(p))
    add("UNIX socket", "safe: rule 2", lambda p: None)  # bound below, kept open while the cases run
    jpeg = tsr.jpeg_bytes(scene(96, 128))
    add("motion photo (JPEG + MP4)", "safe: rule 5", jpeg + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    add("JPEG + marker-like tail", "safe: rule 5", jpeg + b"\xff\xda\x00\x08junk" * 10)
    add("JPEG cut at 2/3", "safe: rule 5", jpeg[: len(jpeg) * 2 // 3])
    add("JPEG cut at 1/2", "safe: training", jpeg[: len(jpeg) // 2])
    add("HEIC (ftypheic + zeros)", "safe: training", b"\x00\x00\x00\x18ftypheic" + bytes(100))
    add("HEIC (ftypheic mif1)", "safe: undecodable", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    add("AVIF (ftypavif)", "safe: undecodable", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64))
    png = bytearray(cv2.imencode(".png", scene(64, 96))[1].tobytes())
    png[60] ^= 0xFF
    add("PNG with a flipped byte at 60 (CRC)", "safe: rule 9", bytes(png))
    corrupt = bytearray(tsr.jpeg_bytes(scene(256, 256, seed=2)))
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\x00" * 64
    add("JPEG with 64 zero bytes mid-scan", "safe: rule 9", bytes(corrupt))
    # tests/test_codecs.py
    plain = tc.jpeg_bytes(tc.photo(240, 352, seed=1), quality=95)
    for order in ("II", "MM"):
        for orientation in range(1, 9):
            add(f"JPEG EXIF {order} o={orientation}", "codecs: orientations", tc.with_exif(plain, orientation, order))
    data = tc.jpeg_bytes(tc.photo())
    sos = data.find(b"\xff\xda")
    add("grayscale JPEG", "codecs", tc.jpeg_bytes(tc.photo()[..., 1]))
    add("progressive JPEG", "codecs", tc.jpeg_bytes(tc.photo(), progressive=1))
    add("CMYK JPEG", "codecs", _encode("JPEG", Image.fromarray(tc.photo()[..., ::-1]).convert("CMYK"), quality=90))
    add("JPEG with a stray RST marker", "codecs", data[: len(data) // 2] + b"\xff\xd5" + data[len(data) // 2 :])
    add("JPEG cut in its header", "codecs: truncated", data[: sos // 2])
    add("JPEG cut in its scan", "codecs: truncated", data[: (sos + len(data)) // 2])
    add("JPEG without its EOI", "codecs: truncated", data[:-2])
    add("JPEG with a nonsense scan", "codecs: garbage", data[: sos + 2] + b"\x00\x00garbage" + b"\xff\xd9")
    # tests/test_runtime_cli.py, tests/test_runtime_api.py
    add("JPEG bomb 20000x20000", "cli: bomb", tcli._bomb)
    add("PNG signature + 300 random bytes", "cli", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(300))
    add("text 'hello' as .jpg", "cli", b"hello")
    add("JPEG cut at 1/2 (64x64)", "cli", (full := _encode("JPEG", scene(64, 64)))[: len(full) // 2])
    add("PNG signature + ' broken'", "cli: --bg", b"\x89PNG\r\n\x1a\n broken")
    add("readme.txt", "cli", b"named explicitly, so it is tried and reported")
    add("b'\\x08\\x07garbage' * 10", "api", b"\x08\x07garbage" * 10)
    # Not in the tests: the rest of the awkward kinds.
    bmp = bytearray(_encode("BMP", scene(37, 53)))
    bmp[22:26] = struct.pack("<i", -37)
    add("BMP top-down (height -37)", "extra", bytes(bmp))
    core = struct.pack("<IHHHH", 12, 3, 2, 1, 24)
    rows = (b"\x00\x00\xff" * 3 + b"\x00\x00\x00") * 2  # 3 red pixels, padded to 4 bytes
    add(
        "BMP OS/2 1.x (12-byte header) 3x2",
        "extra",
        b"BM" + struct.pack("<IHHI", 26 + len(rows), 0, 0, 26) + core + rows,
    )
    bmp = bytearray(_encode("BMP", scene(37, 53)))
    bmp[18:22] = struct.pack("<i", 0)
    add("BMP width 0", "extra", bytes(bmp))
    bmp[18:26] = struct.pack("<ii", 50_000, 50_000)
    add("BMP declaring 50000x50000", "extra", bytes(bmp))
    add("BMP cut to 20 bytes", "extra", _encode("BMP", scene(37, 53))[:20])
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    add("PNG 0x0", "extra", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    png = _encode("PNG", scene(37, 53))
    add("PNG with a CgBI chunk first (Apple)", "extra", png[:8] + _png_chunk(b"CgBI", b"\x50\x00\x20\x06") + png[8:])
    exif = Image.Exif()
    exif[0x0112] = 6
    add("PNG with eXIf o=6", "extra", _encode("PNG", scene(37, 53), exif=exif.tobytes()))
    add("WebP with EXIF o=6", "extra", _encode("WEBP", scene(37, 53), quality=80, exif=exif.tobytes()))
    add("TIFF with Orientation=6", "extra", _encode("TIFF", scene(37, 53), tiffinfo={274: 6}))
    add("GIF 0x0 screen", "extra", b"GIF89a" + struct.pack("<HHBBB", 0, 0, 0, 0, 0) + b"\x3b")
    add("GIF bomb: 1x1 screen, 30000x30000 frame", "extra", _gif_frame_bomb(30_000, 30_000))
    add("GIF cut to 8 bytes", "extra", b"GIF89a\x35\x00")
    rgb = np.zeros((30, 41, 3), np.uint8)
    webp = bytearray(_encode("WEBP", rgb, lossless=True))
    bits = int.from_bytes(webp[21:25], "little") & ~((1 << 28) - 1) | 16383 | 16383 << 14
    webp[21:25] = bits.to_bytes(4, "little")
    add("WebP VP8L declaring 16384x16384 (34 B)", "extra", bytes(webp))
    bits = bits & ~((1 << 28) - 1) | 11999 | 11999 << 14
    webp[21:25] = bits.to_bytes(4, "little")
    add("WebP VP8L declaring 12000x12000 (144 MP)", "extra", bytes(webp))
    webp = bytearray(_encode("WEBP", rgb, quality=80))
    webp[26:30] = struct.pack("<HH", 16383, 16383)
    add("WebP VP8 declaring 16383x16383 (60 B)", "extra", bytes(webp))
    webp = bytearray(_encode("WEBP", np.dstack([rgb, np.full((30, 41), 128, np.uint8)]), quality=70))
    webp[24:30] = (15_999).to_bytes(3, "little") * 2
    add("WebP VP8X canvas 16000x16000, frame 41x30", "extra", bytes(webp))
    webp = bytearray(_encode("WEBP", rgb, lossless=True))
    webp[20] = 0x00
    add("WebP VP8L with a bad signature byte", "extra", bytes(webp))
    webp = bytearray(_encode("WEBP", rgb, quality=80))
    webp[23:26] = b"\x00\x00\x00"
    add("WebP VP8 with a bad start code", "extra", bytes(webp))
    add("WebP unknown chunk 'VP8Y'", "extra", b"RIFF\x20\x00\x00\x00WEBPVP8Y" + bytes(24))
    add("WebP cut to 20 bytes", "extra", _encode("WEBP", rgb, quality=80)[:20])
    frames = [Image.fromarray(scene(37, 53, seed=s)) for s in range(2)]
    add("WebP animated (2 frames)", "extra", _encode("WEBP", frames[0], save_all=True, append_images=frames[1:]))
    add(
        "TIFF big-endian (MM) 3x2",
        "extra",
        _tiff(
            "MM", [(256, 3, 3), (257, 3, 2), (258, 3, 8), (259, 3, 1), (262, 3, 1), (278, 3, 2), (279, 4, 6)], bytes(6)
        ),
    )
    add("TIFF without size tags", "extra", _tiff("II", [(258, 3, 8), (259, 3, 1), (262, 3, 1), (279, 4, 6)], bytes(6)))
    add(
        "TIFF declaring 60000x60000 (LONG)",
        "extra",
        _tiff("II", [(256, 4, 60_000), (257, 4, 60_000), (258, 3, 8), (259, 3, 1), (262, 3, 1), (279, 4, 6)], bytes(6)),
    )
    add("TIFF with its IFD past the end", "extra", b"II*\x00" + struct.pack("<I", 10_000) + bytes(16))
    add("BigTIFF", "extra", lambda p: Image.fromarray(scene(37, 53)).save(p, "TIFF", big_tiff=True))
    add("JPEG EXIF: bad TIFF header", "extra", _jpeg_with_app1(plain, b"Exif\x00\x00XX*\x00garbage"))
    add("JPEG EXIF: IFD offset past the block", "extra", _jpeg_with_app1(plain, _exif_body([], ifd_offset=5000)))
    for value in (0, 9):
        add(
            f"JPEG EXIF o={value} (out of range)",
            "extra",
            _jpeg_with_app1(plain, _exif_body([(0x0112, 3, 1, struct.pack("<HH", value, 0))])),
        )
    add(
        "JPEG EXIF o=6 stored as LONG",
        "extra",
        _jpeg_with_app1(plain, _exif_body([(0x0112, 4, 1, struct.pack("<I", 6))])),
    )
    add(
        "JPEG two EXIF blocks (o=6, then o=1)",
        "extra",
        _jpeg_with_app1(
            plain,
            _exif_body([(0x0112, 3, 1, struct.pack("<HH", 6, 0))]),
            _exif_body([(0x0112, 3, 1, struct.pack("<HH", 1, 0))]),
        ),
    )
    sof = plain.index(b"\xff\xc0")
    add("JPEG SOF height 0 (DNL)", "extra", plain[: sof + 5] + b"\x00\x00" + plain[sof + 7 :])
    add("JPEG SOI + EOI only", "extra", b"\xff\xd8\xff\xd9")
    add(
        "JPEG declaring 9500x9500 (90.3 MP)",
        "extra",
        plain[: sof + 5] + struct.pack(">HH", 9500, 9500) + plain[sof + 9 :],
    )
    add(
        "JPEG declaring 12250x12250 (150 MP)",
        "extra",
        plain[: sof + 5] + struct.pack(">HH", 12250, 12250) + plain[sof + 9 :],
    )
    add("PGM P5 with comments", "extra", b"P5\n# a comment\n# another\n4 3\n255\n" + bytes(12))
    add("PBM P4", "extra", _encode("PPM", Image.fromarray(scene(37, 53)[..., 0]).convert("1")))
    add("PBM P1 (ASCII)", "extra", b"P1\n3 2\n0 1 0\n1 0 1\n")
    add("PPM comment between sizes", "extra", b"P6 4 # width\n3\n255\n" + bytes(36))
    add("PAM P7", "extra", b"P7\nWIDTH 4\nHEIGHT 3\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(36))
    add("PFM (Pf)", "extra", b"Pf\n4 3\n-1.0\n" + bytes(48))
    add("PPM declaring 100000x100000", "extra", b"P6\n100000 100000\n255\n" + bytes(64))
    add("PPM negative width", "extra", b"P6\n-5 10\n255\n" + bytes(64))
    add("JPEG XL codestream", "extra", b"\xff\x0a\xfa\x7f" + bytes(60))
    add("JPEG XL container", "extra", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(60))
    add("HEIF (ftypmif1)", "extra", b"\x00\x00\x00\x18ftypmif1" + bytes(64))
    add("JPEG 2000 (OpenCV-written)", "extra", cv2.imencode(".jp2", scene(37, 53))[1].tobytes())
    add("AVIF (Pillow-written)", "extra", _encode("AVIF", scene(37, 53)))
    add("ICO (Pillow-written)", "extra", _encode("ICO", scene(32, 32)))
    add("TGA (Pillow-written)", "extra", _encode("TGA", scene(37, 53)))
    add("Sun raster (OpenCV-written)", "extra", cv2.imencode(".ras", scene(37, 53))[1].tobytes())
    add("Radiance HDR (OpenCV-written)", "extra", cv2.imencode(".hdr", scene(37, 53).astype(np.float32))[1].tobytes())
    add("PDF", "extra", b"%PDF-1.7\n" + bytes(64))
    add("SVG", "extra", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    return cases


def _strip(message: str, path: Path) -> str:
    return message.replace(f"{path}: ", "").replace(f"'{path}'", "<path>").replace(str(path), "<path>")


def hand_answer(path: Path) -> ImageInfo | str:
    try:
        return probe(path)
    except ImageError as exc:
        return "ImageError: " + _strip(str(exc), path)


def _pillow_call(path: Path, formats: list[str] | None, limit: int | None) -> tuple | str:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = pillow_info(path, formats)
        if caught:
            result = (*result, "; ".join(f"{w.category.__name__}" for w in caught))
        return result
    except Exception as exc:  # every failure is an answer here
        return f"{type(exc).__name__}: " + _strip(str(exc), path)[:90]
    finally:
        Image.MAX_IMAGE_PIXELS = old


def pillow_answer(path: Path, formats: list[str] | None, limit: int | None) -> tuple | str:
    """Pillow given the path, as ``Image.open(path)`` would be; a FIFO is opened in a thread that may block."""
    if path.is_fifo():
        box: list[tuple | str] = []
        thread = threading.Thread(target=lambda: box.append(_pillow_call(path, formats, limit)), daemon=True)
        thread.start()
        thread.join(1.0)
        if thread.is_alive():  # blocked in open(): give it a writer that closes at once
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(5.0)
            return "BLOCKS until a writer appears, then " + (box[0] if box and isinstance(box[0], str) else "?")
        return box[0]
    return _pillow_call(path, formats, limit)


def _show(answer: ImageInfo | tuple | str) -> str:
    if isinstance(answer, str):
        return answer.replace("|", "/")
    if isinstance(answer, ImageInfo):
        return f"{answer.format} {answer.width}x{answer.height}" + (
            f" o={answer.orientation}" if answer.orientation != 1 else ""
        )
    fmt, width, height, orientation, *warned = answer
    return (
        f"{fmt} {width}x{height}"
        + (f" o={orientation}" if orientation != 1 else "")
        + (f" + {warned[0]}" if warned else "")
    )


_DECODE = """
import json, os, resource, sys
import cv2, numpy as np
vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))
resource.setrlimit(resource.RLIMIT_AS, (vm + 2 * 2**30, resource.RLIM_INFINITY))
for path in sys.argv[1:]:
    try:
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        answer = "fails" if image is None else f"{image.shape[1]}x{image.shape[0]}"
    except cv2.error as exc:
        answer = "error: " + str(exc).strip().splitlines()[-1][-60:]
    except Exception as exc:
        answer = type(exc).__name__
    print(json.dumps([path, answer]), flush=True)
"""


def opencv_answers(python: Path, cases: list[Case]) -> dict[Path, str]:
    """What OpenCV's imdecode makes of each regular file (displayed WxH), in a child process under RLIMIT_AS."""
    todo = [c.path for c in cases if c.path.exists() and stat.S_ISREG(c.path.stat().st_mode)]
    answers: dict[Path, str] = {}
    env = {**os.environ, "OPENCV_LOG_LEVEL": "SILENT", "OPENCV_IO_MAX_IMAGE_PIXELS": str(2**31)}
    while todo:
        proc = subprocess.run([str(python), "-c", _DECODE, *map(str, todo)], capture_output=True, text=True, env=env)
        for line in proc.stdout.splitlines():
            path, answer = json.loads(line)
            answers[Path(path)] = answer
        todo = [p for p in todo if p not in answers]
        if todo:  # the child died on todo[0]
            answers[todo.pop(0)] = f"crashed (exit {proc.returncode})"
    return answers


def _shape(answer: ImageInfo | tuple) -> str:
    """Displayed WxH of an accepted answer, as OpenCV reports it."""
    if isinstance(answer, ImageInfo):
        height, width = answer.shape
        return f"{width}x{height}"
    _, width, height, orientation, *_ = answer
    return f"{height}x{width}" if orientation in (5, 6, 7, 8) else f"{width}x{height}"


def verdict(hand: ImageInfo | str, pil: tuple | str, cv: str) -> str:
    """agree, or DISAGREE with the side OpenCV's decode bears out."""
    decodes = "x" in cv and not cv.startswith(("error", "fails", "crashed"))
    if isinstance(hand, str) and isinstance(pil, str):
        return f"agree (both refuse, though OpenCV decodes {cv})" if decodes else "agree (both refuse)"
    if not isinstance(hand, str) and not isinstance(pil, str):
        fmt_ok = pil[0] == hand.format or pil[0] in _SAME_FORMAT.get(hand.format, ())
        if (hand.width, hand.height, hand.orientation) == tuple(pil[1:4]) and fmt_ok:
            return "agree" if not decodes or cv == _shape(hand) else f"agree, but OpenCV turns it to {cv}"
        if not decodes:
            return "**DISAGREE** (size/orientation); OpenCV decodes neither"
        if _shape(hand) == _shape(pil) == cv:
            return f"**DISAGREE** (orientation {hand.orientation} vs {pil[3]}); OpenCV shows {cv}, as both imply"
        right = [name for name, a in (("hand", hand), ("Pillow", pil)) if _shape(a) == cv]
        return f"**DISAGREE** (size/orientation); OpenCV sides with {' and '.join(right) or 'neither'}"
    accepter = "hand" if not isinstance(hand, str) else "Pillow"
    answer = hand if accepter == "hand" else pil
    big = (answer.pixels if isinstance(answer, ImageInfo) else answer[1] * answer[2]) > DEFAULT_MAX_PIXELS
    if big:
        return f"**DISAGREE**: only {accepter} reads the size (> limit, refused later either way)"
    if decodes:
        return f"**DISAGREE**: {accepter} right (OpenCV decodes {cv})"
    return f"**DISAGREE**: the refusing side right (OpenCV cannot decode; {accepter}'s accept fails later)"


_OPEN_MEMORY = """
import json, sys
from PIL import Image
from runtime.io import probe
Image.init()
def status():
    return {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(("VmPeak", "VmHWM"))}
before = status()
try:
    if sys.argv[1] == "hand":
        info = probe(sys.argv[2])
        answer = f"{info.width}x{info.height}"
    else:
        Image.MAX_IMAGE_PIXELS = None if sys.argv[4] == "none" else Image.MAX_IMAGE_PIXELS
        with Image.open(sys.argv[2], formats=json.loads(sys.argv[3])) as im:
            answer = f"{im.width}x{im.height}"
except Exception as exc:
    answer = type(exc).__name__
after = status()
print(json.dumps([(after["VmPeak"] - before["VmPeak"]) / 1024, (after["VmHWM"] - before["VmHWM"]) / 1024, answer]))
"""


def open_memory_table(cases: list[Case]) -> list[str]:
    """Address space (VmPeak) and resident memory (VmHWM) that merely opening each bomb takes, per side."""
    rows = [
        "| bomb | file bytes | hand: answer, VmPeak +MiB, VmHWM +MiB | Pillow, default limit: same | "
        "Pillow, MAX_IMAGE_PIXELS=None: same |",
        "|---|--:|---|---|---|",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for case in cases:
        if "declaring" not in case.name and "bomb" not in case.name:
            continue
        cells = []
        for side, limit in (("hand", ""), ("pillow", "default"), ("pillow", "none")):
            out = subprocess.run(
                [sys.executable, "-c", _OPEN_MEMORY, side, str(case.path), json.dumps(PIL_FORMATS), limit],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            peak, hwm, answer = json.loads(out)
            cells.append(f"{answer}, {peak:+.0f}, {hwm:+.0f}")
        rows.append(f"| {case.name} | {case.path.stat().st_size:,} | {' | '.join(cells)} |")
    return rows


def agreement_table(cases: list[Case], serve_python: Path | None) -> list[str]:
    server = socket.socket(socket.AF_UNIX)
    sock_case = next(c for c in cases if c.name == "UNIX socket")
    server.bind(str(sock_case.path))
    try:
        cv_main = opencv_answers(Path(sys.executable), cases)
        cv_serve = opencv_answers(serve_python, cases) if serve_python else {}
        header = (
            "| # | case (origin) | hand-written probe | Pillow (formats=7, no pixel limit) | Pillow default limit "
            "/ formats=None, where different | OpenCV .venv"
            + (" / .venv-serve" if serve_python else "")
            + " | verdict |"
        )
        rows = [header, "|--:|---|---|---|---|---|---|"]
        disagreements = []
        for i, case in enumerate(cases):
            hand = hand_answer(case.path)
            pil = pillow_answer(case.path, PIL_FORMATS, None)
            extra = []
            for label, answer in (
                ("default", pillow_answer(case.path, PIL_FORMATS, Image.MAX_IMAGE_PIXELS)),
                ("None", pillow_answer(case.path, None, None)),
            ):
                if _show(answer) != _show(pil):
                    extra.append(f"{label}: {_show(answer)}")
            cv = cv_main.get(case.path, "n/a")
            cv_cell = cv + (f" / {cv_serve.get(case.path, 'n/a')}" if serve_python else "")
            judged = verdict(hand, pil, cv)
            if "DISAGREE" in judged:
                disagreements.append(f"{i}. {case.name}: hand {_show(hand)!r} vs Pillow {_show(pil)!r} -> {judged}")
            rows.append(
                f"| {i} | {case.name} ({case.origin}) | {_show(hand)} | {_show(pil)} | {'; '.join(extra)} "
                f"| {cv_cell} | {judged} |"
            )
    finally:
        server.close()
    return [*rows, "", f"Disagreements: {len(disagreements)} of {len(cases)}", *disagreements]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.headers",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Tables are Markdown; the agreement table needs the repository's tests/ "
        "(the cases are built with their helpers).",
    )
    parser.add_argument("--size", default="2016x1512", help="WxH of the timed images (default: %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timing rounds per cell; the best counts (default: %(default)s)"
    )
    parser.add_argument("--budget", type=float, default=0.15, help="seconds per timing round (default: %(default)s)")
    parser.add_argument(
        "--processes",
        type=int,
        default=5,
        help="fresh processes per first-open scenario; the median counts (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 0.05 s, 3 processes")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing tables")
    parser.add_argument("--no-cases", action="store_true", help="skip the agreement table")
    parser.add_argument(
        "--serve-python",
        type=Path,
        default=SERVE_PYTHON,
        help="a second interpreter whose OpenCV also decodes the cases (default: %(default)s, if present)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeat, args.budget, args.processes = 2, 0.05, 3
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(hardware_header())
    print(
        f"Pillow {Image.__version__}; Image.MAX_IMAGE_PIXELS default {Image.MAX_IMAGE_PIXELS:,} "
        f"(warning above it, DecompressionBombError above {2 * Image.MAX_IMAGE_PIXELS:,}); "
        f"runtime.io limit {DEFAULT_MAX_PIXELS:,}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.no_timing:
            print(
                f"\n## Time per header, {width}x{height} images (best of {args.repeat}; 'path' includes open/close)\n"
            )
            print("\n".join(timing_table(width, height, args.repeat, args.budget, folder)))
            print(f"\n## One-off costs in a fresh process (median of {args.processes})\n")
            print("\n".join(first_open_table(folder, args.processes)))
        if not args.no_cases:
            (folder / "cases").mkdir()
            serve = args.serve_python if args.serve_python and args.serve_python.exists() else None
            cases = build_cases(folder / "cases")
            print("\n## Awkward files: hand-written probe vs Pillow, OpenCV's decode as referee\n")
            print("\n".join(agreement_table(cases, serve)))
            print("\n## Memory taken by opening a bomb (fresh process each; plugins imported before measuring)\n")
            print("\n".join(open_memory_table(cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
