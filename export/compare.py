"""One comparison of backends on the same batches (Polygraphy's Comparator is the model).

Used by export verification (ONNX Runtime vs PyTorch), the TensorRT engine check (TensorRT vs
ONNX Runtime FP32) and ``benchmarks.accuracy --compare`` (any engine vs any engine). numpy only:
the backends do the running, this module only judges their outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from runtime.backends.base import Backend


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
    # BF16 keeps 8 mantissa bits (FP16 keeps 10): FP32 files run in BF16 by OpenVINO drift a little more.
    "bf16": Tolerance(max_abs=0.1, mean_abs=5e-3),
}


class OutputMismatch(ValueError):
    """The two backends' outputs cannot be compared (different names or shapes)."""


@dataclass(frozen=True)
class Comparison:
    """Candidate vs reference on the same inputs: the worst and the mean absolute difference."""

    candidate: str  # e.g. "ONNX Runtime" or "TensorRT fp16 engine"
    reference: str  # e.g. "PyTorch" or "ONNX Runtime FP32"
    precision: str  # the candidate's, which picks the tolerance
    max_abs: float
    mean_abs: float
    checks: tuple[str, ...]  # one label per batch, e.g. ("batch 3 at 320x320", "batch 1 at 320x320")
    tolerance: Tolerance
    inputs: str = ""  # what the batches were made of, e.g. "3 SOD photos"

    @property
    def ok(self) -> bool:
        return self.tolerance.accepts(self.max_abs, self.mean_abs)

    def summary(self) -> str:
        on = f" on {self.inputs}" if self.inputs else ""
        return (
            f"{self.candidate} vs {self.reference}{on} ({', '.join(self.checks)}): "
            f"max abs diff {self.max_abs:.3g}, mean abs diff {self.mean_abs:.3g} "
            f"[{self.precision} tolerance: {self.tolerance}]"
        )


def batch_label(batch: np.ndarray) -> str:
    n, _, height, width = batch.shape
    return f"batch {n} at {height}x{width}"


def compare(
    backends: tuple[Backend, Backend],
    batches: Iterable[np.ndarray],
    tolerance: Tolerance,
    *,
    all_outputs: bool = False,
    labels: tuple[str, str] | None = None,
    precision: str | None = None,
    inputs: str = "",
) -> Comparison:
    """Run ``(reference, candidate)`` on every batch and measure how far the candidate's outputs are.

    With ``all_outputs`` every output the candidate has (the side maps too) is compared by name
    against the reference's; otherwise the fused maps. A NaN anywhere makes the result fail.
    ``labels`` name the two in the summary (default: their backend names); ``precision`` defaults to
    the candidate artifact's. Raises OutputMismatch when names or shapes differ; the backends'
    own errors (BackendError) pass through.
    """
    reference, candidate = backends
    worst, total, count, checks = 0.0, 0.0, 0, []
    for batch in batches:
        want, got = _outputs(reference, batch, all_outputs), _outputs(candidate, batch, all_outputs)
        for name, value in got.items():
            expected = want.get(name)
            if expected is None or value.shape != expected.shape:
                shape = None if expected is None else expected.shape
                raise OutputMismatch(f"output {name!r} is {value.shape} ({batch_label(batch)}), "
                                     f"the reference gives {shape}")  # fmt: skip
            diff = np.abs(value.astype(np.float64) - expected.astype(np.float64))
            if np.isnan(diff).any():  # a NaN output must fail, and max() would hide it
                worst = total = float("nan")
            worst = max(worst, float(diff.max()))
            total += float(diff.sum())
            count += diff.size
        checks.append(batch_label(batch))
    names = labels or (reference.name, candidate.name)
    return Comparison(
        candidate=names[1], reference=names[0], precision=precision or candidate.artifact.precision,
        max_abs=worst, mean_abs=total / max(count, 1), checks=tuple(checks), tolerance=tolerance, inputs=inputs,
    )  # fmt: skip


def _outputs(backend: Backend, batch: np.ndarray, all_outputs: bool) -> Mapping[str, np.ndarray]:
    if all_outputs:
        return backend.run_outputs(batch)
    return {"fused map": backend.run(batch)}


__all__ = ["TOLERANCES", "Comparison", "OutputMismatch", "Tolerance", "batch_label", "compare"]
