"""The little CUDA the TensorRT backend needs: device buffers, page-locked host buffers, one stream.

Two drivers behind one interface, picked by what is installed:

- cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in releases before 12.6): the
  runtime API, whose functions return tuples ``(error, value...)``. NVIDIA's own samples use it.
- pycuda: through ``pycuda.autoprimaryctx``, which shares the device's primary context with
  TensorRT (``pycuda.autoinit`` would create a second context and clash with it).

Nothing here is imported until an engine is opened, so CPU-only installs never load CUDA.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import first_line

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install cuda-python (or pycuda)"


class CudaError(RuntimeError):
    """A CUDA call that failed; one line naming the call and CUDA's own error name."""


class CudaUnavailable(CudaError):
    """No CUDA driver package installed, no driver, or no GPU."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "8.9"
    total_memory: int  # bytes

    def __str__(self) -> str:
        return f"{self.name} (compute capability {self.compute_capability})"


@dataclass
class DeviceBuffer:
    ptr: int  # what TensorRT's set_tensor_address takes
    nbytes: int
    _release: Callable[[], None] | None = None

    def free(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


@dataclass
class HostBuffer:
    """Page-locked host memory seen as a flat numpy array (reshape or slice it freely)."""

    array: np.ndarray
    _release: Callable[[], None] | None = None

    @property
    def ptr(self) -> int:
        return int(self.array.ctypes.data)

    def free(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            self.array = np.empty(0, self.array.dtype)  # drop the view before the memory goes
            release()


@dataclass
class Stream:
    handle: int  # what TensorRT's execute_async_v3 takes
    synchronize: Callable[[], None]
    destroy: Callable[[], None]
    native: Any = None


class CudaPython:
    """cuda-python's runtime API."""

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def _check(self, result: Any, call: str) -> Any:
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"{call} failed: {self._error_name(err)}")
        return values[0] if len(values) == 1 else values or None

    def _error_name(self, err: Any) -> str:
        try:
            name = self.rt.cudaGetErrorName(err)[1]
            text = self.rt.cudaGetErrorString(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            text = text.decode() if isinstance(text, bytes) else str(text)
            return f"{name} ({text})"
        except Exception:  # the error path must not raise a second, less useful error
            return str(err)

    def driver_version(self) -> int | None:
        """The CUDA version the driver supports (12080 = 12.8; 0 without a driver), as nvidia-smi shows it."""
        err, version = self.rt.cudaDriverGetVersion()
        return int(version) if err == self.rt.cudaError_t.cudaSuccess else None

    def runtime_version(self) -> int | None:
        """The CUDA version this cuda-python was built for (12090 = 12.9)."""
        err, version = self.rt.cudaRuntimeGetVersion()
        return int(version) if err == self.rt.cudaError_t.cudaSuccess else None

    def gpu_info(self, device: int = 0) -> GpuInfo:
        # Without a (new enough) driver every call returns (cudaErrorInsufficientDriver, None).
        result = self.rt.cudaGetDeviceCount()
        if result[0] != self.rt.cudaError_t.cudaSuccess:
            raise CudaUnavailable(f"no usable CUDA GPU: {self._error_name(result[0])}")
        if result[1] <= device:
            raise CudaUnavailable(f"no CUDA GPU number {device} (found {result[1]})")
        prop = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return GpuInfo(device, name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        ptr = int(self._check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        return DeviceBuffer(ptr, nbytes, lambda: self._check(self.rt.cudaFree(ptr), "cudaFree"))

    def host_buffer(self, count: int, dtype: np.dtype) -> HostBuffer:
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)  # view the pinned block, no copy
        array = np.frombuffer(raw, dtype=dtype, count=count)
        return HostBuffer(array, lambda: self._check(self.rt.cudaFreeHost(ptr), "cudaFreeHost"))

    def create_stream(self) -> Stream:
        stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        return Stream(
            handle=int(stream),
            synchronize=lambda: self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize"),
            destroy=lambda: self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy"),
            native=stream,
        )

    def copy_to_device(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int, stream: Stream) -> None:
        _fits(nbytes, dst.nbytes, src.array.nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.native), "cudaMemcpyAsync(H2D)")

    def copy_to_host(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
        _fits(nbytes, src.nbytes, dst.array.nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.native), "cudaMemcpyAsync(D2H)")


class PyCuda:
    """pycuda's driver API on the primary context."""

    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self.drv = driver

    def driver_version(self) -> int | None:
        try:
            return int(self.drv.get_driver_version())
        except (AttributeError, self.drv.Error):
            return None

    def runtime_version(self) -> int | None:
        return None  # pycuda is compiled against the local toolkit: nothing to compare

    def gpu_info(self, device: int = 0) -> GpuInfo:
        try:
            dev = self.drv.Device(device)
            major, minor = dev.compute_capability()
            return GpuInfo(device, dev.name(), f"{major}.{minor}", int(dev.total_memory()))
        except self.drv.Error as exc:
            raise CudaUnavailable(f"no usable CUDA GPU: {exc}") from None

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        alloc = self._call(lambda: self.drv.mem_alloc(nbytes), f"mem_alloc({nbytes})")
        return DeviceBuffer(int(alloc), nbytes, alloc.free)

    def host_buffer(self, count: int, dtype: np.dtype) -> HostBuffer:
        array = self._call(lambda: self.drv.pagelocked_empty(count, np.dtype(dtype)), "pagelocked_empty")
        return HostBuffer(array, array.base.free if hasattr(array.base, "free") else None)

    def create_stream(self) -> Stream:
        stream = self._call(self.drv.Stream, "Stream")
        return Stream(handle=int(stream.handle), synchronize=stream.synchronize, destroy=lambda: None, native=stream)

    def copy_to_device(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int, stream: Stream) -> None:
        _fits(nbytes, dst.nbytes, src.array.nbytes)
        view = src.array.view(np.uint8)[:nbytes]
        self._call(lambda: self.drv.memcpy_htod_async(dst.ptr, view, stream.native), "memcpy_htod_async")

    def copy_to_host(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
        _fits(nbytes, src.nbytes, dst.array.nbytes)
        view = dst.array.view(np.uint8)[:nbytes]
        self._call(lambda: self.drv.memcpy_dtoh_async(view, src.ptr, stream.native), "memcpy_dtoh_async")

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except self.drv.Error as exc:
            raise CudaError(f"{what} failed: {exc}") from None


def _fits(nbytes: int, *capacities: int) -> None:
    # A copy past a buffer's end corrupts memory silently on a real GPU: refuse it here.
    if nbytes < 0 or any(nbytes > c for c in capacities):
        raise CudaError(f"copy of {nbytes} bytes does not fit buffers of {min(capacities)} bytes")


def _import_cudart() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # new layout first, then cuda-python < 12.6
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def open_cuda() -> CudaPython | PyCuda:
    """The installed CUDA driver package: cuda-python first, then pycuda; CudaUnavailable if neither."""
    cudart = _import_cudart()
    if cudart is not None:
        return CudaPython(cudart)
    try:
        driver = importlib.import_module("pycuda.driver")
    except ImportError:
        raise CudaUnavailable(f"neither cuda-python nor pycuda is installed ({INSTALL_HINT})") from None
    try:
        importlib.import_module("pycuda.autoprimaryctx")  # makes the primary context current
    except Exception as exc:  # pycuda raises its own errors here when there is no driver or GPU
        raise CudaUnavailable(
            f"pycuda cannot open a CUDA context: {first_line(exc)}"
        ) from None
    return PyCuda(driver)
