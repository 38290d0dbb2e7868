"""The one interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from runtime.preprocess import PreprocessSpec


class BackendError(Exception):
    """An engine that cannot be loaded or run; the message is one line naming the file."""


class Backend(Protocol):
    """Load once, run preprocessed batches, describe itself, close.

    ``run`` takes float32 (N, 3, size, size) with 1 <= N <= ``max_batch`` and returns the
    fused probability map, float32 (N, 1, size, size).
    """

    name: str  # "onnxruntime", "tensorrt"
    spec: PreprocessSpec  # from the engine's own metadata
    metadata: dict[str, str]
    max_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
