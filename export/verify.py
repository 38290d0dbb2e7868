"""Every export checks itself: ONNX Runtime against PyTorch on the same preprocessed images.

Inputs are real photos from ``../shared/data/SOD`` when present (synthetic samples otherwise),
preprocessed by ``runtime.preprocess.preprocess`` with the spec read back from the ONNX file, exactly
as the runtime will (and that spec must equal the checkpoint's). The ONNX side runs through the runtime's own
``OnnxRuntimeBackend`` at batch N and batch 1 (and at an odd, non-square size when H and W are
dynamic); the PyTorch side is the checkpoint's model in eval mode. Outputs are judged with the
per-precision tolerances of ``TOLERANCES``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from export.errors import ExportError
from export.onnx import INPUT_NAME, OUTPUT_NAME
from runtime.backends.base import BackendError
from runtime.backends.onnxrt import OnnxRuntimeBackend
from runtime.preprocess import PreprocessSpec, normalize, preprocess, to_rgb8
from train.model import U2Net

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SOD_DIR = Path(os.environ.get("U2NET_SOD_DIR", REPO.parent / "shared" / "data" / "SOD"))
DEFAULT_IMAGES = 3


@dataclass(frozen=True)
class Tolerance:
    """Largest accepted absolute difference of probabilities; ``mean_abs`` None = not judged."""

    max_abs: float
    mean_abs: float | None = None

    def accepts(self, max_abs: float, mean_abs: float) -> bool:
        # Written so that NaN differences fail.
        if not max_abs <= self.max_abs:
            return False
        return self.mean_abs is None or mean_abs <= self.mean_abs

    def __str__(self) -> str:
        mean = f", mean abs <= {self.mean_abs:g}" if self.mean_abs is not None else ""
        return f"max abs <= {self.max_abs:g}{mean}"


# One table for every precision (cf. Polygraphy's CompareFunc): FP32 must match to rounding,
# FP16 may drift a little per pixel but not on average.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4),
    "fp16": Tolerance(max_abs=5e-2, mean_abs=2e-3),
    # INT8 moves single pixels near edges a lot; what counts is the average (and the SOD metrics,
    # measured by benchmarks.accuracy), so only gross breakage is caught here.
    "int8": Tolerance(max_abs=0.9, mean_abs=3e-2),
}


@dataclass(frozen=True)
class Comparison:
    path: Path
    precision: str
    max_abs: float
    mean_abs: float
    images: int
    source: str  # "SOD photos" or "synthetic images"
    checks: tuple[str, ...]  # e.g. ("batch 3 at 320x320", "batch 1 at 320x320", "batch 3 at 161x241")
    tolerance: Tolerance

    @property
    def ok(self) -> bool:
        return self.tolerance.accepts(self.max_abs, self.mean_abs)

    def summary(self) -> str:
        return (
            f"ONNX Runtime vs PyTorch on {self.images} {self.source} ({', '.join(self.checks)}): "
            f"max abs diff {self.max_abs:.3g}, mean abs diff {self.mean_abs:.3g} "
            f"[{self.precision} tolerance: {self.tolerance}]"
        )


def sample_images(n: int = DEFAULT_IMAGES, sod_dir: Path = SOD_DIR) -> tuple[list[np.ndarray], str]:
    """``n`` RGB uint8 images: SOD photos when the folder is there, synthetic samples otherwise."""
    photos = sorted((sod_dir / "images").glob("*.jpg")) if (sod_dir / "images").is_dir() else []
    images = []
    for path in photos:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:  # an unreadable photo is skipped: the check needs images, not that one
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(images) == n:
            return images, "SOD photos"
    from train.synthetic import make_sample

    return [make_sample(seed, size=256)[0] for seed in range(n)], "synthetic images"


def _torch_probabilities(model: U2Net, batch: np.ndarray) -> list[np.ndarray]:
    """The seven maps of the PyTorch model as probabilities, fused first."""
    with torch.no_grad():
        return [torch.sigmoid(m).numpy() for m in model.forward_logits(torch.from_numpy(batch))]


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
        self.model, self.images, self.source, self.spec = model, images, source, spec
        self._reference: dict[tuple, list[np.ndarray]] = {}

    def _reference_for(self, batch: np.ndarray) -> list[np.ndarray]:
        key = (batch.shape, hashlib.sha1(batch.tobytes()).hexdigest())  # FP32 and FP16 files share inputs
        if key not in self._reference:
            was_training = self.model.training
            self.model.eval()
            try:
                self._reference[key] = _torch_probabilities(self.model, batch)
            finally:
                self.model.train(was_training)
        return self._reference[key]

    def _runs(self, backend: OnnxRuntimeBackend) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
        """(label, input batch, PyTorch outputs): all images, the first alone, and an odd size when
        H and W are dynamic."""
        spec: PreprocessSpec = backend.spec
        batch = preprocess(self.images, spec)
        reference = self._reference_for(batch)
        runs = [(f"batch {len(batch)} at {spec.size}x{spec.size}", batch, reference)]
        if len(batch) > 1:  # eval-mode U²-Net treats batch items independently: reuse the batch-N outputs
            runs.append((f"batch 1 at {spec.size}x{spec.size}", batch[:1], [r[:1] for r in reference]))
        _, _, height, width = backend.session.get_inputs()[0].shape
        if not isinstance(height, int) or not isinstance(width, int):
            h, w = _odd_size(spec.size)
            resized = [cv2.resize(to_rgb8(im), (w, h), interpolation=cv2.INTER_AREA) for im in self.images]
            odd = np.stack([normalize(im, spec) for im in resized])
            runs.append((f"batch {len(odd)} at {h}x{w}", odd, self._reference_for(odd)))
        return runs

    def compare(self, path: str | os.PathLike, precision: str | None = None) -> Comparison:
        """Run the checks on ``path``; ``precision`` defaults to the file's ``u2net.precision``."""
        path = Path(path)
        try:
            backend = OnnxRuntimeBackend(path, provider="cpu")
        except BackendError as exc:
            raise ExportError(str(exc)) from None
        try:
            return self._compare(backend, path, precision or _precision_of(backend))
        finally:
            backend.close()

    def _compare(self, backend: OnnxRuntimeBackend, path: Path, precision: str) -> Comparison:
        if precision not in TOLERANCES:
            raise ExportError(f"{path}: no tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
        _check_contract(backend, path)
        if self.spec is not None and backend.spec != self.spec:
            raise ExportError(f"{path}: metadata describes {backend.spec}, expected {self.spec}")
        outputs = [o.name for o in backend.session.get_outputs()]
        runs = self._runs(backend)
        worst_max, sum_abs, count = 0.0, 0.0, 0
        for label, inputs, reference in runs:
            try:
                got = backend.session.run(None, {backend.input_name: inputs})
            except Exception as exc:  # onnxruntime's own error types; all mean "this file does not run"
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ExportError(f"{path}: ONNX Runtime cannot run it ({label}): {first[:200]}") from None
            for name, value, expected in zip(outputs, got, reference, strict=False):
                if value.shape != expected.shape:
                    raise ExportError(
                        f"{path}: output {name!r} has shape {value.shape} ({label}), PyTorch gives {expected.shape}"
                    )
                diff = np.abs(value.astype(np.float64) - expected)
                if np.isnan(diff).any():  # a NaN output must fail, and max() would hide it
                    worst_max = sum_abs = float("nan")
                worst_max = max(worst_max, float(diff.max()))
                sum_abs += float(diff.sum())
                count += diff.size
        result = Comparison(
            path=path,
            precision=precision,
            max_abs=worst_max,
            mean_abs=sum_abs / count,
            images=len(self.images),
            source=self.source,
            checks=tuple(run[0] for run in runs),
            tolerance=TOLERANCES[precision],
        )
        log.info("%s: %s", path.name, result.summary())
        return result

    def verify(self, path: str | os.PathLike, precision: str | None = None) -> Comparison:
        """``compare``, raising ``ExportError`` (one line) when the file is out of tolerance."""
        result = self.compare(path, precision)
        if not result.ok:
            raise ExportError(
                f"{result.path}: verification failed: ONNX Runtime disagrees with PyTorch: "
                f"max abs diff {result.max_abs:.3g}, mean abs diff {result.mean_abs:.3g} "
                f"({result.precision} tolerance: {result.tolerance})"
            )
        return result


def _precision_of(backend: OnnxRuntimeBackend) -> str:
    try:
        return str(json.loads(backend.metadata.get("u2net.precision", '"fp32"')))
    except ValueError:
        return "unknown"


def _check_contract(backend: OnnxRuntimeBackend, path: Path) -> None:
    """Input ``image`` float32 (N,3,H,W) with a dynamic batch; first output ``mask`` float32 (N,1,H,W)."""
    inputs, outputs = backend.session.get_inputs(), backend.session.get_outputs()
    problems = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)":
        problems.append(f"inputs {[(i.name, i.type) for i in inputs]}, expected one float32 {INPUT_NAME!r}")
    elif len(inputs[0].shape) != 4 or isinstance(inputs[0].shape[0], int) or inputs[0].shape[1] != 3:
        problems.append(f"input shape {inputs[0].shape}, expected (batch, 3, H, W) with a dynamic batch")
    if not outputs or outputs[0].name != OUTPUT_NAME or outputs[0].type != "tensor(float)":
        problems.append(f"first output {(outputs[0].name, outputs[0].type) if outputs else None}, "
                        f"expected float32 {OUTPUT_NAME!r}")
    if problems:
        raise ExportError(f"{path}: breaks the ONNX contract: {'; '.join(problems)}")


def verify_onnx(path: str | os.PathLike, model: U2Net, precision: str | None = None) -> Comparison:
    """One-shot check of ``path`` against ``model`` on the default sample images."""
    return ParityCheck(model).verify(path, precision)


__all__ = ["TOLERANCES", "Comparison", "ParityCheck", "Tolerance", "sample_images", "verify_onnx"]
