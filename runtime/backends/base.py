"""The one interface every inference backend implements (Polygraphy's runners are the model).

A backend is opened once from an engine (a file or, for a server, a URL), describes itself from
its ``Artifact``, runs preprocessed batches and is closed. The public ``run`` checks the batch
(type, dtype, shape, size) with one clear error and then calls the subclass's ``_run``, so no
backend repeats those checks and no caller needs to know which backend it holds.

A new backend is one module with a ``Backend`` subclass plus one row in ``runtime.backends.BACKENDS``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import PRIMARY_OUTPUT, Artifact
from runtime.errors import BackendClosed, BackendError, BatchError, first_line
from runtime.names import engine_location
from runtime.preprocess import PreprocessSpec

GPU_PREFERRED_BATCH = 8  # engines on a GPU: enough to fill it for U²-Net at 320x320


class Backend(ABC):
    """Load once, run preprocessed batches, describe itself, close (also as a context manager).

    ``run`` takes float (N, 3, size, size) with 1 <= N <= ``max_batch`` (any H, W when the
    artifact's size is dynamic) and returns the fused probability map, float32 (N, 1, H, W).
    Subclasses set ``artifact``, ``max_batch`` and ``output_names`` in ``__init__`` and implement
    ``_run`` and ``_close``; they override ``preferred_batch``, ``min_batch`` and ``_engine_text``
    where they know better.
    """

    name: str = "backend"  # the registry's name: "onnxruntime", "tensorrt", ...

    def __init__(self, path: str | os.PathLike, artifact: Artifact | None = None) -> None:
        self.path: Path | str = engine_location(path)
        self._artifact = artifact or Artifact()
        self.max_batch: int = 1
        self.output_names: tuple[str, ...] = (PRIMARY_OUTPUT,)
        self._closed = False

    # -- what it is --------------------------------------------------------------------------
    @property
    def artifact(self) -> Artifact:
        return self._artifact

    @property
    def spec(self) -> PreprocessSpec:
        return self._artifact.spec

    @property
    def min_batch(self) -> int:
        """Smallest batch the engine computes; ``run`` pads smaller ones where the engine needs it."""
        return 1

    @property
    def preferred_batch(self) -> int:
        """The batch that runs best (a GPU default; CPU backends and TensorRT profiles say otherwise)."""
        return max(1, min(GPU_PREFERRED_BATCH, self.max_batch))

    @property
    def on_host(self) -> bool:
        """True when inference runs on this machine's CPU, whose memory then bounds the batch."""
        return False

    @property
    def primary_output(self) -> str:
        return PRIMARY_OUTPUT if PRIMARY_OUTPUT in self.output_names else self.output_names[0]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def label(self) -> str:
        """The engine file's name (a server backend: its URL)."""
        return self.path.name if isinstance(self.path, Path) else self.path

    def describe(self) -> str:
        """One line: engine and device, file, what the artifact is, batch range."""
        batches = f"batch {self.min_batch}..{self.max_batch}"
        return f"{self._engine_text()}, {self.label}: {self._artifact.summary()}, {batches}"

    def _engine_text(self) -> str:
        return self.name

    # -- running -----------------------------------------------------------------------------
    def check_batch(self, batch: Any) -> np.ndarray:
        """``batch`` as a contiguous float32 array, or a BatchError (also a ValueError) saying what is wrong."""
        if self._closed:
            raise BackendClosed(f"{self.path}: {self.name} backend is closed")
        size = self.spec.size
        wanted = f"a float32 batch (N, 3, {size}, {size})"
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
            got = getattr(batch, "shape", type(batch).__name__)
            raise BatchError(f"{self.path}: expected {wanted}, got {got}")
        if not self._artifact.dynamic_hw and batch.shape[2:] != (size, size):
            raise BatchError(f"{self.path}: expected {wanted}, got {batch.shape}")
        if batch.dtype.kind != "f":
            raise BatchError(f"{self.path}: expected {wanted}, got dtype {batch.dtype}")
        n = batch.shape[0]
        if not 1 <= n <= self.max_batch:
            raise BatchError(f"{self.path}: batch of {n} is outside {self._batch_limits_text()}")
        return np.ascontiguousarray(batch, np.float32)

    def _batch_limits_text(self) -> str:
        return f"the engine's batch range (1..{self.max_batch})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) -> the fused probability map (N, 1, H, W), float32."""
        return self._run(self.check_batch(batch), (self.primary_output,))[0]

    def run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output the engine has (the fused map, and the side maps when exported), by name."""
        arrays = self._run(self.check_batch(batch), self.output_names)
        return dict(zip(self.output_names, arrays, strict=True))

    def stage(self, batch: np.ndarray) -> Any:
        """Put a checked batch where the engine reads it (benchmarks time ``run_staged`` alone)."""
        return self.check_batch(batch)

    def run_staged(self, staged: Any) -> Any:
        """Run a staged batch and wait for the result, which stays where the engine wrote it."""
        return self._run(staged, (self.primary_output,))[0]

    @abstractmethod
    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        """Run a checked float32 batch; return the outputs ``names`` (float32) in that order."""

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free what the engine holds; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:  # noqa: B027 - backends with nothing to free need not override it
        pass

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_file(path: Path) -> None:
    """BackendError unless ``path`` is a non-empty file."""
    if not path.is_file():
        raise BackendError(f"{path}: no such engine file")
    if path.stat().st_size == 0:
        raise BackendError(f"{path}: engine file is empty (0 bytes)")


__all__ = ["Backend", "BackendClosed", "BackendError", "BatchError", "first_line", "require_file"]
