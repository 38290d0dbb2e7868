"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider, never a silent fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.backends.base import BackendError
from runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_UNBOUNDED_BATCH = 64  # a dynamic batch axis has no profile; this caps host memory per run


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str | Path, provider: str | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError(f"{path}: onnxruntime is not installed (pip install onnxruntime)") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such engine file")
        if self.path.stat().st_size == 0:
            raise BackendError(f"{self.path}: engine file is empty (0 bytes)")
        available = ort.get_available_providers()
        if provider is None:  # default: CUDA when this onnxruntime build has it, else CPU
            provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
        if provider not in PROVIDERS:
            raise BackendError(f"{self.path}: unknown provider {provider!r}; choose {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[provider]
        if wanted not in available:
            raise BackendError(
                f"{self.path}: provider {provider!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)}); for CUDA install onnxruntime-gpu"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # keep ORT's own warnings off the user's terminal
        if provider == "cpu":
            # Spinning inference threads would steal the cores that the file pipeline's decode and
            # encode threads need (measured: 3.9 vs 3.0 images/s end to end on a busy 2-core machine).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=[wanted])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"{self.path}: cannot load ONNX model: {first[:200]}") from None
        active = self.session.get_providers()
        if not active or active[0] != wanted:
            raise BackendError(f"{self.path}: asked for {wanted} but ONNX Runtime runs {active}")
        self.provider = provider
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.spec = PreprocessSpec.from_metadata(self.metadata)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "mask" if "mask" in outputs else outputs[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise BackendError(
                f"{self.path}: input {inp.name} has shape {inp.shape}; expected (N, 3, H, W): is this a U²-Net export?"
            )
        batch_dim, _, height, width = inp.shape
        if isinstance(height, int) and isinstance(width, int) and (height, width) != (self.spec.size,) * 2:
            raise BackendError(f"{self.path}: input is {height}x{width} but its metadata says {self.spec.size}")
        self.max_batch = batch_dim if isinstance(batch_dim, int) else _UNBOUNDED_BATCH
        log.debug("%s", self.describe())  # the caller (Remover) logs what runs

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    def describe(self) -> str:
        variant = self.metadata.get("u2net.variant", "?").strip('"')
        precision = self.metadata.get("u2net.precision", "?").strip('"')
        return (
            f"ONNX Runtime {self._version()} ({self.session.get_providers()[0]}), {self.path.name}: "
            f"{variant} {precision} {self.spec.size}x{self.spec.size}"
        )

    def close(self) -> None:
        self.session = None

    @staticmethod
    def _version() -> str:
        import onnxruntime as ort

        return ort.__version__
