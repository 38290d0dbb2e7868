"""The runtime's fast codecs: JPEG decoding through libjpeg-turbo, PNG writing through ISA-L / libdeflate.

Chosen by measurement on 12 MP photos (docs/runtime.md, "Codecs"); each keeps a guarantee of the OpenCV path
it replaces, and OpenCV remains the fallback wherever a library is missing or declines a file:

- ``decode_jpeg``: ``simplejpeg`` (libjpeg-turbo 3, the same decoder and settings as OpenCV's wheels:
  accurate integer IDCT, smooth chroma upsampling), so the pixels are identical to ``cv2.imdecode``'s,
  in 0.6x its time. simplejpeg ignores EXIF, so the orientation that ``runtime.io`` reads from the
  header is applied here, the way OpenCV applies it. Files it refuses (CMYK, 12-bit, damaged data
  that libjpeg only warns about) return None and go to OpenCV, which decides and words the error.
- ``encode_png``: rows with PNG's "up" filter (numpy), deflated by libdeflate at levels 1-12 (smaller
  than zlib at the same level, and faster; level 1, the default, is about 7 % smaller than ISA-L's
  fastest for twice its time) or, at level 0, by ISA-L's level 1 (the fastest writer, about 4x faster
  than OpenCV's zlib level 1); the chunks and CRCs are written here. Any PNG decoder reads the result.

All three libraries release the GIL, so decoding and encoding still overlap with inference.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import cv2
import numpy as np

try:  # base dependencies with wheels for every common platform; OpenCV stands in without them
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by tests that patch it to None
    simplejpeg = None
try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover
    isal_zlib = None
try:
    import deflate
except ImportError:  # pragma: no cover
    deflate = None

PNG_LEVELS = range(0, 13)  # 0 = fastest (ISA-L), 1-12 = libdeflate's levels (OpenCV's zlib caps at 9)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> gray, RGB, RGBA
_FAST_JPEG_COLORSPACES = frozenset({"YCbCr", "Gray"})  # what libjpeg-turbo turns into RGB exactly as OpenCV does


# --- JPEG decoding ---


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded image as stored into the image as displayed, per EXIF orientation 1-8."""
    if orientation == 2:
        return cv2.flip(image, 1)  # mirrored left-right
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)  # mirrored top-bottom
    if orientation == 5:
        return cv2.transpose(image)  # mirrored along the main diagonal
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)  # mirrored along the other diagonal
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def decode_jpeg(
    data: bytes | memoryview, orientation: int = 1, *, order: str = "rgb", factor: int = 1
) -> np.ndarray | None:
    """A JPEG as 8-bit ``order`` ("rgb"/"bgr") pixels, decoded at 1/``factor`` scale (1, 2, 4 or 8) in the
    DCT domain, then EXIF ``orientation`` applied; None when this decoder does not take the file."""
    if simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in _FAST_JPEG_COLORSPACES:
            return None
        # libjpeg-turbo offers eighths (3/8, 5/8, ...): pin the scale OpenCV's reduced modes use.
        image = simplejpeg.decode_jpeg(
            data, order.upper(), min_height=-(-height // factor), min_width=-(-width // factor), min_factor=factor
        )
    except ValueError:  # damaged, or a kind it declines: OpenCV decides and words the error
        return None
    return orient(image, orientation)


# --- PNG encoding ---


def _up_filtered(pixels: np.ndarray) -> np.ndarray:
    """Rows (H, W*C) -> (H, 1 + W*C): filter type 2 ("up", the byte minus the byte above, mod 256) per row."""
    height = pixels.shape[0]
    out = np.empty((height, pixels.shape[1] + 1), np.uint8)
    out[:, 0] = 2
    out[0, 1:] = pixels[0]  # the row above the first one counts as zeros
    np.subtract(pixels[1:], pixels[:-1], out=out[1:, 1:])
    return out


def _chunk(kind: bytes, body: bytes | bytearray) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind)) if deflate is None else deflate.crc32(body, deflate.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _compressor(level: int) -> Callable[[memoryview], bytes | bytearray] | None:
    """The library here that makes a zlib stream for ``level``; None when none serves it."""
    if level == 0 and isal_zlib is not None:
        return lambda buffer: isal_zlib.compress(buffer, 1)  # ISA-L's 0 is no faster, and 18 % larger
    if deflate is not None:
        return lambda buffer: deflate.zlib_compress(buffer, max(level, 1))
    return None


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """Gray, BGR or BGRA uint8 (OpenCV channel order) -> PNG bytes at ``level`` (see ``PNG_LEVELS``).

    Rows are filtered with "up". Level 0 asks for the fastest writer, 1-12 for libdeflate's level.
    Without ISA-L / libdeflate, OpenCV's own writer (zlib level 1-9) does the work.
    """
    if level not in PNG_LEVELS:
        raise ValueError(f"PNG level must be 0-12, not {level}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"cannot write a {image.dtype} image of shape {image.shape} as PNG")
    compress = _compressor(level)
    if compress is None:
        return _encode_png_opencv(image, level)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)
    height, width = image.shape[:2]
    raw = _up_filtered(np.ascontiguousarray(image).reshape(height, width * channels))
    stream = compress(memoryview(raw).cast("B"))
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPE[channels], 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", stream), _chunk(b"IEND", b"")))


def _encode_png_opencv(image: np.ndarray, level: int) -> bytes:
    """The fallback, and the writer before this module: OpenCV's libpng with the same filters."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, min(max(level, 1), 9)]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.11 and older (runtime.serve's numpy<2 venv) lack it
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(".png", image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as PNG")
    return buf.tobytes()
