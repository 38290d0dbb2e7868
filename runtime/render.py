"""Image + mask -> output picture -> encoded bytes: the one render path of the CLI, the API and the HTTP endpoint.

Two tables say everything an output can be:

- ``MODES``: what is drawn from the photo and its mask (``mask``, ``cutout``, ``composite``);
- ``FORMATS``: how the drawing is encoded (``png``, ``webp``), with its media type, and the cheap
  check ``--skip-existing`` uses to tell a complete file of that format from a broken one.

A new mode or format is one row; the CLI's choices and help, the HTTP routes and ``Remover`` read
these tables. ``render(image, mask, options)`` is the function every front door calls, so the same
photo and options give the same bytes whichever door they come through.

Channel order: the file pipeline decodes to OpenCV's BGR and the encoders take BGR, so ``render``
works in BGR; the array-returning API works in RGB (``draw(..., order="rgb")``). Colours given by
users are always RGB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from runtime import codecs
from runtime.io import DEFAULT_MAX_PIXELS, ImageError, read_image
from runtime.preprocess import to_rgb8

# --- colours and backgrounds ----------------------------------------------------------------

COLOR_NAMES: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 255, 0),  # green-screen green, not CSS's dark (0, 128, 0)
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
_HEX6 = re.compile(r"#[0-9a-f]{6}")
_HEX3 = re.compile(r"#[0-9a-f]{3}")
_DECIMAL = re.compile(r"[0-9]{1,3}")  # ASCII only: str.isdigit would take '٣' or '²'


def parse_color(text: str) -> tuple[int, int, int]:
    """'white', '#RRGGBB', '#RGB' or 'R,G,B' (ASCII digits, 0..255) -> (r, g, b); ValueError otherwise."""
    value = text.strip().lower()
    if value in COLOR_NAMES:
        return COLOR_NAMES[value]
    if _HEX6.fullmatch(value):
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if _HEX3.fullmatch(value):
        return tuple(int(c * 2, 16) for c in value[1:])  # type: ignore[return-value]
    parts = [p.strip() for p in value.split(",")]
    if len(parts) == 3 and all(_DECIMAL.fullmatch(p) and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    raise ValueError(f"not a colour: {text!r} (use a name like {', '.join(list(COLOR_NAMES)[:4])}, #RRGGBB or R,G,B)")


def check_color(color: Sequence[int]) -> tuple[int, int, int]:
    """(r, g, b) with each a whole number 0..255 (not a bool), or ValueError naming the bad colour."""
    values = tuple(color)
    if len(values) != 3 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) and 0 <= v <= 255 for v in values
    ):
        raise ValueError(f"not a colour: {color!r}; expected (r, g, b) with whole numbers 0..255")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


BackgroundLike = str | os.PathLike | Sequence[int] | np.ndarray | bytes | bytearray | memoryview
_ENCODED = (bytes, bytearray, memoryview)


@dataclass(frozen=True, eq=False)
class Backdrop:
    """What a composite is laid over: a colour (RGB) or a picture (kept in BGR, as decoded), fitted to each
    output size once (a folder of same-sized photos scales the picture once)."""

    color: tuple[int, int, int] | None = None
    picture: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fit", lru_cache(maxsize=4)(self._fitted_picture))

    @classmethod
    def of(cls, value: BackgroundLike | Backdrop, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Backdrop:
        """The one rule for a composite background: a string naming an existing file, a path, an RGB(A)
        array or encoded bytes is a picture; any other string is a colour (``parse_color``); a sequence
        is (r, g, b) (``check_color``). ValueError when a string is neither; ImageError for a bad picture."""
        if isinstance(value, Backdrop):
            return value
        if isinstance(value, np.ndarray):
            return cls(picture=cv2.cvtColor(to_rgb8(value), cv2.COLOR_RGB2BGR))
        if isinstance(value, str) and not Path(value).is_file():
            try:
                return cls(color=parse_color(value))
            except ValueError as exc:
                raise ValueError(f"{exc}, and no such image file") from None
        if isinstance(value, (str, os.PathLike, *_ENCODED)):
            return cls(picture=read_image(value, max_pixels=max_pixels, order="bgr")[0])
        return cls(color=check_color(value))

    def _fitted_picture(self, shape: tuple[int, int]) -> np.ndarray:
        assert self.picture is not None
        return fit_background(self.picture, shape)

    def layer(self, shape: tuple[int, int], order: str) -> np.ndarray | tuple[int, int, int]:
        """The background for an image of ``shape`` in channel ``order``: a colour tuple or a fitted picture."""
        if self.picture is None:
            r, g, b = self.color or COLOR_NAMES["white"]
            return (b, g, r) if order == "bgr" else (r, g, b)
        fitted = self._fit(shape)  # type: ignore[attr-defined]
        return fitted if order == "bgr" else cv2.cvtColor(fitted, cv2.COLOR_BGR2RGB)


WHITE = Backdrop(color=COLOR_NAMES["white"])


def fit_background(background: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scale a background to cover (height, width) without distortion, then crop the centre."""
    height, width = shape
    bh, bw = background.shape[:2]
    scale = max(height / bh, width / bw)
    new_w, new_h = max(width, round(bw * scale)), max(height, round(bh * scale))
    if (new_h, new_w) != (bh, bw):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        background = cv2.resize(background, (new_w, new_h), interpolation=interp)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return background[top : top + height, left : left + width]


# --- drawing: cutouts and composites --------------------------------------------------------

CUTOUT_COLOURS = ("original", "exact", "visible")


def _visible_bits() -> np.ndarray:
    """alpha -> the colour bits a viewer can see under it: the top bit_length(alpha) bits, none at 0.

    Composited over any background, dropping the rest moves a pixel by at most
    (2^(8-k) - 1)(2^k - 1)/255 < 0.89 of one 8-bit level, k = bit_length(alpha): less than the
    composite's own rounding. At alpha 255 all 8 bits stay; at alpha 1, one.
    """
    keep = [0] + [(0xFF << (8 - alpha.bit_length())) & 0xFF for alpha in range(1, 256)]
    return np.array(keep, np.uint8)


_VISIBLE_BITS = _visible_bits()


def _foreground(image: np.ndarray, mask: np.ndarray, decontaminate: bool) -> np.ndarray:
    if not decontaminate:
        return image
    from runtime.matting import estimate_foreground

    return estimate_foreground(image, mask)


def apply_cutout(image: np.ndarray, mask: np.ndarray, *, colours: str = "original",
                 decontaminate: bool = False) -> np.ndarray:  # fmt: skip
    """3-channel uint8 image + mask -> 4-channel image (same channel order) with straight alpha = mask.

    ``decontaminate`` first re-estimates the colours under partial alpha (``runtime.matting``), so the
    old background does not bleed into hair and soft edges. ``colours`` says what is kept under the
    alpha (the alpha itself is the mask in every case):

    - "original": every pixel keeps its colour, even where alpha is 0 (what the API returns);
    - "exact": fully transparent pixels, which no viewer shows, are zeroed; the rest are exact;
    - "visible": each colour keeps only the bits its alpha lets show (``_visible_bits``), so a
      composite over any background stays within one level of "exact"'s, and the file writer's
      default: semi-transparent backgrounds then compress to about half (docs/runtime.md, "Codecs").
    """
    if colours not in CUTOUT_COLOURS:
        raise ValueError(f"colours must be one of {', '.join(CUTOUT_COLOURS)}, not {colours!r}")
    image = _foreground(image, mask, decontaminate)
    if colours == "exact":
        image = cv2.bitwise_and(image, image, mask=mask)
    elif colours == "visible":
        keep = cv2.LUT(mask, _VISIBLE_BITS)
        image = cv2.bitwise_and(image, cv2.merge((keep, keep, keep)))
    out = np.empty((*image.shape[:2], 4), np.uint8)
    cv2.mixChannels([image, mask], [out], [0, 0, 1, 1, 2, 2, 3, 3])  # 3x faster than cv2.merge on 12 MP
    return out


def apply_composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray | Sequence[int], *,
                    decontaminate: bool = False) -> np.ndarray:  # fmt: skip
    """Blend a 3-channel uint8 image over a colour (in the image's channel order) or a background image
    (same channel order, any size: fitted with ``fit_background``), using the mask as straight alpha."""
    if isinstance(background, np.ndarray):
        bg = fit_background(to_rgb8(background), image.shape[:2])
    else:
        bg = np.empty_like(image)
        bg[:] = np.asarray(check_color(background), np.uint8)
    image = _foreground(image, mask, decontaminate)
    alpha = mask.astype(np.float32) * np.float32(1 / 255)
    return cv2.blendLinear(image, np.ascontiguousarray(bg), alpha, 1.0 - alpha)


# --- the tables -----------------------------------------------------------------------------

ORDERS = ("bgr", "rgb")


@dataclass(frozen=True)
class Mode:
    """One output mode: its name (CLI ``--mode``, HTTP ``/v1/NAME``), whether it needs the photo's
    full-resolution colours (a mask does not, so a large JPEG may decode at reduced scale), and how it
    draws (image in ``order`` or None, mask, options, order) -> picture in the same order."""

    name: str
    help: str
    needs_colours: bool
    draw: Callable[[np.ndarray | None, np.ndarray, RenderOptions, str], np.ndarray]


def _draw_mask(image: np.ndarray | None, mask: np.ndarray, options: RenderOptions, order: str) -> np.ndarray:
    return mask


def _draw_cutout(image: np.ndarray | None, mask: np.ndarray, options: RenderOptions, order: str) -> np.ndarray:
    assert image is not None
    return apply_cutout(image, mask, colours=options.colours, decontaminate=options.decontaminate)


def _draw_composite(image: np.ndarray | None, mask: np.ndarray, options: RenderOptions, order: str) -> np.ndarray:
    assert image is not None
    background = options.background.layer(mask.shape, order)
    return apply_composite(image, mask, background, decontaminate=options.decontaminate)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("mask", "8-bit grayscale mask", False, _draw_mask),
    Mode("cutout", "the photo with the mask as alpha (RGBA)", True, _draw_cutout),
    Mode("composite", "the photo over a background colour or picture (--bg)", True, _draw_composite),
)}  # fmt: skip


def _png_level(image: np.ndarray, options: RenderOptions) -> int:
    if options.png_level is not None:
        return options.png_level
    return MASK_PNG_LEVEL if image.ndim == 2 or image.shape[2] == 1 else COLOUR_PNG_LEVEL


def _encode_png(image: np.ndarray, options: RenderOptions) -> bytes:
    return codecs.encode_png(image, _png_level(image, options))


def _encode_webp(image: np.ndarray, options: RenderOptions) -> bytes:
    quality = 101 if options.quality >= 100 else options.quality  # OpenCV: above 100 = lossless
    ok, buf = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise ImageError(f"OpenCV could not encode a {image.shape} image as WebP")
    return buf.tobytes()


def _png_complete(head: bytes, tail: bytes, size: int) -> bool:
    # Signature, then IHDR first; the last 12 bytes are the empty IEND chunk with its fixed CRC.
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and tail[-12:] == _IEND


def _webp_complete(head: bytes, tail: bytes, size: int) -> bool:
    # RIFF's own length field counts every byte after it: a cut file is shorter than it says.
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and int.from_bytes(head[4:8], "little") + 8 == size


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class Format:
    """One output format: ``--format`` name, file suffix, HTTP media type, encoder (image in OpenCV's
    channel order -> bytes), and a cheap completeness check from the first and last bytes and the size."""

    name: str
    suffix: str
    media_type: str
    encode: Callable[[np.ndarray, RenderOptions], bytes]
    complete: Callable[[bytes, bytes, int], bool]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("png", ".png", "image/png", _encode_png, _png_complete),
    Format("webp", ".webp", "image/webp", _encode_webp, _webp_complete),
)}  # fmt: skip

COLOUR_PNG_LEVEL = 1  # libdeflate's fastest: 7 % smaller than ISA-L on 12 MP cutouts, where bytes add up
MASK_PNG_LEVEL = 0  # ISA-L: on SOD masks 0.39 ms instead of 0.70 (soft), 0.07 instead of 0.40 (crisp)


@dataclass(frozen=True)
class RenderOptions:
    """What to make of a photo and its mask, and how to encode it.

    ``mode`` and ``format`` name rows of ``MODES`` and ``FORMATS``. ``background``: composites only.
    ``colours`` (cutouts, see ``apply_cutout``): "visible", the default, stores each colour to the
    precision its alpha shows (composites within one level of the photo's, files about half the size
    where the mask is faint); "exact" stores every visible colour; "original" keeps even hidden ones.
    ``decontaminate``: re-estimate colours under partial alpha (``runtime.matting``).

    PNG: ``png_level`` 0-12 (``runtime.codecs.encode_png``), all with the 'up' row filter: 1 is
    libdeflate's fastest level; 2-12 are smaller and slower; 0 is the fastest writer (ISA-L), about
    half the encode time of 1 for colour files about 7 % larger. None, the default, picks per image:
    1 for colours, 0 for masks, where ISA-L is 2-6x faster than libdeflate's level 1 and still smaller
    than OpenCV's zlib level 1 (docs/runtime.md, "Codecs"). ``quality``: WebP, 1-100, 100 = lossless.
    """

    mode: str = "cutout"
    format: str = "png"
    background: Backdrop = WHITE
    colours: str = "visible"
    decontaminate: bool = False
    png_level: int | None = None
    quality: int = 90

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown output format {self.format!r}; choose {', '.join(FORMATS)}")
        if self.colours not in CUTOUT_COLOURS:
            raise ValueError(f"colours must be one of {', '.join(CUTOUT_COLOURS)}, not {self.colours!r}")
        if self.png_level is not None and self.png_level not in codecs.PNG_LEVELS:
            raise ValueError(f"PNG level must be 0-12, not {self.png_level}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be a whole number 1-100, not {self.quality!r}")
        if not isinstance(self.background, Backdrop):
            raise TypeError(f"background must be a Backdrop (Backdrop.of(value)), not {type(self.background).__name__}")

    @property
    def suffix(self) -> str:
        return FORMATS[self.format].suffix

    @property
    def media_type(self) -> str:
        return FORMATS[self.format].media_type

    @property
    def needs_colours(self) -> bool:
        return MODES[self.mode].needs_colours


# --- the one render path --------------------------------------------------------------------


def draw(image: np.ndarray | None, mask: np.ndarray, options: RenderOptions, order: str = "bgr") -> np.ndarray:
    """The output picture for ``options.mode``, in the image's channel ``order`` (a mask needs no image)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if image is None and options.needs_colours:
        raise ValueError(f"mode {options.mode} needs the image's colours")
    return MODES[options.mode].draw(image, mask, options, order)


def encode(picture: np.ndarray, options: RenderOptions) -> bytes:
    """A gray, BGR or BGRA uint8 picture (OpenCV's channel order) -> ``options.format`` bytes."""
    return FORMATS[options.format].encode(picture, options)


def render(image: np.ndarray | None, mask: np.ndarray, options: RenderOptions) -> bytes:
    """BGR image (None for masks) + uint8 mask -> the encoded output: what every front door writes or sends."""
    return encode(draw(image, mask, options, "bgr"), options)


def is_complete(path: str | os.PathLike, format: str) -> bool:  # noqa: A002 - the table's word
    """Whether ``path`` looks like a whole file of ``format``: header and trailer only (a few bytes read)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16)
            f.seek(max(0, size - 12))
            tail = f.read(12)
    except OSError:
        return False
    return size > 16 and FORMATS[format].complete(head, tail, size)


__all__ = [
    "COLOR_NAMES", "CUTOUT_COLOURS", "FORMATS", "MODES", "WHITE", "Backdrop", "BackgroundLike", "Format", "Mode",
    "RenderOptions", "apply_composite", "apply_cutout", "check_color", "draw", "encode", "fit_background",
    "is_complete", "parse_color", "render",
]  # fmt: skip
