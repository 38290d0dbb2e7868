"""TensorRT backend: a serialized engine (``X.plan``) and its side file ``X.plan.json``.

Uses the tensor-name API of TensorRT 10 and 11 only (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``): page-locked host buffers and device buffers sized for the profile's largest
batch, allocated once, and one CUDA stream. Any batch inside the engine's optimization profile runs.

The engine's ``Artifact`` (preprocessing spec, variant, precision, build facts) comes from the side
file, because a serialized engine has no room for it.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from runtime.artifact import Artifact, TensorRTBuild
from runtime.backends.base import Backend, BackendError, require_file
from runtime.backends.cuda import CudaError, DeviceBuffer, HostBuffer, Stream, open_cuda
from runtime.backends.gpu_support import check_gpu_stack
from runtime.names import side_file

log = logging.getLogger(__name__)
native_log = logging.getLogger("tensorrt")  # what the TensorRT library itself says

INSTALL_HINT = (
    "install it with this project's extra for your driver: pip install '.[tensorrt-cu12]' or "
    "'.[tensorrt-cu13]' (the major of nvidia-smi's CUDA Version)"
)


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


def read_side_file(engine_path: Path) -> Artifact:
    """The engine's artifact from its side file; BackendError naming the file when it is missing or unusable."""
    path = side_file(engine_path)
    if not path.is_file():
        raise BackendError(
            f"{engine_path}: needs its side file {path.name} (written next to it by python -m export.to_trt), "
            "which holds the preprocessing spec"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackendError(f"{path}: side file is not readable JSON ({type(exc).__name__})") from None
    return Artifact.from_side_file(data, path)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__(path)
        self._buffers: list[DeviceBuffer | HostBuffer] = []
        self._stream: Stream | None = None
        self.context = self.engine = None
        if provider not in (None, "tensorrt"):
            raise BackendError(f"{self.path}: a TensorRT engine runs on TensorRT, not on provider {provider!r}")
        require_file(self.path)
        self._artifact = read_side_file(self.path)
        if precision not in (None, self._artifact.precision):
            raise BackendError(f"{self.path}: is a {self._artifact.precision} engine, not {precision}")
        self.build = self._artifact.tensorrt or TensorRTBuild()
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
        log.debug("%s", self.describe())  # the caller (Remover) logs what runs, once

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
        self.output_names = tuple(outputs)  # the fused map first when exported by this project
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
        self._min_batch, self.opt_batch, self.max_batch = (s[0] for s in self.profile)
        lo, hi = self.profile[0][2:], self.profile[2][2:]
        if not (lo[0] <= size <= hi[0] and lo[1] <= size <= hi[1]):
            raise BackendError(f"{self.path}: the engine's profile {self.profile} does not allow {size}x{size}")
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in [self.input_name, *outputs]}
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")

    def _why_unloadable(self, trt: ModuleType) -> str:
        """The likely reason, from what the side file says about the build."""
        built_version = self.build.tensorrt_version
        built_gpu, built_cc = self.build.gpu_name or "?", self.build.compute_capability
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
        for name in [self.input_name, *self.output_names]:
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

    # -- what it is --------------------------------------------------------------------------
    @property
    def min_batch(self) -> int:
        return self._min_batch

    @property
    def preferred_batch(self) -> int:
        return self.opt_batch  # what the profile was tuned for

    def _batch_limits_text(self) -> str:
        return (f"the engine's optimization profile ({self.min_batch}..{self.max_batch}); "
                "rebuild with --min-batch/--max-batch to change it")  # fmt: skip

    def _engine_text(self) -> str:
        return f"TensorRT {self.trt.__version__} on {self.gpu}"

    def describe(self) -> str:
        return f"{super().describe()} (opt {self.opt_batch}), via {self.cuda.name}"

    # -- running -----------------------------------------------------------------------------
    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        n = batch.shape[0]
        size = self.spec.size
        if n < self.min_batch:
            # A folder's last, short batch must still run: pad up to the profile's floor, drop the extra maps.
            padding = np.zeros((self.min_batch - n, 3, size, size), batch.dtype)
            return [out[:n] for out in self._run(np.concatenate([batch, padding]), names)]
        shape = (n, 3, size, size)
        if not self.context.set_input_shape(self.input_name, shape):
            raise BackendError(f"{self.path}: TensorRT rejected input shape {shape}")
        host_in = self._host[self.input_name]
        count = int(np.prod(shape))
        host_in.array[:count] = batch.reshape(-1)  # casts to the engine's input dtype (float32 or float16)
        shapes = {}
        for name in names:
            shapes[name] = tuple(self.context.get_tensor_shape(name))
            expected = self._output_shape(name, n)
            if shapes[name] != expected:
                raise BackendError(f"{self.path}: engine output {name} is {shapes[name]}, expected {expected}")
        in_bytes = count * self.dtypes[self.input_name].itemsize
        try:
            self.cuda.copy_to_device(self._device[self.input_name], host_in, in_bytes, self._stream)
            if not self.context.execute_async_v3(self._stream.handle):
                raise BackendError(f"{self.path}: TensorRT failed to enqueue the batch of {n}")
            for name in names:
                out_bytes = int(np.prod(shapes[name])) * self.dtypes[name].itemsize
                self.cuda.copy_to_host(self._host[name], self._device[name], out_bytes, self._stream)
            self._stream.synchronize()  # the host buffers hold the results only after this
        except CudaError as exc:
            raise BackendError(f"{self.path}: {exc}") from None
        return [self._host[name].array[: int(np.prod(shapes[name]))].astype(np.float32).reshape(shapes[name])
                for name in names]  # fmt: skip

    def _close(self) -> None:
        """Free the GPU and pinned memory."""
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
