"""One-call Python API: ``Remover("u2netp.onnx").cutout(image)``.

Images are RGB numpy arrays (gray, RGBA and 16-bit arrays are accepted too), file paths or
encoded bytes (``bytes``, ``bytearray``, ``memoryview``). Pre- and postprocessing come from
``runtime.preprocess``, drawing and encoding from ``runtime.render``; the engine's own metadata
decides the input size and normalisation.

    from runtime.api import Remover
    from runtime.render import RenderOptions
    with Remover("u2netp.onnx") as remover:
        rgba = remover.cutout("photo.jpg")            # H x W x 4, straight alpha
        mask = remover.mask(rgb_array)                # H x W uint8
        card = remover.composite("photo.jpg", "#00ff00", decontaminate=True)
        png = remover.render("photo.jpg", RenderOptions(mode="mask"))  # the CLI's file, as bytes
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from runtime.backends import Backend, BackendError, open_backend
from runtime.errors import first_line
from runtime.io import DEFAULT_MAX_PIXELS, read_image
from runtime.memory import available_memory, bytes_per_image, cpu_batch_limit
from runtime.preprocess import postprocess, prepare_input, to_rgb8
from runtime.render import (
    COLOR_NAMES,
    CUTOUT_COLOURS,
    Backdrop,
    BackgroundLike,
    RenderOptions,
    apply_composite,
    apply_cutout,
    check_color,
    draw,
    encode,
    fit_background,
    parse_color,
)

if TYPE_CHECKING:
    from runtime.video.formats import VideoOptions
    from runtime.video.process import FrameMask, VideoResult

log = logging.getLogger(__name__)

ImageLike = np.ndarray | str | os.PathLike | bytes | bytearray | memoryview
_ENCODED_OR_PATH = (str, os.PathLike, bytes, bytearray, memoryview)


@dataclass
class Prepared:
    """One image made ready for the engine: the model input, the full size, and the full-resolution
    pixels when the caller needs its colours (``None`` for masks only)."""

    model_input: np.ndarray  # CHW float32
    shape: tuple[int, int]  # full (height, width)
    image: np.ndarray | None = None



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

    ``engine``: ``.onnx`` (OpenVINO or ONNX Runtime), ``.plan``/``.engine`` (TensorRT) or a Triton server's
    ``grpc://HOST:PORT/MODEL`` / ``http://...`` (thread-safe: one ``Remover`` may serve many threads). ``provider``: ``cpu``,
    ``cuda`` or ``tensorrt`` for ONNX files (None = CUDA when available, else CPU); an unavailable
    provider raises ``BackendError``, as does an engine that fails a test inference. ``threads``: ONNX
    Runtime intra-op threads. ``batch_size``: images per engine call, capped by the engine's profile
    (default: the backend's ``preferred_batch``: a TensorRT profile's optimum, 8 on CUDA, 1 on a CPU;
    on a CPU a batch that would not fit in memory is reduced, with one line saying so).
    ``max_pixels``: larger image files are refused before decoding. ``backend``: a name from
    ``runtime.backends.BACKENDS`` (``openvino``, ``onnxruntime``, ``tensorrt``, ``triton``) instead of the default:
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
            raise BackendError(f"{path}: engine fails on a {size}x{size} test image: {first_line(exc)}") from None
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
        if not isinstance(image, _ENCODED_OR_PATH):
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
        if isinstance(image, _ENCODED_OR_PATH):
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

    def cutout(self, image: ImageLike, *, decontaminate: bool = False) -> np.ndarray:
        """RGBA uint8 H x W x 4: the original colours, alpha = mask (straight, not premultiplied).

        ``decontaminate``: re-estimate the colours under partial alpha so the old background does not
        bleed into hair and soft edges (``runtime.matting``)."""
        options = RenderOptions(mode="cutout", colours="original", decontaminate=decontaminate)
        prepared = self.load_prepared(image)
        return draw(prepared.image, self._masks_of([prepared])[0], options, "rgb")

    def composite(self, image: ImageLike, background: BackgroundLike = "white", *,
                  decontaminate: bool = False) -> np.ndarray:  # fmt: skip
        """RGB uint8: the image blended over a colour ('white', '#RRGGBB', 'R,G,B', (r, g, b)) or a
        background image (array, path or bytes; scaled to cover and centre-cropped)."""
        backdrop = Backdrop.of(background, max_pixels=self.max_pixels)
        options = RenderOptions(mode="composite", background=backdrop, decontaminate=decontaminate)
        prepared = self.load_prepared(image)
        return draw(prepared.image, self._masks_of([prepared])[0], options, "rgb")

    def render(self, image: ImageLike, options: RenderOptions | None = None) -> bytes:
        """The encoded output file for one image, exactly as ``python -m runtime.infer`` and the HTTP
        endpoint make it for the same options (default: a PNG cutout)."""
        options = options or RenderOptions()
        prepared = self.load_for(image, options)
        return self.output(prepared, self.predict(prepared.model_input[None])[0], options)

    # --- video (runtime.video; PyAV is imported only here) ---

    def video(self, source: str | os.PathLike, target: str | os.PathLike, options: RenderOptions | None = None,
              video: VideoOptions | None = None) -> VideoResult:  # fmt: skip
        """Cut out every frame of a clip into ``target`` (the CLI's video output for the same options: default a
        VP9 WebM cutout with alpha, sound kept), atomically. ``video``: frames, format, smoothing
        (``runtime.video.VideoOptions``). Raises ``runtime.video.source.VideoError`` when nothing could be
        written; a clip damaged part-way gives its good frames and ``VideoResult.stopped`` says where."""
        from runtime.video.process import process_video

        self._require_open()
        return process_video(self, source, target, options, video)

    def video_frames(self, source: str | os.PathLike, video: VideoOptions | None = None) -> Iterator[FrameMask]:
        """The kept frames of a clip with their masks (``FrameMask``: index, time, RGB image as displayed,
        uint8 mask), decoded ahead on a thread, one batch in memory. With ``VideoOptions(smooth="off")``
        each mask equals ``self.mask(item.image)``."""
        from runtime.video.process import iter_frames

        self._require_open()
        return iter_frames(self, source, video)

    # --- the one load -> run -> render path, in the steps the file pipeline runs on its threads ---

    def load_for(self, image: ImageLike, options: RenderOptions) -> Prepared:
        """Load what ``options`` needs: the full-resolution colours in OpenCV's order (what the encoders
        take), or none for masks (a large JPEG then decodes at reduced scale)."""
        return self.load_prepared(image, keep="bgr" if options.needs_colours else None)

    def output(self, prepared: Prepared, probability: np.ndarray, options: RenderOptions) -> bytes:
        """Probability map -> mask -> picture -> encoded bytes (``runtime.render``)."""
        mask = postprocess(probability, prepared.shape)
        picture = draw(prepared.image, mask, options, "bgr")
        prepared.image = None  # the full-resolution copy can go before the (slow) encode
        return encode(picture, options)

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


# The drawing helpers live in runtime.render; they stay importable from here, where they started.
__all__ = [
    "COLOR_NAMES", "CUTOUT_COLOURS", "Backdrop", "ImageLike", "Prepared", "Remover", "RenderOptions", "apply_composite",
    "apply_cutout", "check_color", "fit_background", "parse_color",
]  # fmt: skip
