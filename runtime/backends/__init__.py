"""Backends behind one interface, chosen by the engine file's suffix; imported lazily."""

from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Backend, BackendError

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".plan", ".engine", ".trt")


def open_backend(path: str | Path, provider: str | None = None, threads: int | None = None) -> Backend:
    """Open an engine: ``.onnx`` runs on ONNX Runtime, ``.plan``/``.engine`` on TensorRT,
    ``grpc://HOST:PORT/MODEL`` / ``http://HOST:PORT/MODEL`` on a Triton Inference Server.

    ``provider`` (ONNX only): ``cpu``, ``cuda`` or ``tensorrt``; None picks CUDA when available.
    """
    from runtime.backends.triton import is_triton_url

    if is_triton_url(path):
        if provider is not None:
            raise BackendError(f"{path}: a Triton URL runs on the server, where --provider does not apply")
        from runtime.backends.triton import TritonBackend

        return TritonBackend(str(path))
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from runtime.backends.onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, provider=provider, threads=threads)
    if suffix in TENSORRT_SUFFIXES:
        if provider not in (None, "tensorrt"):
            raise BackendError(f"{path}: a TensorRT engine runs on TensorRT, not on provider {provider!r}")
        from runtime.backends.trt import TensorRTBackend

        return TensorRTBackend(path)
    raise BackendError(f"{path}: unknown engine type {suffix or '(no suffix)'!r}; expected .onnx, .plan or .engine")


__all__ = ["Backend", "BackendError", "open_backend"]
