"""Safe image reading and writing for the runtime.

Reading checks the pixel count in the file's own header before any pixel is decoded, so a
decompression bomb (a small file declaring a gigantic image) costs a few bytes of I/O and no
memory. Only formats whose header we can check are decoded. Writing goes to a temporary name in
the target folder and is renamed into place, so a failure never leaves a half-written output.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np

from runtime import atomic, codecs, names

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: far above any camera, far below what would exhaust memory
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
    | {".pbm", ".pgm", ".ppm", ".pnm", ".pfm"}
)
# Named in folders (never silently skipped) although no reader here decodes them: the user learns why.
UNDECODABLE_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl"})
FORMATS = "JPEG, PNG, WebP, BMP, GIF, TIFF (and BigTIFF), PNM, PFM"
# OpenCV >= 4.10 can decode straight to RGB; older builds decode BGR and we convert.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _quiet_opencv() -> None:
    """OpenCV logs its own lines about corrupt files; ours (one line per file) say it better.

    Done once, here, for every user of the reader; an explicit OPENCV_LOG_LEVEL is respected.
    """
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # very old builds without the logging module
        pass


_quiet_opencv()


class ImageError(Exception):
    """An input or output image that cannot be handled; the message is one line naming the file."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says: format, stored width/height, EXIF orientation (JPEG only, 1 = upright)."""

    format: str
    width: int
    height: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) as displayed, i.e. after the EXIF rotation OpenCV applies when decoding."""
        if self.orientation in (5, 6, 7, 8):  # the four orientations that swap the axes
            return self.width, self.height
        return self.height, self.width


# --- header parsing: every reader gets a binary file positioned at 0 and returns ImageInfo or None ---


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ImageError("truncated header")
    return data


def _png(f: BinaryIO, head: bytes) -> ImageInfo | None:
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    if len(head) < 24:
        raise ImageError("truncated header")
    if head[12:16] != b"IHDR":
        raise ImageError("corrupt PNG header (no IHDR)")
    width, height = struct.unpack(">II", head[16:24])
    return ImageInfo("PNG", width, height)


def _gif(f: BinaryIO, head: bytes) -> ImageInfo | None:
    """The logical screen, grown to cover the first frame: a 1x1 screen may carry a 30000x30000 frame."""
    if head[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    width, height = struct.unpack("<HH", head[6:10])
    flags = head[10]
    f.seek(13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0))  # past the global colour table
    for _ in range(256):  # extensions before the first frame; bounded, a real file has a few
        block = f.read(1)
        if block == b"\x2c":  # image descriptor: left, top, width, height
            left, top, frame_w, frame_h = struct.unpack("<HHHH", _read_exact(f, 8))
            return ImageInfo("GIF", max(width, left + frame_w), max(height, top + frame_h))
        if block != b"\x21":
            break  # trailer, or a file cut short: the decoder says what is wrong with it
        _read_exact(f, 1)  # the extension's label
        while size := _read_exact(f, 1)[0]:  # sub-blocks until a zero length
            f.seek(size, io.SEEK_CUR)
    return ImageInfo("GIF", width, height)


def _bmp(f: BinaryIO, head: bytes) -> ImageInfo | None:
    if head[:2] != b"BM" or len(head) < 26:
        return None
    (dib_size,) = struct.unpack("<I", head[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return ImageInfo("BMP", abs(width), abs(height))  # negative height = top-down rows


def _webp(f: BinaryIO, head: bytes) -> ImageInfo | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended format: 24-bit canvas size minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
    elif chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after a 0x2f signature byte
        bits = int.from_bytes(head[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8 ":  # lossy key frame: start code, then 14-bit sizes
        if head[23:26] != b"\x9d\x01\x2a":
            raise ImageError("corrupt WebP header")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[26:30]))
    else:
        raise ImageError(f"unknown WebP chunk {chunk!r}")
    return ImageInfo("WebP", width, height)


_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_ORIENTATION = 256, 257, 274
# Classic TIFF (and EXIF) vs BigTIFF: version, offset format, count format, entry size, value format per type.
_TIFF_LAYOUTS = {42: ("I", "H", 12, {3: "H", 4: "I"}), 43: ("Q", "Q", 20, {3: "H", 4: "I", 16: "Q"})}


def _tiff_entries(read: Callable[[int, int], bytes], order: str, version: int, want: set[int]) -> dict[int, int]:
    """Integer values of the wanted tags in the first IFD; ``read(offset, n)`` reads the structure's bytes."""
    offset_fmt, count_fmt, entry_size, values = _TIFF_LAYOUTS[version]
    head = 8 if version == 42 else 16
    (offset,) = struct.unpack(order + offset_fmt, read(head - struct.calcsize(offset_fmt), struct.calcsize(offset_fmt)))
    (count,) = struct.unpack(order + count_fmt, read(offset, struct.calcsize(count_fmt)))
    table = read(offset + struct.calcsize(count_fmt), entry_size * min(count, 4096))
    found = {}
    for i in range(len(table) // entry_size):
        entry = table[entry_size * i : entry_size * (i + 1)]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in want and kind in values:  # SHORT, LONG (or BigTIFF's LONG8), stored inline
            value_at = 8 if version == 42 else 12
            found[tag] = struct.unpack(order + values[kind], entry[value_at : value_at + struct.calcsize(values[kind])])[0]
    return found


def _tiff_order(data: bytes) -> tuple[str, int]:
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 4 or struct.unpack(order + "H", data[2:4])[0] not in _TIFF_LAYOUTS:
        raise ImageError("corrupt TIFF/EXIF header")
    return order, struct.unpack(order + "H", data[2:4])[0]


def _tiff_ifd0(data: bytes, want: set[int]) -> dict[int, int]:
    """Integer values of the wanted tags in the first IFD of a TIFF structure held in memory (EXIF's)."""
    order, version = _tiff_order(data)
    return _tiff_entries(lambda at, n: data[at : at + n], order, version, want)


def _tiff(f: BinaryIO, head: bytes) -> ImageInfo | None:
    if head[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF, BigTIFF
        return None

    def read(at: int, n: int) -> bytes:
        f.seek(at)
        return _read_exact(f, n)

    order, version = _tiff_order(head)
    tags = _tiff_entries(read, order, version, {_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_ORIENTATION})
    if _TIFF_WIDTH not in tags or _TIFF_HEIGHT not in tags:
        raise ImageError("TIFF header has no image size")
    orientation = tags.get(_TIFF_ORIENTATION, 1)
    return ImageInfo("TIFF", tags[_TIFF_WIDTH], tags[_TIFF_HEIGHT], orientation if 1 <= orientation <= 8 else 1)


def _pnm(f: BinaryIO, head: bytes) -> ImageInfo | None:
    """Netpbm (P1-P6) and PFM (Pf, PF): the width and height are the first two numbers."""
    if len(head) < 3 or head[0:1] != b"P" or head[1:2] not in b"123456fF" or not head[2:3].isspace():
        return None
    numbers: list[int] = []
    for line in head[2:].split(b"\n"):
        for token in line.split(b"#")[0].split():
            if not token.isdigit():
                raise ImageError("corrupt PNM header")
            numbers.append(int(token))
            if len(numbers) == 2:
                return ImageInfo("PNM", numbers[0], numbers[1])
    raise ImageError("corrupt PNM header")


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame; C4/C8/CC are not frames


def _jpeg(f: BinaryIO, head: bytes) -> ImageInfo | None:
    """Walk the marker segments up to the frame header; note the EXIF orientation on the way."""
    if head[:3] != b"\xff\xd8\xff":
        return None
    f.seek(2)
    orientation = None  # the first EXIF block says it, as decoders read it
    while True:
        byte = _read_exact(f, 1)
        if byte != b"\xff":
            raise ImageError("corrupt JPEG (bad marker)")
        marker = _read_exact(f, 1)[0]
        while marker == 0xFF:  # fill bytes may pad between segments
            marker = _read_exact(f, 1)[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            continue
        if marker in (0xD9, 0xDA):
            raise ImageError("corrupt JPEG (no frame header before the image data)")
        (length,) = struct.unpack(">H", _read_exact(f, 2))
        if length < 2:
            raise ImageError("corrupt JPEG (bad segment length)")
        if marker in _SOF_MARKERS:
            _, height, width = struct.unpack(">BHH", _read_exact(f, 5))
            return ImageInfo("JPEG", width, height, orientation or 1)
        body = _read_exact(f, length - 2)
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and orientation is None:
            try:
                value = _tiff_ifd0(body[6:], {0x0112}).get(0x0112, 1)
            except (ImageError, struct.error):
                value = 1  # a broken EXIF block does not make the picture unreadable
            orientation = value if 1 <= value <= 8 else 1


_READERS = (_jpeg, _png, _webp, _bmp, _gif, _tiff, _pnm)
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
               b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _undecodable(head: bytes) -> str | None:
    """Name of a well-known image format this reader cannot decode, from its first bytes."""
    if head[4:8] == b"ftyp":
        return _ISO_BRANDS.get(head[8:12])
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    return None


def probe(path: str | os.PathLike) -> ImageInfo:
    """Format and size from the header alone; raises ImageError naming the file."""
    with _file_errors(path), open_regular(path) as f:
        return _probe_file(f, path)


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a folder', ... for an ``st_mode`` that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file; anything else is an ImageError, never opened.

    The check is made before opening (a device is never touched) and again on the open file, which
    is opened non-blocking, so a FIFO swapped in meanwhile cannot block the reader either.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: is {file_kind(mode)}, not an image file; not opened")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(f"{path}: is {file_kind(mode)}, not an image file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _file_errors(name: str | os.PathLike) -> Iterator[None]:
    """Turn the OS's errors about a file into one ImageError line naming it."""
    try:
        yield
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _probe_file(f: BinaryIO, name: str | os.PathLike) -> ImageInfo:
    head = f.read(64)
    if not head:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        for reader in _READERS:
            f.seek(0)
            info = reader(f, head)
            if info is not None:
                if info.width <= 0 or info.height <= 0:
                    raise ImageError(f"{info.format} header declares an empty image ({info.width}x{info.height})")
                return info
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    except struct.error:
        raise ImageError(f"{name}: truncated or corrupt header") from None
    other = _undecodable(head)
    if other is not None:
        raise ImageError(f"{name}: {other} image, which this reader cannot decode (convert it to JPEG or PNG)")
    raise ImageError(f"{name}: not a supported image (expected {FORMATS})")


# --- decoding ---


def _markers(data: bytes | memoryview) -> np.ndarray:
    """Offsets of every 0xFF that starts a marker, as found inside entropy-coded data: the last 0xFF of
    a run (the others are fill) followed by anything but a stuffed zero or a restart marker, which
    belong to the scan. In numpy: a regular expression took 18 ms on a 12 MP file, this takes 1."""
    buf = np.frombuffer(data, np.uint8)
    ff = np.flatnonzero(buf[:-1] == 0xFF)
    after = buf[ff + 1]
    return ff[(after != 0x00) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))]


def jpeg_end(data: bytes | memoryview) -> int | None:
    """Offset just past the JPEG's end-of-image marker, or None when the image data stops short.

    Walks the segments and scans (progressive files have many) the way a decoder does, so the
    bytes after the real end marker are never interpreted (one vectorised pass lists candidate
    markers over the whole file): a motion photo's video, a trailing thumbnail or padding are all
    accepted, and a file cut inside its image data is not.
    """
    pos, size = 2, len(data)
    markers = None  # found once, at the first scan
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to the next real marker
            markers = _markers(data) if markers is None else markers
            i = int(np.searchsorted(markers, pos))
            if i == len(markers):
                return None
            pos = int(markers[i])
    return pos + 2 if pos + 2 <= size and bytes(data[pos : pos + 2]) == b"\xff\xd9" else None


def _check_jpeg_complete(data: bytes, name: str | os.PathLike) -> None:
    """libjpeg decodes a truncated file with grey filler and only a warning; insist on the end marker."""
    if jpeg_end(data) is None:
        raise ImageError(f"{name}: truncated JPEG (image data ends before the end-of-image marker)")


def _check_png_complete(data: bytes, name: str | os.PathLike) -> None:
    """Walk the chunks and check their CRCs before libpng sees the file (it would print its own lines)."""
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > size:
            break
        if zlib.crc32(data[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            raise ImageError(f"{name}: corrupt PNG (checksum error in its {kind.decode('latin-1')} chunk)")
        if kind == b"IEND":
            return
        pos = end
    raise ImageError(f"{name}: truncated PNG (the file ends before its IEND chunk)")


def _decode(data: bytes, info: ImageInfo, name: str | os.PathLike, flags: int) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise ImageError(f"{name}: cannot decode {info.format}: {str(exc).strip().splitlines()[-1][:120]}") from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: cannot decode {info.format} (corrupt or truncated)")
    return image


_ORDERS = ("rgb", "bgr", "gray")


def read_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    order: str = "rgb",
    reduce_to: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a file (or its bytes) to 8-bit ``order``: "rgb"/"bgr" (3 channels) or "gray" (H x W).

    The one image reader of the project: the runtime, the training data check, the benchmarks and
    export verification all decide the same way for the same bytes. Only regular files are opened;
    the pixel count is checked from the header before decoding; a JPEG or PNG that stops short is
    refused (data after a complete JPEG, as in motion photos, is fine). EXIF orientation is applied.
    Gray, palette, RGBA and 16-bit files come back as 8-bit (alpha dropped, 16-bit keeps its high
    byte), as ``preprocess.to_rgb8`` does for arrays. Returns the image and the full (height, width).
    With ``reduce_to`` a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay
    >= ``reduce_to`` (much faster when only a model-sized copy is needed); the returned size is
    still that of the full image.
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {', '.join(_ORDERS)}, not {order!r}")
    data, info, name = _read_checked(source, max_pixels)
    full = info.shape
    factor = _reduction(info, reduce_to) if reduce_to and order != "gray" else 1
    if info.format == "JPEG" and order != "gray":  # libjpeg-turbo directly: OpenCV's pixels in 0.6x the time
        image = codecs.decode_jpeg(data, info.orientation, order=order, factor=factor)
        if image is not None:
            return image, full
    if factor > 1:
        image = _decode(data, info, name, _REDUCED[factor])
        # The decoder rounds sizes up; anything else means its orientation handling differs from ours.
        if image.shape[:2] == tuple(-(-side // factor) for side in full):
            return (cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if order == "rgb" else image), full
    if order == "gray":
        return (image := _decode(data, info, name, cv2.IMREAD_GRAYSCALE)), image.shape[:2]
    rgb_direct = order == "rgb" and _IMREAD_RGB is not None
    image = _decode(data, info, name, _IMREAD_RGB if rgb_direct else cv2.IMREAD_COLOR)
    if order == "rgb" and not rgb_direct:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image, image.shape[:2]


def _read_checked(source: str | os.PathLike | bytes, max_pixels: int) -> tuple[bytes, ImageInfo, str | os.PathLike]:
    """(the file's bytes, its header, its name for messages), after every check that needs no decoding."""
    in_memory = isinstance(source, bytes | bytearray | memoryview)
    name = "<bytes>" if in_memory else source
    with _file_errors(name), io.BytesIO(source) if in_memory else _open_source(source) as f:
        info = _probe_file(f, name)
        if info.pixels > max_pixels:
            raise ImageError(
                f"{name}: {info.width}x{info.height} = {info.pixels / 1e6:.1f} MP exceeds the limit of "
                f"{max_pixels / 1e6:g} MP (raise --max-pixels if this image is genuine)"
            )
        f.seek(0)
        data = f.read()
    if info.format == "JPEG":
        _check_jpeg_complete(data, name)
    elif info.format == "PNG":
        _check_png_complete(data, name)
    return data, info, name


def _open_source(source: str | os.PathLike) -> BinaryIO:
    """A local file (regular files only), or a store URL (``s3://...``, ``runtime.store``) read in ranged
    blocks, so the header is checked before the body is fetched."""
    if isinstance(source, str) and names.is_url(source):
        from runtime import store

        try:
            return store.open_input(source)
        except store.StoreError as exc:
            raise ImageError(str(exc)) from None
    return open_regular(source)


def _reduction(info: ImageInfo, min_side: int) -> int:
    """Largest JPEG DCT scaling that keeps both sides >= ``min_side`` (1 = decode at full size)."""
    if info.format != "JPEG":
        return 1  # other decoders would decode everything and then resize: no saving
    short = min(info.width, info.height)
    for factor in (8, 4, 2):
        if short // factor >= min_side:
            return factor
    return 1


# --- atomic writes ---


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file."""
    try:
        atomic.write_bytes(path, data)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write: {exc.strerror or exc}") from None
