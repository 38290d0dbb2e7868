"""OpenVINO backend (CPU): the project's ONNX files, FP32, BF16 or their INT8 Q/DQ form.

Settings, each set on purpose (measured on 2-core CPUs, docs/backends.md):

- ``INFERENCE_PRECISION_HINT`` is always explicit. OpenVINO's own default on a CPU with BF16 hardware
  is bf16, so "fp32" would otherwise silently run BF16. ``precision=None`` picks BF16 where the CPU
  computes it natively (AVX-512 BF16 or AMX) and FP32 elsewhere; asking for BF16 on a CPU without it
  logs that and runs FP32 (emulated BF16 would be slower than FP32). An INT8 Q/DQ file runs its
  quantized layers in INT8 and the rest in FP32.
- ``PERFORMANCE_HINT`` LATENCY: the runtime has one batch in flight at a time, and THROUGHPUT splits
  the cores into streams that only pay off with several requests in flight.
- ``INFERENCE_NUM_THREADS`` = ``threads`` when given (default: OpenVINO's, one per core).
- Static shapes: the model is reshaped to each batch size it meets and compiled once per size. Each
  compiled model keeps its own activation memory (U²-NetP 320, BF16: ~60 MB per image of its batch,
  FP32 ~110 MB), so at most ``_COMPILED_SIZES`` sizes are kept, the least recently used dropped first:
  a run's batch plus its last, partial one (or the batch-1 check) never recompile, and a caller
  meeting many sizes (an API server) no longer grows by one compiled model per size.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime import cpu_info
from runtime.artifact import Artifact
from runtime.backends.base import Backend, BackendError, require_file
from runtime.errors import first_line
from runtime.onnx_props import OnnxPropsError, read_onnx_props

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = ("LATENCY", "THROUGHPUT")
_UNBOUNDED_BATCH = 64  # as for ONNX Runtime: a dynamic batch axis has no profile
_COMPILED_SIZES = 2  # compiled batch sizes kept at once (see the module docstring)


def import_openvino(path: Path):  # noqa: ANN201 - the module
    # `import openvino` loads its model-conversion tools, whose telemetry posts to an analytics host:
    # a runtime makes no outbound connection, so they get OpenVINO's own stub (used when it is absent).
    sys.modules.setdefault("openvino_telemetry", None)
    try:
        import openvino
    except ImportError:
        raise BackendError(f"{path}: openvino is not installed (pip install 'u2net-toolkit[openvino]')") from None
    return openvino


@functools.cache
def shared_core(ov):  # noqa: ANN001, ANN201 - the openvino module and its Core
    """One ``ov.Core`` per process, never destroyed before exit.

    Each Core loads its own CPU plugin, which on a CPU with AMX installs a new signal stack for the main
    thread and, when it is destroyed, puts back the one it replaced, even if that one's plugin (and its
    memory) is already gone. The next signal (Ctrl-C, SIGTERM) is then delivered onto unmapped memory and
    the process dies with SIGSEGV. One long-lived Core, as OpenVINO recommends anyway, never unwinds.
    """
    return ov.Core()


def choose_precision(path: Path, asked: str | None, file_precision: str) -> str:
    """What runs: ``asked`` if the CPU and the file allow it, else the explicit fallback (logged)."""
    if asked is not None and asked not in PRECISIONS:
        raise BackendError(f"{path}: OpenVINO runs {', '.join(PRECISIONS)}, not {asked!r}")
    if file_precision == "int8":
        if asked not in (None, "int8"):
            raise BackendError(f"{path}: an INT8 Q/DQ file runs in INT8; use the FP32 file for {asked}")
        return "int8"
    if asked == "int8":
        raise BackendError(f"{path}: is {file_precision}, not INT8 Q/DQ; make one with python -m export.to_onnx --int8")
    native = cpu_info.native_bf16()
    if asked == "bf16" and not native:
        log.warning("%s: this CPU has no native BF16 (no avx512_bf16 / amx_bf16): running FP32 instead", path.name)
        return "fp32"
    if asked is None:
        if not native:
            log.info("%s: no native BF16 on this CPU (no avx512_bf16 / amx_bf16): running FP32", path.name)
        return "bf16" if native else "fp32"
    return asked


def fastest_on_this_cpu(path: Path, provider: str | None) -> bool:
    """Whether ``open_backend`` should pick OpenVINO for ``path`` when no backend is named.

    On a CPU (no provider, or "cpu", and no CUDA build of ONNX Runtime to prefer) with OpenVINO
    installed: yes for the u8/s8 INT8 file (OpenVINO's INT8 kernels beat ONNX Runtime's at the same
    accuracy), and for FP32/FP16 files where the CPU has native BF16, which OpenVINO then runs. No for
    the symmetric s8/s8 file (OpenVINO 2026.4 lost 0.018 MAE on it here; it is TensorRT's form) and for
    FP32 without native BF16 (no faster than ONNX Runtime). docs/backends.md.
    """
    if provider not in (None, "cpu") or importlib.util.find_spec("openvino") is None:
        return False
    if provider is None and _onnxruntime_has_cuda():
        return False
    try:
        artifact = Artifact.from_onnx_props(read_onnx_props(path), path)
    except (OSError, ValueError, BackendError):
        return False  # let the default backend report what is wrong with the file
    if artifact.precision == "int8":
        return (artifact.int8 or {}).get("form") == "u8s8"
    return cpu_info.native_bf16()


def _onnxruntime_has_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
        *,
        hint: str = "LATENCY",
    ) -> None:
        super().__init__(path)
        path = self.path
        ov = import_openvino(path)
        require_file(path)
        if provider not in (None, "cpu"):
            raise BackendError(f"{path}: the OpenVINO backend runs on the CPU, not on provider {provider!r}")
        if hint not in HINTS:
            raise BackendError(f"{path}: unknown performance hint {hint!r}; choose {', '.join(HINTS)}")
        try:
            props = read_onnx_props(path)
        except OnnxPropsError as exc:
            raise BackendError(str(exc)) from None
        self._artifact = Artifact.from_onnx_props(props, path)
        self.precision = choose_precision(path, precision, self._artifact.precision)
        if (self._artifact.int8 or {}).get("form") == "s8s8-symmetric":
            log.warning("%s: the symmetric s8/s8 INT8 form is TensorRT's; OpenVINO measured less accurate on it "
                        "than on the u8/s8 file (X.int8-ort.onnx)", path.name)
        self.hint, self.threads = hint, threads
        self.core = shared_core(ov)
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for every unreadable file
            raise BackendError(f"{path}: OpenVINO cannot read it: {first_line(exc)}") from None
        self._read_io()
        self._compiled: OrderedDict[int | None, tuple] = OrderedDict()  # least recently used first
        self._compile(None if self._artifact.dynamic_hw else 1)  # load errors surface here, not mid-run
        log.debug("%s", self.describe())

    def _read_io(self) -> None:
        inputs = self.model.inputs
        shape = inputs[0].get_partial_shape() if len(inputs) == 1 else None
        if shape is None or shape.rank.get_length() != 4 or not shape[1].is_static or shape[1].get_length() != 3:
            raise BackendError(f"{self.path}: expected one (N, 3, H, W) input: is this a U²-Net export?")
        self.output_names = tuple(output.get_any_name() for output in self.model.outputs)
        dims = [d.get_length() if d.is_static else None for d in shape]
        size = self.spec.size
        if dims[2] is None or dims[3] is None:
            self._artifact = self._artifact.replace(dynamic_hw=True)
        elif (dims[2], dims[3]) != (size, size):
            raise BackendError(f"{self.path}: input is {dims[2]}x{dims[3]} but its metadata says {size}")
        self.max_batch = dims[0] or _UNBOUNDED_BATCH

    def _config(self) -> dict[str, str]:
        # Explicit in every case: OpenVINO's default on a BF16-capable CPU is bf16.
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": self.hint}  # fmt: skip
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        return config

    def _compile(self, batch: int | None) -> tuple:
        """(compiled model, infer request) for a static batch size (None: the file's dynamic shapes)."""
        if batch in self._compiled:
            self._compiled.move_to_end(batch)
        else:
            # Memory bound: without this every batch size met kept a compiled model, e.g. 1 (the check),
            # 8, 7, 5, 3 -> 0.20, 0.68, 1.09, 1.39, 1.57 GiB peak RSS; dropped before compiling the
            # next, so two models at most are ever alive (1.09 GiB for the same sizes).
            while len(self._compiled) >= _COMPILED_SIZES:
                self._compiled.popitem(last=False)
            model = self.model
            if batch is not None:
                model = self.model.clone()
                size = self.spec.size
                model.reshape([batch, 3, size, size])
            try:
                compiled = self.core.compile_model(model, "CPU", self._config())
            except Exception as exc:
                raise BackendError(f"{self.path}: OpenVINO cannot compile it: {first_line(exc)}") from None
            self._compiled[batch] = (compiled, compiled.create_infer_request())
        return self._compiled[batch]

    @property
    def on_host(self) -> bool:
        return True  # always the CPU, whose memory bounds the batch

    @property
    def preferred_batch(self) -> int:
        return 1  # a CPU gains nothing from batching, and the first results come later

    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        compiled, request = self._compile(None if self._artifact.dynamic_hw else len(batch))
        try:
            results = request.infer({0: batch})
        except Exception as exc:
            raise BackendError(f"{self.path}: OpenVINO failed on a batch of {len(batch)}: {first_line(exc)}") from None
        by_name = {name: results[compiled.output(name)] for name in names}
        # The request reuses its output buffers on the next call: hand out copies.
        return [np.array(by_name[name], np.float32) for name in names]

    def _engine_text(self) -> str:
        import openvino

        threads = f", {self.threads} threads" if self.threads else ""
        return (f"OpenVINO {openvino.__version__.split('-')[0]} (CPU, {self.precision} inference precision, "
                f"{self.hint} hint{threads})")  # fmt: skip

    def _close(self) -> None:
        self._compiled.clear()
        self.model = None
