"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider, never a silent fallback."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.artifact import Artifact
from runtime.backends.base import Backend, BackendError, require_file
from runtime.errors import first_line

log = logging.getLogger(__name__)

# The --provider choices of every CLI come from here (through runtime.backends.provider_choices).
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_UNBOUNDED_BATCH = 64  # a dynamic batch axis has no profile; this caps host memory per run


def import_onnxruntime(path: Path):  # noqa: ANN201 - the module
    try:  # telemetry is already off: runtime/__init__.py, imported before any of this
        import onnxruntime as ort
    except ImportError:
        raise BackendError(f"{path}: onnxruntime is not installed (pip install onnxruntime)") from None
    return ort


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__(path)
        path = self.path
        ort = import_onnxruntime(path)
        require_file(path)
        self.provider = self._pick_provider(ort, provider)
        self.session = self._open_session(ort, threads)
        self._artifact = Artifact.from_onnx_props(self.session.get_modelmeta().custom_metadata_map, path)
        if precision not in (None, self._artifact.precision):
            raise BackendError(f"{path}: ONNX Runtime runs the file's own precision ({self._artifact.precision}); "
                               f"convert it, or use --backend openvino, for {precision}")  # fmt: skip
        self._read_io()
        log.debug("%s", self.describe())  # the caller (Remover) logs what runs

    def _pick_provider(self, ort, provider: str | None) -> str:  # noqa: ANN001 - the onnxruntime module
        available = ort.get_available_providers()
        if provider is None:  # default: CUDA when this onnxruntime build has it, else CPU
            provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
        if provider not in PROVIDERS:
            raise BackendError(f"{self.path}: unknown provider {provider!r}; choose {', '.join(PROVIDERS)}")
        if PROVIDERS[provider] not in available:
            raise BackendError(
                f"{self.path}: provider {provider!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)}); for CUDA install onnxruntime-gpu"
            )
        return provider

    def _open_session(self, ort, threads: int | None):  # noqa: ANN001, ANN202
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # keep ORT's own warnings off the user's terminal
        if self.provider == "cpu":
            # Spinning inference threads would steal the cores that the file pipeline's decode and
            # encode threads need (measured: 3.9 vs 3.0 images/s end to end on a busy 2-core machine).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # No memory pattern: with it, ONNX Runtime traces each new input shape's allocations on the
            # first run (served piecemeal by the CPU arena) and from the second run on takes one block
            # the size of the whole plan from the same arena. The arena never gives back the first run's
            # chunks and the block does not fit in them, so from the second batch on the process holds
            # both: peak RSS twice what one batch needs (U²-NetP 320, batch 8: 2.07 GiB after one batch,
            # 4.03 GiB after two). Without it the arena's chunks are reused by every later batch (flat
            # 2.07-2.40 GiB), at the same speed (docs/runtime.md "Safe batch runs"; benchmarks/memory.py).
            options.enable_mem_pattern = False
        wanted = PROVIDERS[self.provider]
        try:
            session = ort.InferenceSession(str(self.path), options, providers=[wanted])
        except Exception as exc:
            raise BackendError(f"{self.path}: cannot load ONNX model: {first_line(exc)}") from None
        active = session.get_providers()
        if not active or active[0] != wanted:
            raise BackendError(f"{self.path}: asked for {wanted} but ONNX Runtime runs {active}")
        return session

    def _read_io(self) -> None:
        """Input/output names, types and shapes, checked against the artifact."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
            shapes = [(i.name, i.shape) for i in inputs]
            raise BackendError(f"{self.path}: inputs are {shapes}; expected one (N, 3, H, W): is this a U²-Net export?")
        inp = inputs[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.input_type = inp.type
        self.output_types = {o.name: o.type for o in outputs}
        self.output_names = tuple(self.output_types)
        batch_dim, _, height, width = self.input_shape
        size = self.spec.size
        if height is None or width is None:
            self._artifact = self._artifact.replace(dynamic_hw=True)
        elif (height, width) != (size, size):
            raise BackendError(f"{self.path}: input is {height}x{width} but its metadata says {size}")
        self.max_batch = batch_dim or _UNBOUNDED_BATCH

    @property
    def on_host(self) -> bool:
        return self.provider == "cpu"

    @property
    def preferred_batch(self) -> int:
        # On a CPU batching gains nothing and delays the first results.
        return 1 if self.provider == "cpu" else super().preferred_batch

    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        try:
            return self.session.run(list(names), {self.input_name: batch})
        except Exception as exc:  # onnxruntime's own error types; all mean "this batch did not run"
            raise BackendError(f"{self.path}: ONNX Runtime failed on a batch of {len(batch)}: {first_line(exc)}") from None

    def _engine_text(self) -> str:
        import onnxruntime as ort

        return f"ONNX Runtime {ort.__version__} ({PROVIDERS[self.provider]})"

    def _close(self) -> None:
        self.session = None
