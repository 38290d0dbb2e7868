"""Backends behind one interface, chosen by the engine's suffix (or URL scheme), imported lazily.

Adding a backend is one module with a ``base.Backend`` subclass whose constructor takes
``(path, provider=None, threads=None, precision=None)``, plus one row in ``BACKENDS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.backends.base import Backend, BackendClosed, BackendError, BatchError
from runtime.backends.onnxrt import PROVIDERS as ONNXRUNTIME_PROVIDERS
from runtime.names import engine_location, is_url, url_scheme

PRECISION_CHOICES = ("fp32", "bf16")  # what --precision takes; an INT8 file runs in INT8 on its own


@dataclass(frozen=True)
class BackendEntry:
    name: str  # what --backend takes
    module: str
    cls: str
    suffixes: tuple[str, ...] = ()  # engine files it opens, lower case
    schemes: tuple[str, ...] = ()  # URLs it opens, e.g. "grpc://"
    providers: tuple[str, ...] = ()  # what --provider may say for it
    default: bool = True  # picked by suffix; False: only when asked for by name
    # "module:function(path, provider) -> bool": a default row with one is picked by suffix only when it
    # says yes (e.g. OpenVINO: installed, running on the CPU, and measured faster for this kind of file).
    prefers: str = ""

    def load(self) -> type[Backend]:
        return getattr(importlib.import_module(self.module), self.cls)

    def wants(self, path: Path, provider: str | None) -> bool:
        if not self.prefers:
            return True
        module, function = self.prefers.split(":")
        return bool(getattr(importlib.import_module(module), function)(path, provider))


# Earlier rows win when several default backends accept a suffix.
BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("openvino", "runtime.backends.openvino", "OpenVINOBackend", (".onnx",), providers=("cpu",),
                 prefers="runtime.backends.openvino:fastest_on_this_cpu"),
    BackendEntry("onnxruntime", "runtime.backends.onnxrt", "OnnxRuntimeBackend", (".onnx",),
                 providers=tuple(ONNXRUNTIME_PROVIDERS)),
    BackendEntry("tensorrt", "runtime.backends.trt", "TensorRTBackend", (".plan", ".engine", ".trt"),
                 providers=("tensorrt",)),
    BackendEntry("triton", "runtime.backends.triton", "TritonBackend", schemes=("grpc://", "http://")),
)  # fmt: skip


def backend_names() -> list[str]:
    return [entry.name for entry in BACKENDS]


def provider_choices() -> list[str]:
    """Every value ``--provider`` accepts, in table order, each once."""
    return list(dict.fromkeys(p for entry in BACKENDS for p in entry.providers))


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--provider``, with their choices from ``BACKENDS``, for every CLI that runs engines."""
    parser.add_argument("--backend", choices=backend_names(), metavar="|".join(backend_names()),
                        help="run the engine on this backend (default: by the engine's suffix; an .onnx file on a "
                        "CPU runs on the fastest one installed: OpenVINO where present, else ONNX Runtime)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES,
                        help="compute precision where the backend chooses one (OpenVINO): bf16 needs a CPU with "
                        "AVX-512 BF16 or AMX, elsewhere FP32 runs and the log says so (default: bf16 where "
                        "native, else fp32; other backends run the file's own precision)")
    parser.add_argument("--provider", choices=provider_choices(),
                        help="ONNX Runtime execution provider (default: cuda when available, else cpu); "
                        "an unavailable provider is an error, never a silent fallback")  # fmt: skip


def find_backend(path: str | os.PathLike, backend: str | None = None, provider: str | None = None) -> BackendEntry:
    """The table row for ``backend`` (by name) or, when None, the first default row accepting ``path``
    (and, for a row with ``prefers``, wanting it with this ``provider``)."""
    if backend is not None:
        for entry in BACKENDS:
            if entry.name == backend:
                return entry
        raise BackendError(f"{path}: unknown backend {backend!r}; choose {', '.join(backend_names())}")
    text = os.fspath(path)
    if is_url(text):
        scheme = url_scheme(text) + "://"
        for entry in BACKENDS:
            if entry.default and scheme in entry.schemes:
                return entry
        raise BackendError(f"{text}: no backend serves {scheme} URLs")
    suffix = Path(text).suffix.lower()
    for entry in BACKENDS:
        if entry.default and suffix in entry.suffixes and entry.wants(Path(text), provider):
            return entry
    known = ", ".join(dict.fromkeys(s for entry in BACKENDS if entry.default for s in entry.suffixes))
    raise BackendError(f"{text}: unknown engine type {suffix or '(no suffix)'!r}; expected {known}")


def open_backend(
    path: str | os.PathLike,
    backend: str | None = None,
    provider: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Backend:
    """Open an engine: ``.onnx`` runs on OpenVINO where it is installed and measured faster on this CPU
    (``openvino.fastest_on_this_cpu``), else on ONNX Runtime; ``.plan``/``.engine`` on TensorRT;
    ``backend`` names another row of ``BACKENDS`` instead.

    ``provider``: ONNX Runtime's ``cpu``, ``cuda`` or ``tensorrt`` (None picks CUDA when available);
    ``threads``: inference threads on a CPU; ``precision``: for backends that can choose one.
    A backend refuses options it cannot honour with a BackendError.
    """
    entry = find_backend(path, backend, provider)
    return entry.load()(engine_location(path), provider=provider, threads=threads, precision=precision)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendClosed",
    "BackendEntry",
    "BackendError",
    "BatchError",
    "add_backend_arguments",
    "backend_names",
    "find_backend",
    "open_backend",
    "provider_choices",
]
