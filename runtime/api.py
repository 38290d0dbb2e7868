"""One-call Python API: ``Remover("u2netp.onnx").cutout(image)``.

Images are RGB numpy arrays (gray, RGBA and 16-bit arrays are accepted too), file paths or
encoded bytes. Pre- and postprocessing come from ``runtime.preprocess``; the engine's own
metadata decides the input size and normalisation.

    from runtime.api import Remover
    with Remover("u2netp.onnx") as remover:
        rgba = remover.cutout("photo.jpg")            # H x W x 4, straight alpha
        mask = remover.mask(rgb_array)                # H x W uint8
        card = remover.composite("photo.jpg", "#00ff00")
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.backends import Backend, BackendError, open_backend
from runtime.io import DEFAULT_MAX_PIXELS, read_image
from runtime.memory import available_memory, bytes_per_image, cpu_batch_limit
from runtime.preprocess import postprocess, prepare_input, to_rgb8

log = logging.getLogger(__name__)

ImageLike = np.ndarray | str | os.PathLike | bytes

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


def parse_color(text: str) -> tuple[int, int, int]:
    """'white', '#RRGGBB', '#RGB' or 'R,G,B' -> (r, g, b); ValueError with a helpful message otherwise."""
    value = text.strip().lower()
    if value in COLOR_NAMES:
        return COLOR_NAMES[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if re.fullmatch(r"#[0-9a-f]{3}", value):
        return tuple(int(c * 2, 16) for c in value[1:])  # type: ignore[return-value]
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    raise ValueError(f"not a colour: {text!r} (use a name like {', '.join(list(COLOR_NAMES)[:4])}, #RRGGBB or R,G,B)")


Background = tuple[int, int, int] | Path | np.ndarray | bytes


def resolve_background(value: str | os.PathLike | Sequence[int] | np.ndarray | bytes) -> Background:
    """The one rule for a composite background: a string naming an existing file, a path, an array
    or encoded bytes is an image; any other string is a colour (``parse_color``); a sequence is
    (r, g, b), checked by ``check_color``. ValueError when a string is neither a file nor a colour."""
    if isinstance(value, np.ndarray | bytes | bytearray):
        return value
    if isinstance(value, str):
        if Path(value).is_file():
            return Path(value)
        try:
            return parse_color(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, and no such image file") from None
    if isinstance(value, os.PathLike):
        return Path(value)
    return check_color(value)


def check_color(color: Sequence[int]) -> tuple[int, int, int]:
    """(r, g, b) with each a whole number 0..255, or ValueError naming the bad colour."""
    values = tuple(color)
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and 0 <= v <= 255 for v in values):
        raise ValueError(f"not a colour: {color!r}; expected (r, g, b) with whole numbers 0..255")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


@dataclass
class Prepared:
    """One image made ready for the engine: the model input, the full size, and the full-resolution
    pixels when the caller needs its colours (``None`` for masks only)."""

    model_input: np.ndarray  # CHW float32
    shape: tuple[int, int]  # full (height, width)
    image: np.ndarray | None = None


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


def apply_cutout(image: np.ndarray, mask: np.ndarray, *, colours: str = "original") -> np.ndarray:
    """3-channel uint8 image + mask -> 4-channel image (same channel order) with straight alpha = mask.

    ``colours`` says what is kept under the alpha (the alpha itself is the mask in every case):

    - "original": every pixel keeps its colour, even where alpha is 0 (what the API returns);
    - "exact": fully transparent pixels, which no viewer shows, are zeroed; the rest are exact;
    - "visible": each colour keeps only the bits its alpha lets show (``_visible_bits``), so a
      composite over any background stays within one level of "exact"'s, and the file writer's
      default: semi-transparent backgrounds then compress to about half (README, "Codecs").
    """
    if colours == "exact":
        image = cv2.bitwise_and(image, image, mask=mask)
    elif colours == "visible":
        keep = cv2.LUT(mask, _VISIBLE_BITS)
        image = cv2.bitwise_and(image, cv2.merge((keep, keep, keep)))
    elif colours != "original":
        raise ValueError(f"colours must be one of {', '.join(CUTOUT_COLOURS)}, not {colours!r}")
    out = np.empty((*image.shape[:2], 4), np.uint8)
    cv2.mixChannels([image, mask], [out], [0, 0, 1, 1, 2, 2, 3, 3])  # 3x faster than cv2.merge on 12 MP
    return out


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


def apply_composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray | Sequence[int]) -> np.ndarray:
    """Blend a 3-channel uint8 image over a colour (in the image's channel order) or a background image
    (same channel order, any size: fitted with ``fit_background``), using the mask as straight alpha."""
    if isinstance(background, np.ndarray):
        bg = fit_background(to_rgb8(background), image.shape[:2])
    else:
        bg = np.empty_like(image)
        bg[:] = np.asarray(check_color(background), np.uint8)
    alpha = mask.astype(np.float32) * np.float32(1 / 255)
    return cv2.blendLinear(image, np.ascontiguousarray(bg), alpha, 1.0 - alpha)


def _fit_memory(requested: int, batch_size: int, input_size: int) -> int:
    """The CPU batch reduced, with one line saying so, when its activations would not fit in memory."""
    limit = cpu_batch_limit(input_size)
    if batch_size <= limit:
        return batch_size
    available = available_memory()
    free = f"{available / 2**30:.1f} GiB available" if available is not None else "memory unknown"
    log.warning("batch size %d reduced to %d: each %dx%d image needs ~%d MB on the CPU (%s)",
                requested, limit, input_size, input_size, bytes_per_image(input_size) // 2**20, free)
    return limit


class Remover:
    """An engine plus the official pre/postprocessing. Thread-compatible, not thread-safe: one per thread.

    ``engine``: ``.onnx`` (ONNX Runtime) or ``.plan``/``.engine`` (TensorRT). ``provider``: ``cpu``,
    ``cuda`` or ``tensorrt`` for ONNX files (None = CUDA when available, else CPU); an unavailable
    provider raises ``BackendError``, as does an engine that fails a test inference. ``threads``: ONNX
    Runtime intra-op threads. ``batch_size``: images per engine call, capped by the engine's profile
    (default: the backend's ``preferred_batch``: a TensorRT profile's optimum, 8 on CUDA, 1 on a CPU;
    on a CPU a batch that would not fit in memory is reduced, with one line saying so).
    ``max_pixels``: larger image files are refused before decoding. ``backend``: a name from
    ``runtime.backends.BACKENDS`` (``onnxruntime``, ``openvino``, ``tensorrt``) instead of the default:
    by the engine's suffix, and for ``.onnx`` on a CPU the fastest installed (OpenVINO where present).
    ``precision``: ``fp32`` or ``bf16`` for backends that choose one (OpenVINO; None = BF16 where the
    CPU computes it natively, else FP32); the log line names the backend and the precision that runs.
    """

    def __init__(
        self,
        engine: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backend: str | None = None,
        precision: str | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self._closed = False
        self.backend: Backend = open_backend(engine, backend=backend, provider=provider, threads=threads,
                                             precision=precision)  # fmt: skip
        try:
            self.spec = self.backend.spec
            requested = batch_size or self.backend.preferred_batch
            self.batch_size = max(1, min(requested, self.backend.max_batch))
            if self.backend.on_host:  # host memory bounds a CPU batch, whatever was asked
                self.batch_size = _fit_memory(requested, self.batch_size, self.spec.size)
            self.max_pixels = max_pixels
            self._check_engine(engine)
        except BaseException:
            self.backend.close()
            raise
        log.info("running %s, batches of up to %d", self.backend.describe(), self.batch_size)

    def _check_engine(self, path: str | os.PathLike) -> None:
        """One tiny inference up front, so an incompatible engine fails here with one clear line."""
        size = self.spec.size
        try:
            out = self.backend.run(np.zeros((1, 3, size, size), np.float32))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"{path}: engine fails on a {size}x{size} test image: {first[:200]}") from None
        if getattr(out, "shape", None) != (1, 1, size, size):
            raise BackendError(
                f"{path}: engine returns shape {getattr(out, 'shape', type(out).__name__)}, "
                f"expected (1, 1, {size}, {size}); is this a U²-Net export?"
            )

    # --- the core: model-sized inputs in, probability maps out ---

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One RGB image (any size) -> normalised CHW float32 model input."""
        return prepare_input(image, self.spec)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, S, S) float32 probabilities, split to fit the engine's batch limit."""
        self._require_open()
        maps = [self.backend.run(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(maps)[:, 0]

    def load_prepared(self, image: ImageLike, *, keep: str | None = "rgb") -> Prepared:
        """The one load -> preprocess path, shared by the API calls and the file pipeline (CLI = API).

        ``keep``: "rgb" or "bgr" keeps the full-resolution pixels in that order; None keeps none,
        and then a large JPEG file may be decoded at 1/2..1/8 scale, never below twice the model's
        input size (twice as fast; the mask of a file is the same whether it comes from here or the CLI).
        """
        self._require_open()
        if isinstance(image, np.ndarray):
            rgb = self.load(image)
            full = rgb if keep == "rgb" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if keep == "bgr" else None
            return Prepared(self.prepare(rgb), rgb.shape[:2], full)
        if not isinstance(image, str | os.PathLike | bytes | bytearray):
            raise TypeError(f"expected an RGB array, a path or bytes, not {type(image).__name__}")
        order = keep or "bgr"  # BGR is what the decoder gives without a conversion
        pixels, shape = read_image(image, max_pixels=self.max_pixels, order=order,
                                   reduce_to=None if keep else 2 * self.spec.size)
        return Prepared(prepare_input(pixels, self.spec, bgr=order == "bgr"), shape, pixels if keep else None)

    # --- the public calls ---

    def load(self, image: ImageLike) -> np.ndarray:
        """A path, encoded bytes or array -> RGB uint8 (EXIF orientation applied to files).

        Arrays: see ``preprocess.to_rgb8`` for what is accepted (float images must hold 0..1);
        anything else is a ``ValueError`` naming the problem.
        """
        if isinstance(image, np.ndarray):
            return to_rgb8(image)
        if isinstance(image, str | os.PathLike | bytes | bytearray):
            return read_image(image, max_pixels=self.max_pixels)[0]
        raise TypeError(f"expected an RGB array, a path or bytes, not {type(image).__name__}")

    def masks(self, images: Iterable[ImageLike]) -> list[np.ndarray]:
        """uint8 masks (0..255, each the size of its image), computed in batches."""
        results: list[np.ndarray] = []
        chunk: list[Prepared] = []
        for image in images:
            chunk.append(self.load_prepared(image, keep=None))
            if len(chunk) == self.batch_size:
                results.extend(self._masks_of(chunk))
                chunk.clear()
        if chunk:
            results.extend(self._masks_of(chunk))
        return results

    def _masks_of(self, chunk: Sequence[Prepared]) -> list[np.ndarray]:
        probs = self.predict(np.stack([p.model_input for p in chunk]))
        return [postprocess(prob, p.shape) for prob, p in zip(probs, chunk, strict=True)]

    def mask(self, image: ImageLike) -> np.ndarray:
        """Saliency mask, uint8 H x W, the image's size."""
        return self.masks([image])[0]

    def cutout(self, image: ImageLike) -> np.ndarray:
        """RGBA uint8 H x W x 4: the original colours, alpha = mask (straight, not premultiplied)."""
        prepared = self.load_prepared(image)
        return apply_cutout(prepared.image, self._masks_of([prepared])[0])

    def composite(self, image: ImageLike, background: str | Sequence[int] | ImageLike = "white") -> np.ndarray:
        """RGB uint8: the image blended over a colour ('white', '#RRGGBB', 'R,G,B', (r, g, b)) or a
        background image (array, path or bytes; scaled to cover and centre-cropped)."""
        background = resolve_background(background)
        if not isinstance(background, tuple):
            background = self.load(background)
        prepared = self.load_prepared(image)
        return apply_composite(prepared.image, self._masks_of([prepared])[0], background)

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Remover is closed; create a new one (or use it inside its `with` block)")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.close()

    def __enter__(self) -> Remover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
