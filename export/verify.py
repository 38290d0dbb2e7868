"""Every export checks itself: ONNX Runtime against PyTorch on the same preprocessed images.

Inputs are real photos from ``../shared/data/SOD`` when present (synthetic samples otherwise),
preprocessed by ``runtime.preprocess.preprocess`` with the spec read back from the ONNX file, exactly
as the runtime will (and that spec must equal the checkpoint's). The ONNX side runs through the runtime's own
``OnnxRuntimeBackend`` at batch N and batch 1 (and at an odd, non-square size when H and W are
dynamic); the PyTorch side is the checkpoint's model in eval mode (``TorchBackend``). ``export.compare``
judges every output with the per-precision tolerances of ``TOLERANCES``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from export.compare import TOLERANCES, Comparison, OutputMismatch, Tolerance, compare
from export.errors import ExportError
from export.onnx import INPUT_NAME, OUTPUT_NAME
from export.samples import sample_images
from export.torch_backend import TorchBackend
from runtime.backends.base import BackendError
from runtime.backends.onnxrt import OnnxRuntimeBackend
from runtime.preprocess import PreprocessSpec, normalize, preprocess, to_rgb8
from train.model import U2Net

log = logging.getLogger(__name__)

def _odd_size(size: int) -> tuple[int, int]:
    """A non-square size with odd sides, so ceil-mode pooling and resizes are exercised."""
    return (size // 2) | 1, (size * 3 // 4) | 1


class ParityCheck:
    """Compares ONNX files against one PyTorch model; PyTorch outputs are computed once per input."""

    def __init__(
        self,
        model: U2Net,
        images: list[np.ndarray] | None = None,
        source: str = "images",
        spec: PreprocessSpec | None = None,
    ) -> None:
        """``spec``: when given, each file's metadata must describe exactly this preprocessing."""
        if images is None:
            images, source = sample_images()
        if not images:
            raise ValueError("parity check needs at least one image")
        self.images, self.source, self.spec = images, source, spec
        self.reference = TorchBackend(model, spec or PreprocessSpec(), memoize=True)

    def _batches(self, backend: OnnxRuntimeBackend) -> list[np.ndarray]:
        """All images, the first alone, and an odd, non-square size when H and W are dynamic."""
        spec = backend.spec
        batch = preprocess(self.images, spec)
        batches = [batch, batch[:1]] if len(batch) > 1 else [batch]
        if backend.artifact.dynamic_hw:
            h, w = _odd_size(spec.size)
            resized = [cv2.resize(to_rgb8(im), (w, h), interpolation=cv2.INTER_AREA) for im in self.images]
            batches.append(np.stack([normalize(im, spec) for im in resized]))
        return batches

    def compare(self, path: str | os.PathLike, precision: str | None = None) -> Comparison:
        """Run the checks on ``path``; ``precision`` defaults to the file's ``u2net.precision``."""
        path = Path(path)
        try:
            backend = OnnxRuntimeBackend(path, provider="cpu")
        except BackendError as exc:
            raise ExportError(str(exc)) from None
        with backend:
            precision = precision or backend.artifact.precision
            if precision not in TOLERANCES:
                raise ExportError(f"{path}: no tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
            _check_contract(backend, path)
            if self.spec is not None and backend.spec != self.spec:
                raise ExportError(f"{path}: metadata describes {backend.spec}, expected {self.spec}")
            try:
                result = compare((self.reference, backend), self._batches(backend), TOLERANCES[precision],
                                 all_outputs=True, labels=("PyTorch", "ONNX Runtime"), precision=precision,
                                 inputs=f"{len(self.images)} {self.source}")  # fmt: skip
            except (BackendError, OutputMismatch) as exc:
                raise ExportError(f"{path}: {str(exc).removeprefix(f'{path}: ')}") from None
        log.info("%s: %s", path.name, result.summary())
        return result

    def verify(self, path: str | os.PathLike, precision: str | None = None) -> Comparison:
        """``compare``, raising ``ExportError`` (one line) when the file is out of tolerance."""
        result = self.compare(path, precision)
        if not result.ok:
            raise ExportError(
                f"{path}: verification failed: ONNX Runtime disagrees with PyTorch: "
                f"max abs diff {result.max_abs:.3g}, mean abs diff {result.mean_abs:.3g} "
                f"({result.precision} tolerance: {result.tolerance})"
            )
        return result


def _check_contract(backend: OnnxRuntimeBackend, path: Path) -> None:
    """Input ``image`` float32 (N,3,H,W) with a dynamic batch; first output ``mask`` float32 (N,1,H,W)."""
    problems = []
    if backend.input_name != INPUT_NAME or backend.input_type != "tensor(float)":
        problems.append(f"input {(backend.input_name, backend.input_type)}, expected one float32 {INPUT_NAME!r}")
    elif backend.input_shape[0] is not None:
        problems.append(f"input shape {backend.input_shape}, expected (batch, 3, H, W) with a dynamic batch")
    first = backend.output_names[0]
    if first != OUTPUT_NAME or backend.output_types[first] != "tensor(float)":
        problems.append(f"first output {(first, backend.output_types[first])}, expected float32 {OUTPUT_NAME!r}")
    if problems:
        raise ExportError(f"{path}: breaks the ONNX contract: {'; '.join(problems)}")


__all__ = ["TOLERANCES", "Comparison", "ParityCheck", "Tolerance"]
