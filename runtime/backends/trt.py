"""TensorRT backend: a serialized engine (``X.plan``) and its side file ``X.plan.json``.

Uses the tensor-name API of TensorRT 10 and 11 only (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``): page-locked host buffers and device buffers sized for the profile's largest
batch, allocated once, and one CUDA stream. Any batch inside the engine's optimization profile runs.

The preprocessing spec comes from the side file's ``"metadata"`` (the ONNX metadata the engine was
built from), because a serialized engine has no room for it.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from runtime.backends.base import BackendError
from runtime.backends.cuda import CudaError, DeviceBuffer, HostBuffer, Stream, open_cuda
from runtime.backends.gpu_support import check_gpu_stack
from runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)
native_log = logging.getLogger("tensorrt")  # what the TensorRT library itself says

INSTALL_HINT = (
    "install it with this project's extra for your driver: pip install '.[tensorrt-cu12]' or "
    "'.[tensorrt-cu13]' (the major of nvidia-smi's CUDA Version)"
)
SIDE_SUFFIX = ".json"
OUTPUT_NAME = "mask"


def import_tensorrt() -> ModuleType | None:
    """The ``tensorrt`` module, or None when it is not installed (or its native libraries are missing)."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError):  # the PyPI stub without NVIDIA's libraries fails with either
        return None


def tensorrt_version(trt: ModuleType) -> tuple[int, int]:
    """(major, minor) of ``trt.__version__``, e.g. "10.13.0.35" -> (10, 13)."""
    parts = str(getattr(trt, "__version__", "0")).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


@functools.cache
def make_logger(trt: ModuleType) -> Any:
    """An ``ILogger`` that hands TensorRT's messages to Python ``logging`` (logger "tensorrt").

    The default ``trt.Logger`` prints to stdout through C++ std::cout, which would mix into the
    CLIs' parseable output. One instance per module: TensorRT keeps the first logger it is given
    for the whole process anyway.
    """
    levels = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
              "INFO": logging.INFO, "VERBOSE": logging.DEBUG}  # fmt: skip
    by_severity = {int(member): levels.get(name, logging.INFO) for name, member in
                   trt.ILogger.Severity.__members__.items()}  # fmt: skip

    class LoggingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = by_severity.get(int(severity), logging.INFO)
            if native_log.isEnabledFor(level):  # the builder sends thousands of VERBOSE lines
                native_log.log(level, "%s", msg)

    return LoggingLogger()


def side_file(engine_path: str | Path) -> Path:
    """``X.plan`` -> ``X.plan.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDE_SUFFIX)


def read_side_file(engine_path: Path) -> dict[str, Any]:
    """The side file's contents; BackendError naming the file when it is missing or unusable."""
    path = side_file(engine_path)
    if not path.is_file():
        raise BackendError(
            f"{engine_path}: needs its side file {path.name} (written next to it by python -m export.to_trt), "
            "which holds the preprocessing spec"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackendError(f"{path}: side file is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(info, dict) or not isinstance(info.get("metadata"), dict):
        raise BackendError(f'{path}: side file has no "metadata" object')
    return info


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._buffers: list[DeviceBuffer | HostBuffer] = []
        self._stream: Stream | None = None
        self.context = self.engine = None
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such engine file")
        if self.path.stat().st_size == 0:
            raise BackendError(f"{self.path}: engine file is empty (0 bytes)")
        self.info = read_side_file(self.path)
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in self.info["metadata"].items()}
        try:
            self.spec = PreprocessSpec.from_metadata(self.metadata)
        except (ValueError, TypeError) as exc:
            raise BackendError(f"{side_file(self.path)}: bad preprocessing metadata: {exc}") from None
        trt = import_tensorrt()
        if trt is None:
            raise BackendError(f"{self.path}: TensorRT is not installed ({INSTALL_HINT})")
        self.trt = trt
        try:
            self.cuda = open_cuda()
            self.gpu = check_gpu_stack(trt, self.cuda)
        except CudaError as exc:
            raise BackendError(f"{self.path}: {exc}") from None
        self._load(trt)
        try:
            self._allocate()
        except CudaError as exc:
            self.close()
            raise BackendError(f"{self.path}: {exc}") from None
        log.info("%s", self.describe())

    # -- loading -----------------------------------------------------------------------------
    def _load(self, trt: ModuleType) -> None:
        self._logger = make_logger(trt)
        try:
            self._runtime = trt.Runtime(self._logger)
        except Exception as exc:  # the binding raises TypeError when TensorRT cannot start CUDA
            raise BackendError(f"{self.path}: TensorRT cannot start on {self.gpu}: {exc}") from None
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendError(
                f"{self.path}: TensorRT {trt.__version__} cannot load this engine on {self.gpu}: "
                f"{self._why_unloadable(trt)}; rebuild it here with python -m export.to_trt"
            )
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise BackendError(f"{self.path}: expected one input and at least one output, got {inputs} -> {outputs}")
        self.input_name = inputs[0]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._extra_outputs = [n for n in outputs if n != self.output_name]  # side maps, if exported
        shape = tuple(engine.get_tensor_shape(self.input_name))
        size = self.spec.size
        if len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) not in ((size, size), (-1, -1)):
            raise BackendError(
                f"{self.path}: input {self.input_name} is {shape}, but the side file says 3x{size}x{size}"
            )
        profile = engine.get_tensor_profile_shape(self.input_name, 0)  # always three Dims, empty if none
        if len(profile) != 3 or any(len(shape) != 4 for shape in profile):
            raise BackendError(f"{self.path}: engine has no optimization profile for {self.input_name}")
        self.profile = tuple(tuple(int(v) for v in s) for s in profile)
        self.min_batch, self.opt_batch, self.max_batch = (s[0] for s in self.profile)
        lo, hi = self.profile[0][2:], self.profile[2][2:]
        if not (lo[0] <= size <= hi[0] and lo[1] <= size <= hi[1]):
            raise BackendError(f"{self.path}: the engine's profile {self.profile} does not allow {size}x{size}")
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in [self.input_name, *outputs]}
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")

    def _why_unloadable(self, trt: ModuleType) -> str:
        """The likely reason, from what the side file says about the build."""
        built_version = self.info.get("tensorrt_version")
        built_gpu, built_cc = self.info.get("gpu_name", "?"), self.info.get("compute_capability")
        if built_version and built_version != str(trt.__version__):
            return f"it was built with TensorRT {built_version}, and engines only load on the version that built them"
        if built_cc and built_cc != self.gpu.compute_capability:
            return f"it was built for another GPU ({built_gpu}, compute capability {built_cc})"
        return "the file is corrupt or truncated (or not a TensorRT engine)"

    def _output_shape(self, name: str, batch: int) -> tuple[int, ...]:
        declared = tuple(self.engine.get_tensor_shape(name))
        shape = (batch, *declared[1:])
        size = self.spec.size
        return tuple(size if d < 0 else d for d in shape)  # dynamic H/W run at the spec's size

    def _allocate(self) -> None:
        """Buffers for the largest batch, once; every run uses a prefix of them."""
        cuda, context = self.cuda, self.context
        self._stream = cuda.create_stream()
        self._host: dict[str, HostBuffer] = {}
        self._device: dict[str, DeviceBuffer] = {}
        for name in [self.input_name, self.output_name, *self._extra_outputs]:
            shape = (
                (self.max_batch, 3, self.spec.size, self.spec.size)
                if name == self.input_name
                else (self._output_shape(name, self.max_batch))
            )
            count = int(np.prod(shape))
            dtype = self.dtypes[name]
            self._host[name] = cuda.host_buffer(count, dtype)
            self._buffers.append(self._host[name])
            self._device[name] = cuda.device_buffer(count * dtype.itemsize)
            self._buffers.append(self._device[name])
            if not context.set_tensor_address(name, self._device[name].ptr):
                raise CudaError(f"TensorRT refused the device address of {name}")

    # -- running -----------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.context is None:
            raise BackendError(f"{self.path}: backend is closed")
        size = self.spec.size
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            got = getattr(batch, "shape", type(batch).__name__)
            raise BackendError(f"{self.path}: expected a float32 batch (N, 3, {size}, {size}), got {got}")
        n = batch.shape[0]
        if not 1 <= n <= self.max_batch:
            raise BackendError(
                f"{self.path}: batch of {n} is outside the engine's optimization profile "
                f"({self.min_batch}..{self.max_batch}); rebuild with --min-batch/--max-batch to change it"
            )
        if n < self.min_batch:
            # A folder's last, short batch must still run: pad up to the profile's floor, drop the extra maps.
            padding = np.zeros((self.min_batch - n, 3, size, size), batch.dtype)
            return self.run(np.concatenate([batch, padding]))[:n]
        shape = (n, 3, size, size)
        if not self.context.set_input_shape(self.input_name, shape):
            raise BackendError(f"{self.path}: TensorRT rejected input shape {shape}")
        host_in = self._host[self.input_name]
        count = int(np.prod(shape))
        host_in.array[:count] = batch.reshape(-1)  # casts to the engine's input dtype (float32 or float16)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        expected = self._output_shape(self.output_name, n)
        if out_shape != expected:
            raise BackendError(f"{self.path}: engine output {self.output_name} is {out_shape}, expected {expected}")
        in_bytes = count * self.dtypes[self.input_name].itemsize
        out_count = int(np.prod(out_shape))
        host_out = self._host[self.output_name]
        try:
            self.cuda.copy_to_device(self._device[self.input_name], host_in, in_bytes, self._stream)
            if not self.context.execute_async_v3(self._stream.handle):
                raise BackendError(f"{self.path}: TensorRT failed to enqueue the batch of {n}")
            self.cuda.copy_to_host(
                host_out,
                self._device[self.output_name],
                out_count * self.dtypes[self.output_name].itemsize,
                self._stream,
            )
            self._stream.synchronize()  # the host buffer holds the result only after this
        except CudaError as exc:
            raise BackendError(f"{self.path}: {exc}") from None
        return host_out.array[:out_count].astype(np.float32).reshape(out_shape)

    def describe(self) -> str:
        variant = self.metadata.get("u2net.variant", '"?"').strip('"')
        precision = self.info.get("precision") or self.metadata.get("u2net.precision", '"?"').strip('"')
        size = self.spec.size
        return (
            f"TensorRT {self.trt.__version__} on {self.gpu}, {self.path.name}: {variant} {precision} "
            f"{size}x{size}, batch {self.min_batch}..{self.max_batch} (opt {self.opt_batch}), via {self.cuda.name}"
        )

    def close(self) -> None:
        """Free the GPU and pinned memory; safe to call twice."""
        buffers, self._buffers = self._buffers, []
        for buffer in buffers:
            try:
                buffer.free()
            except CudaError as exc:  # freeing after a device fault can fail; nothing more to do
                log.debug("%s: %s", self.path, exc)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.destroy()
            except CudaError as exc:
                log.debug("%s: %s", self.path, exc)
        self.context = self.engine = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
