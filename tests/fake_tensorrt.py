"""A fake ``tensorrt`` module (generations 10.x and 11.x) and a fake CUDA runtime, for tests.

TensorRT cannot be installed on CI machines (its native libraries come from NVIDIA's own index)
and they have no GPU, so the project's TensorRT code is tested against these fakes at its
boundary: ``monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("10.13.0.35", cuda))``.
The fake is judged by the real bindings (``tests/test_trt_real_bindings.py``): it may offer less
than the real module, never something else.

Faithful where it matters to the code under test:
- The API surface of each generation: every class, method, property, keyword name and enum value
  here exists in the real bindings of that release; the enum tables are the real ones
  (``tests/data/tensorrt_enums.json``, from ``tests/dump_tensorrt_enums.py``). A name removed in
  that generation raises AttributeError (10: ``build_engine``, ``max_workspace_size``,
  binding-index APIs, ``execute_async_v2``; 11 also: ``BuilderFlag.FP16/INT8/BF16``,
  ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``, ``platform_has_fast_fp16``,
  ``platform_has_tf32``), and so does setting an attribute the real object does not have.
- The bindings' behaviour: enums convert to int but never equal one; the default ``Logger``
  prints to stdout, messages go to the first logger given to a Builder/Runtime (TensorRT keeps
  one per process); ``set_shape`` raises RuntimeError with the binding's text;
  ``get_tensor_profile_shape`` returns three Dims; ``IHostMemory`` is a buffer without len();
  ``Builder``/``Runtime`` raise TypeError when CUDA cannot start; an unreadable timing cache
  gives None, one from another GPU is refused by ``set_timing_cache``.
- The parser really reads the ONNX file (``onnx.load``) and records its inputs, outputs and the
  dtypes of its weights; a strongly typed network (always, on 11) builds an engine in the
  precision of those weights, so building "FP16" from an FP32 ONNX is visible.
- The builder refuses what TensorRT refuses: no optimization profile for a dynamic input, a
  profile outside the network's static dims, an FP16 flag on a strongly typed network.
- Serialized engines carry the TensorRT version and the GPU's compute capability: another
  version or GPU makes ``deserialize_cuda_engine`` return None, as do corrupt bytes.
- The engine "runs" by executing the ONNX it was built from with ONNX Runtime on the host, on
  the fake CUDA runtime's stream: inputs are read from (fake) device memory when the stream is
  synchronized, outputs written back there, so host->device->execute->host ordering, sizes,
  pointers and synchronization are all checked.

The fake CUDA runtime mimics ``cuda.bindings.runtime`` (checked against cuda-bindings 12.9 and
13.0): functions return ``(error, value)`` tuples, ``(error, None)`` on failure, and
cudaErrorInsufficientDriver (35) without a driver new enough for its CUDA version; memory is real
(ctypes) memory with real addresses, tracked per allocation, so copies past a buffer's end, freed
pointers, host pointers given as device pointers and unsynchronized reads are caught.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEVERITY_LETTERS = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "INFO": "I", "VERBOSE": "V"}
ENGINE_MAGIC = b"FAKETRT-ENGINE\0"
# Attributes of the fake module that exist only for tests to inspect or steer it.
FAKE_ONLY = frozenset({"calls", "log", "output_error", "cudart", "enum_release"})
CACHE_MAGIC = b"FAKETRT-CACHE\0"


# --------------------------------------------------------------------------------------------
# Fake CUDA runtime (cuda.bindings.runtime)
# --------------------------------------------------------------------------------------------


class cudaError_t(enum.IntEnum):  # noqa: N801 - the real enum's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700


_ERROR_TEXT = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorInvalidValue: "invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInsufficientDriver: "CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: "invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: "invalid resource handle",
    cudaError_t.cudaErrorIllegalAddress: "an illegal memory access was encountered",
}


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:  # noqa: N801
    def __init__(self, handle: int = 0) -> None:
        self._handle = int(handle)

    def __int__(self) -> int:
        return self._handle

    def __repr__(self) -> str:
        return f"<cudaStream_t {self._handle:#x}>"


@dataclass
class FakeGpu:
    name: str = "NVIDIA Fake GPU"
    major: int = 8
    minor: int = 9
    total_memory: int = 16 << 30


@dataclass
class _Allocation:
    kind: str  # "device" or "pinned"
    buffer: Any  # the ctypes array that owns the memory
    size: int


class _DeviceFault(Exception):
    pass


class FakeCudaRuntime:
    """Stands in for the module ``cuda.bindings.runtime``; install it in ``sys.modules``."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStream_t = cudaStream_t

    def __init__(self, gpus: list[FakeGpu] | None = None, driver_cuda: int = 13000, runtime_cuda: int = 12090) -> None:
        """``driver_cuda``: the CUDA version the driver supports (nvidia-smi's "CUDA Version",
        12080 = 12.8), 0 for no driver at all; ``runtime_cuda``: the CUDA version cuda-python was
        built for. As with the real cuda-bindings, a runtime newer than the driver (or no driver)
        makes every device call fail with cudaErrorInsufficientDriver (35)."""
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.driver_cuda, self.runtime_cuda = driver_cuda, runtime_cuda
        self.allocations: dict[int, _Allocation] = {}
        self.streams: dict[int, list] = {}  # handle -> queued work, run at synchronize
        self.events: list[tuple] = []  # what happened on the "device", in order
        self._next_stream = 0x5000
        self._sticky_error: cudaError_t | None = None  # like CUDA, a device fault poisons the context

    # -- device queries ----------------------------------------------------------------------
    def startup_error(self) -> cudaError_t:
        """What the first device call returns: no (new enough) driver, no GPU, or success."""
        if self.driver_cuda == 0 or self.driver_cuda // 1000 < self.runtime_cuda // 1000:
            return cudaError_t.cudaErrorInsufficientDriver
        return cudaError_t.cudaSuccess if self.gpus else cudaError_t.cudaErrorNoDevice

    def cudaDriverGetVersion(self):  # noqa: N802
        return (cudaError_t.cudaSuccess, self.driver_cuda)

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return (cudaError_t.cudaSuccess, self.runtime_cuda)

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.startup_error():
            return (self.startup_error(), None)
        return (cudaError_t.cudaSuccess, len(self.gpus))

    def cudaGetDeviceProperties(self, device: int):  # noqa: N802
        if self.startup_error():
            return (self.startup_error(), None)
        if not 0 <= device < len(self.gpus):
            return (cudaError_t.cudaErrorInvalidDevice, None)
        gpu = self.gpus[device]
        prop = types.SimpleNamespace(
            name=gpu.name.encode() + b"\0" * 8, major=gpu.major, minor=gpu.minor, totalGlobalMem=gpu.total_memory
        )
        return (cudaError_t.cudaSuccess, prop)

    def cudaGetErrorName(self, err):  # noqa: N802
        return (cudaError_t.cudaSuccess, cudaError_t(err).name.encode())

    def cudaGetErrorString(self, err):  # noqa: N802
        return (cudaError_t.cudaSuccess, _ERROR_TEXT[cudaError_t(err)].encode())

    @property
    def compute_capability(self) -> str:
        return f"{self.gpus[0].major}.{self.gpus[0].minor}" if self.gpus else ""

    # -- memory ------------------------------------------------------------------------------
    def _alloc(self, kind: str, nbytes: int):
        if self.startup_error():
            return (self.startup_error(), None)
        used = sum(a.size for a in self.allocations.values() if a.kind == "device")
        if nbytes <= 0 or (kind == "device" and used + nbytes > self.gpus[0].total_memory):
            return (cudaError_t.cudaErrorMemoryAllocation, None)
        buffer = (ctypes.c_byte * nbytes)()
        ptr = ctypes.addressof(buffer)
        self.allocations[ptr] = _Allocation(kind, buffer, nbytes)
        self.events.append((f"malloc_{kind}", nbytes))
        return (cudaError_t.cudaSuccess, ptr)

    def _free(self, kind: str, ptr: int):
        alloc = self.allocations.get(int(ptr))
        if alloc is None or alloc.kind != kind:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.allocations[int(ptr)]
        self.events.append((f"free_{kind}", alloc.size))
        return (cudaError_t.cudaSuccess,)

    def cudaMalloc(self, nbytes: int):  # noqa: N802
        return self._alloc("device", nbytes)

    def cudaFree(self, ptr: int):  # noqa: N802
        return self._free("device", ptr)

    def cudaMallocHost(self, nbytes: int):  # noqa: N802
        return self._alloc("pinned", nbytes)

    def cudaFreeHost(self, ptr: int):  # noqa: N802
        return self._free("pinned", ptr)

    def owner(self, ptr: int, nbytes: int) -> _Allocation | None:
        """The allocation holding [ptr, ptr + nbytes), if any."""
        for base, alloc in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + alloc.size:
                return alloc
        return None

    def read_device(self, ptr: int, nbytes: int) -> bytes:
        alloc = self.owner(ptr, nbytes)
        if alloc is None or alloc.kind != "device":
            raise _DeviceFault(f"read of {nbytes} bytes at {ptr:#x} is not inside a device allocation")
        return ctypes.string_at(ptr, nbytes)

    def write_device(self, ptr: int, data: bytes) -> None:
        alloc = self.owner(ptr, len(data))
        if alloc is None or alloc.kind != "device":
            raise _DeviceFault(f"write of {len(data)} bytes at {ptr:#x} is not inside a device allocation")
        ctypes.memmove(ptr, data, len(data))

    # -- streams -----------------------------------------------------------------------------
    def cudaStreamCreate(self):  # noqa: N802
        if self.startup_error():
            return (self.startup_error(), None)
        self._next_stream += 0x10
        self.streams[self._next_stream] = []
        return (cudaError_t.cudaSuccess, cudaStream_t(self._next_stream))

    def cudaStreamDestroy(self, stream):  # noqa: N802
        if self.streams.pop(int(stream), None) is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    def enqueue(self, handle: int, what: tuple, work) -> bool:
        if handle not in self.streams:
            return False
        self.streams[handle].append((what, work))
        return True

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind, stream):  # noqa: N802
        dst, src = int(dst), int(src)
        handle = int(stream)
        if handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            device, host = dst, src
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            device, host = src, dst
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        target = self.owner(device, count)
        host_owner = self.owner(host, count)
        if target is None or target.kind != "device" or (host_owner is not None and host_owner.kind == "device"):
            return (cudaError_t.cudaErrorInvalidValue,)
        pinned = host_owner is not None and host_owner.kind == "pinned"
        name = "H2D" if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else "D2H"
        # The bytes move when the stream runs, not now: reading the host buffer before
        # synchronizing gives stale data, as on a real GPU.
        self.streams[handle].append(((name, count, pinned), lambda: ctypes.memmove(dst, src, count)))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        handle = int(stream)
        if handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if self._sticky_error is not None:
            return (self._sticky_error,)
        queue, self.streams[handle] = self.streams[handle], []
        for what, work in queue:
            try:
                work()
            except _DeviceFault as exc:
                self.events.append(("fault", str(exc)))
                self._sticky_error = cudaError_t.cudaErrorIllegalAddress
                return (self._sticky_error,)
            self.events.append(what)
        self.events.append(("sync",))
        return (cudaError_t.cudaSuccess,)

    def live(self, kind: str) -> int:
        return sum(1 for a in self.allocations.values() if a.kind == kind)


def install_cuda(monkeypatch, cudart: FakeCudaRuntime) -> None:
    """Make ``import cuda.bindings.runtime`` find the fake (and hide any real pycuda)."""
    cuda_pkg = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    cuda_pkg.bindings = bindings
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


def make_pycuda_driver(cudart: FakeCudaRuntime) -> types.ModuleType:
    """A fake ``pycuda.driver`` over the same fake device, so TensorRT's fake finds its streams."""
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    def check(result, what: str):
        if result[0] != cudaError_t.cudaSuccess:
            raise Error(f"{what} failed: {_ERROR_TEXT[cudaError_t(result[0])]}")
        return result[1] if len(result) > 1 else None

    class DeviceAllocation:
        def __init__(self, ptr: int) -> None:
            self._ptr = ptr

        def __int__(self) -> int:
            return self._ptr

        def free(self) -> None:
            check(cudart.cudaFree(self._ptr), "mem_free")

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(check(cudart.cudaMalloc(nbytes), "cuMemAlloc"))

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        ptr = check(cudart.cudaMallocHost(count * dtype.itemsize), "cuMemHostAlloc")

        class HostAllocation(ctypes.c_byte * (count * dtype.itemsize)):
            def free(self) -> None:
                check(cudart.cudaFreeHost(ptr), "cuMemFreeHost")

        return np.ndarray(shape, dtype=dtype, buffer=HostAllocation.from_address(ptr))  # base: the allocation

    class Stream:
        def __init__(self) -> None:
            self._stream = check(cudart.cudaStreamCreate(), "cuStreamCreate")

        @property
        def handle(self) -> int:
            return int(self._stream)

        def synchronize(self) -> None:
            check(cudart.cudaStreamSynchronize(self._stream), "cuStreamSynchronize")

        def __del__(self) -> None:  # pycuda destroys a stream when the object goes away
            cudart.cudaStreamDestroy(self._stream)

    def memcpy_htod_async(dest, src: np.ndarray, stream: Stream) -> None:
        kind = cudaMemcpyKind.cudaMemcpyHostToDevice
        check(cudart.cudaMemcpyAsync(int(dest), src.ctypes.data, src.nbytes, kind, stream.handle), "cuMemcpyHtoDAsync")

    def memcpy_dtoh_async(dest: np.ndarray, src, stream: Stream) -> None:
        kind = cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(cudart.cudaMemcpyAsync(dest.ctypes.data, int(src), dest.nbytes, kind, stream.handle), "cuMemcpyDtoHAsync")

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < len(cudart.gpus):
                raise Error("cuDeviceGet failed: invalid device ordinal")
            self._gpu = cudart.gpus[index]

        def name(self) -> str:
            return self._gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return self._gpu.major, self._gpu.minor

        def total_memory(self) -> int:
            return self._gpu.total_memory

    for obj in (Error, DeviceAllocation, mem_alloc, pagelocked_empty, Stream, memcpy_htod_async,
                memcpy_dtoh_async, Device):  # fmt: skip
        setattr(drv, obj.__name__, obj)
    return drv


def install_pycuda(monkeypatch, cudart: FakeCudaRuntime) -> None:
    """Hide cuda-python and install a fake pycuda (autoprimaryctx fails to import without a GPU)."""
    modules = sys.modules
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(modules, name, None)
    package = types.ModuleType("pycuda")
    package.driver = make_pycuda_driver(cudart)
    monkeypatch.setitem(modules, "pycuda", package)
    monkeypatch.setitem(modules, "pycuda.driver", package.driver)
    context = types.ModuleType("pycuda.autoprimaryctx") if cudart.gpus else None
    monkeypatch.setitem(modules, "pycuda.autoprimaryctx", context)


# --------------------------------------------------------------------------------------------
# Fake tensorrt
# --------------------------------------------------------------------------------------------


class _Strict:
    """Objects whose missing names fail loudly, naming the generation that removed them."""

    _removed: dict[str, str] = {}  # name -> why (filled per generation)
    _generation = 0

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        why = type(self)._removed.get(name)
        detail = f" (removed in TensorRT {why})" if why else ""
        raise AttributeError(
            f"'tensorrt.{type(self).__name__}' (fake TensorRT {self._generation}) has no attribute '{name}'{detail}"
        )

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_") and name not in type(self).__dict__.get("_settable", ()):
            self.__getattr__(name)  # raises: pybind objects accept no new attributes
        object.__setattr__(self, name, value)


class Dims(tuple):
    pass


class ITensor:
    """A network input or output (only what the fake's parser fills in)."""

    def __init__(self, name: str, shape: Dims, dtype: Any) -> None:
        self._name, self._shape, self._dtype = name, shape, dtype

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> Dims:
        return self._shape

    @property
    def dtype(self) -> Any:
        return self._dtype


@dataclass
class ParsedOnnx:
    path: str
    inputs: list[tuple[str, tuple[int, ...], str]]  # (name, shape with -1 for dynamic, numpy dtype name)
    outputs: list[tuple[str, tuple[int, ...], str]]
    weight_dtypes: set[str] = field(default_factory=set)
    quantized: bool = False  # has QuantizeLinear/DequantizeLinear pairs: explicit INT8

    @property
    def weights_fp16(self) -> bool:
        return "float16" in self.weight_dtypes


def _read_onnx(path: str) -> ParsedOnnx:
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    onnx.checker.check_model(model)

    def io(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append((v.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name))
        return out

    inits = {i.name: i for i in model.graph.initializer}
    weights = {np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).name for i in model.graph.initializer}
    inputs = [i for i in io(model.graph.input) if i[0] not in inits]
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq:  # as the real parser: explicit quantization is symmetric, every zero point 0
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero_point is not None and numpy_helper.to_array(zero_point).any():
            raise ValueError(f"{node.name}: Assertion failed: shiftIsAllZeros(zeroPoint): "
                             "Non-zero zero point is not supported.")  # fmt: skip
    return ParsedOnnx(str(Path(path).resolve()), inputs, io(model.graph.output), weights, quantized=bool(qdq))


class NativeEnum(enum.Enum):
    """Like a pybind11 enum: int(member) and operator.index work, but a member never equals an int."""

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value


ENUM_TABLES = Path(__file__).with_name("data") / "tensorrt_enums.json"  # tests/dump_tensorrt_enums.py


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def enum_tables(version: str) -> tuple[str, dict[str, dict[str, int]]]:
    """The real bindings' enum tables for ``version``: those of the newest dumped release of the same
    major version that is not newer (the oldest one of that major when all are newer)."""
    tables = json.loads(ENUM_TABLES.read_text())
    same_major = sorted((v for v in tables if v.split(".")[0] == version.split(".")[0]), key=_version_key)
    older = [v for v in same_major if _version_key(v) <= _version_key(version)]
    chosen = (older or same_major)[-1]
    return chosen, tables[chosen]


def make_tensorrt(version: str, cuda: FakeCudaRuntime) -> types.ModuleType:
    """A fake ``tensorrt`` module of the given version (10.x or 11.x) running on ``cuda``."""
    major = int(version.split(".")[0])
    if major not in (10, 11):
        raise ValueError(f"the fake speaks TensorRT 10 and 11, not {version}")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # (api, args...) in call order: what the code under test asked for
    trt.log = []  # (severity, message) the library logged, whichever logger received it
    trt.output_error = 0.0  # tests set it to emulate an engine that computes wrong results
    record = trt.calls.append

    # -- enums: names and values of the real release (tests/data/tensorrt_enums.json) ---------
    trt.enum_release, tables = enum_tables(version)
    DataType = NativeEnum("DataType", tables["DataType"])  # noqa: N806 - the real names
    TensorIOMode = NativeEnum("TensorIOMode", tables["TensorIOMode"])  # noqa: N806
    MemoryPoolType = NativeEnum("MemoryPoolType", tables["MemoryPoolType"])  # noqa: N806
    # 11 dropped EXPLICIT_BATCH and renumbered the rest, so a hard-coded ``1 << 1`` means
    # STRONGLY_TYPED on 10 but PREFER_JIT_PYTHON_PLUGINS on 11.
    NetworkDefinitionCreationFlag = NativeEnum("NetworkDefinitionCreationFlag", tables["NetworkDefinitionCreationFlag"])  # noqa: N806
    BuilderFlag = NativeEnum("BuilderFlag", tables["BuilderFlag"])  # noqa: N806 - 11 has no FP16/INT8/BF16
    Severity = NativeEnum("Severity", tables["ILogger.Severity"])  # noqa: N806

    np_of = {
        DataType.FLOAT: np.float32,
        DataType.HALF: np.float16,
        DataType.INT8: np.int8,
        DataType.INT32: np.int32,
        DataType.BOOL: np.bool_,
        DataType.UINT8: np.uint8,
        DataType.INT64: np.int64,
    }
    trt_of = {np.dtype(v).name: k for k, v in np_of.items()}

    def nptype(trt_type):
        if trt_type in np_of:
            return np_of[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    class ILogger:
        """Subclass it and override ``log``: TensorRT calls it for every message, of any severity."""

        def log(self, severity: Severity, msg: str) -> None:
            raise RuntimeError("Tried to call pure virtual function \"ILogger::log\"")

    ILogger.Severity = Severity
    for name in SEVERITY_LETTERS:
        setattr(ILogger, name, Severity[name])

    class Logger(ILogger):
        """The default logger: like the real one, it prints to **stdout** (C++ std::cout)."""

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            self._min_severity = min_severity

        @property
        def min_severity(self) -> Severity:
            return self._min_severity

        @min_severity.setter
        def min_severity(self, value: Severity) -> None:
            self._min_severity = value

        def log(self, severity: Severity, msg: str) -> None:
            if int(severity) <= int(self._min_severity):
                stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
                print(f"[{stamp}] [TRT] [{SEVERITY_LETTERS[Severity(severity).name]}] {msg}", flush=True)

    # TensorRT keeps one logger per process: the first one given to a Builder or Runtime.
    loggers: list[ILogger] = []

    def emit(severity: Severity, msg: str) -> None:
        trt.log.append((severity, msg))
        if loggers:
            loggers[0].log(severity, msg)

    def adopt(logger: ILogger) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError(f"__init__(): incompatible constructor arguments: {logger!r} is not a tensorrt.ILogger")
        if not loggers:
            loggers.append(logger)
        elif logger is not loggers[0]:
            emit(Severity.WARNING, "The logger passed into createInferRuntime differs from one already provided "
                 "for an existing builder, runtime, or refitter. Uses of the global logger, returned by "
                 "nvinfer1::getLogger(), will return the existing value.")  # fmt: skip

    def cannot_start(logger: ILogger) -> None:
        """What the real Builder(logger) / Runtime(logger) do when TensorRT cannot initialise CUDA."""
        code = int(cuda.startup_error())
        if code:
            emit(Severity.ERROR, f"CUDA initialization failure with error: {code}")
            raise TypeError("pybind11::init(): factory function returned nullptr")

    removed_10 = "10"
    removed_11 = "11"
    gen = {"_generation": major}

    # -- network and parser ------------------------------------------------------------------
    class INetworkDefinition(_Strict):
        _removed = {"add_fully_connected": removed_10}

        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self._parsed: ParsedOnnx | None = None

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        @property
        def num_layers(self) -> int:
            return 0 if self._parsed is None else 1

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        def get_flag(self, flag) -> bool:
            return bool(self._flags & (1 << int(flag)))

        @property
        def has_implicit_batch_dimension(self) -> bool:
            return False  # deprecated in 10, always False; still there in 11

    def strongly_typed(network: INetworkDefinition) -> bool:
        """What the builder will do: 11 is always strongly typed, 10 only when the flag was given."""
        return major >= 11 or network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    INetworkDefinition.__name__ = "INetworkDefinition"

    class ParserError:
        def __init__(self, desc: str) -> None:
            self._desc = desc

        def desc(self) -> str:
            return self._desc

        def __str__(self) -> str:
            return f"In node -1 with name:  and operator:  (parseGraph): INVALID_GRAPH: {self._desc}"

    class OnnxParser(_Strict):
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self._network = network
            self._errors: list[ParserError] = []

        def parse_from_file(self, model: str) -> bool:
            record(("parse_from_file", str(model)))
            try:
                parsed = _read_onnx(str(model))
            except Exception as exc:
                self._errors.append(ParserError(f"failed to parse {model}: {str(exc).splitlines()[0][:120]}"))
                return False
            net = self._network
            net._parsed = parsed
            net._inputs = [ITensor(n, Dims(s), trt_of[d]) for n, s, d in parsed.inputs]
            net._outputs = [ITensor(n, Dims(s), trt_of[d]) for n, s, d in parsed.outputs]
            return True

        def parse(self, model: bytes, path: str | None = None) -> bool:
            raise NotImplementedError("the fake parses files only: use parse_from_file")

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors.clear()

    # -- builder -----------------------------------------------------------------------------
    class IOptimizationProfile(_Strict):
        def __init__(self) -> None:
            self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

        def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - the real keyword names
            shapes = tuple(Dims(int(v) for v in s) for s in (min, opt, max))
            record(("set_shape", input, *(tuple(s) for s in shapes)))
            # The binding sets MIN, OPT, MAX in turn; each must agree with the ones already set,
            # else it raises RuntimeError (the text is the binding's own, see tensorrt.so).
            for index, which in enumerate(("min", "opt", "max")):
                shape = shapes[index]
                consistent = all(d >= 0 for d in shape) and all(
                    len(earlier) == len(shape) and all(a <= b for a, b in zip(earlier, shape, strict=True))
                    for earlier in shapes[:index]
                )
                if not consistent:
                    emit(Severity.ERROR, f"setDimensions: {which} dimensions of {input} are inconsistent")
                    raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
            self._shapes[input] = shapes

        def get_shape(self, input: str):  # noqa: A002
            return list(self._shapes.get(input, ()))

    class ITimingCache(_Strict):
        def __init__(self, entries: int, device: str, ver: str) -> None:
            self._entries, self._device, self._version = entries, device, ver

        def serialize(self) -> IHostMemory:
            header = {"entries": self._entries, "device": self._device, "version": self._version}
            return host_memory(CACHE_MAGIC + json.dumps(header).encode())

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._entries += input_cache._entries
            return True

        def reset(self) -> bool:
            self._entries = 0
            return True

    class IBuilderConfig(_Strict):
        _removed = {
            "max_workspace_size": removed_10,
            "set_tactic_sources_v2": removed_10,
            **(
                {
                    "int8_calibrator": removed_11,
                    "set_calibration_profile": removed_11,
                    "set_quantization_flag": removed_11,
                    "get_quantization_flag": removed_11,
                }
                if major >= 11
                else {}
            ),
        }
        _settable = ("builder_optimization_level",)

        def __init__(self) -> None:
            self._pools: dict[Any, int] = {}
            self._flags: set = set()
            self._profiles: list[IOptimizationProfile] = []
            self._cache: ITimingCache | None = None
            self.builder_optimization_level = 3

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            if not isinstance(pool, MemoryPoolType) or not isinstance(pool_size, int) or pool_size < 0:
                raise TypeError(f"set_memory_pool_limit(): incompatible function arguments: {pool!r}, {pool_size!r}")
            record(("set_memory_pool_limit", pool.name, pool_size))
            self._pools[pool] = pool_size

        def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
            return self._pools.get(pool, cuda.gpus[0].total_memory if cuda.gpus else 0)

        def set_flag(self, flag) -> None:
            if not isinstance(flag, BuilderFlag):
                raise TypeError(f"set_flag(): incompatible function arguments: {flag!r}")
            record(("set_flag", flag.name))
            self._flags.add(flag)

        def clear_flag(self, flag) -> None:
            if not isinstance(flag, BuilderFlag):
                raise TypeError(f"clear_flag(): incompatible function arguments: {flag!r}")
            record(("clear_flag", flag.name))
            self._flags.discard(flag)

        def get_flag(self, flag) -> bool:
            return flag in self._flags

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            record(("add_optimization_profile", {k: [tuple(s) for s in v] for k, v in profile._shapes.items()}))
            if not profile._shapes:
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def create_timing_cache(self, serialized_timing_cache) -> ITimingCache | None:
            blob = bytes(memoryview(serialized_timing_cache))
            record(("create_timing_cache", len(blob)))
            if not blob:
                return ITimingCache(0, cuda.compute_capability, version)
            try:
                if not blob.startswith(CACHE_MAGIC):
                    raise ValueError("Magic tag does not match")
                header = json.loads(blob[len(CACHE_MAGIC) :])
                if header["version"] != version:
                    raise ValueError(f"cache from TensorRT {header['version']}")
                cache = ITimingCache(int(header["entries"]), header["device"], header["version"])
            except (ValueError, KeyError, TypeError) as exc:
                # The two lines TensorRT logs for a cache it cannot read (NVIDIA/TensorRT#3566).
                emit(Severity.ERROR, f"1: Serialization (Serialization assertion failed: {exc})")
                emit(Severity.ERROR, "4: The timing cache will not be used!")
                return None
            return cache

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            record(("set_timing_cache", cache._entries, bool(ignore_mismatch)))
            if cache._device != cuda.compute_capability and not ignore_mismatch:
                emit(Severity.ERROR, "Timing cache was created on a different device")
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._cache

    class Builder(_Strict):
        _removed = {
            "build_engine": removed_10,
            "build_cuda_engine": removed_10,
            "max_batch_size": removed_10,
            "max_workspace_size": removed_10,
            "create_builder_config_v2": removed_10,
            **(
                {"platform_has_fast_fp16": removed_11, "platform_has_fast_int8": removed_11, "platform_has_tf32": removed_11}
                if major >= 11
                else {}
            ),
        }

        def __init__(self, logger: ILogger) -> None:
            adopt(logger)
            cannot_start(logger)
            record(("Builder",))

        if major == 10:  # deprecated in 10.5, removed in 11

            @property
            def platform_has_tf32(self) -> bool:
                return cuda.gpus[0].major >= 8

            @property
            def platform_has_fast_fp16(self) -> bool:
                return True

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record(("create_network", int(flags)))
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
            record(("build_serialized_network",))
            error = _build_error(network, config)
            if error:
                emit(Severity.ERROR, error)
                return None
            parsed = network._parsed
            if strongly_typed(network):
                precision = "int8" if parsed.quantized else "fp16" if parsed.weights_fp16 else "fp32"
            else:
                precision = "fp16" if config.get_flag(BuilderFlag.FP16) else "fp32"
            profile = config._profiles[0]._shapes
            header = {
                "version": version,
                "device": cuda.compute_capability,
                "onnx": parsed.path,
                "precision": precision,
                "weights_fp16": parsed.weights_fp16,
                "strongly_typed": strongly_typed(network),
                "workspace": config._pools.get(MemoryPoolType.WORKSPACE),
                "inputs": [(t.name, list(t.shape), t.dtype.name) for t in network._inputs],
                "outputs": [(t.name, list(t.shape), t.dtype.name) for t in network._outputs],
                "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            }
            if config._cache is not None:
                config._cache._entries += 1  # a build times tactics and remembers them
            return host_memory(ENGINE_MAGIC + json.dumps(header).encode())

    def _build_error(network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        if network._parsed is None or not network._inputs:
            return "Network must have at least one input (was the ONNX parsed?)"
        if strongly_typed(network) and major == 10 and config.get_flag(BuilderFlag.FP16):
            return "BuilderFlag::kFP16 is not allowed with a strongly typed network"
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config._profiles:
            return "Network has dynamic or shape inputs, but no optimization profile has been defined."
        for profile in config._profiles:
            for t in dynamic:
                if t.name not in profile._shapes:
                    return f"Optimization profile is missing values for input {t.name}"
            for name, shapes in profile._shapes.items():
                tensor = next((t for t in network._inputs if t.name == name), None)
                if tensor is None:
                    return f"Optimization profile names {name}, which is not a network input"
                for shape in shapes:
                    if len(shape) != len(tensor.shape) or any(
                        d >= 0 and d != s for d, s in zip(tensor.shape, shape, strict=True)
                    ):
                        return (
                            f"{name}: profile shape {tuple(shape)} does not match the network's {tuple(tensor.shape)}"
                        )
        return None

    class IHostMemory(ctypes.Structure):
        """What build_serialized_network and serialize return. Like the real one it has only the
        buffer protocol (memoryview(), bytes(memoryview()), file.write()), ``nbytes`` and ``dtype``:
        no len(), and it is no bytes object. (A ctypes structure: pure Python classes of 3.11 cannot
        export a buffer.)"""

        @property
        def nbytes(self) -> int:
            return ctypes.sizeof(self)

        @property
        def dtype(self) -> DataType:
            return DataType.UINT8

    def host_memory(data: bytes) -> IHostMemory:
        layout = type("IHostMemory", (IHostMemory,), {"_fields_": [("_bytes", ctypes.c_char * len(data))]})
        return layout.from_buffer_copy(data)

    # -- runtime -----------------------------------------------------------------------------
    class Runtime(_Strict):
        _removed = {"deserialize_cuda_engine_v2": removed_10}

        def __init__(self, logger: ILogger) -> None:
            adopt(logger)
            cannot_start(logger)

        def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:
            blob = bytes(memoryview(serialized_engine))
            record(("deserialize_cuda_engine", len(blob)))
            if not blob.startswith(ENGINE_MAGIC):
                emit(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                 "(Serialization assertion magicTagRead == kMAGIC_TAG failed.)")  # fmt: skip
                return None
            try:
                header = json.loads(blob[len(ENGINE_MAGIC) :])
            except ValueError:
                emit(Severity.ERROR, "Serialization: engine plan is truncated or corrupt")
                return None
            if header["version"] != version:
                emit(Severity.ERROR, f"The engine plan file is not compatible with this version of "
                                 f"TensorRT, expecting library version {version} got {header['version']}")  # fmt: skip
                return None
            if header["device"] != cuda.compute_capability:
                emit(Severity.ERROR, "The engine plan file is generated on an incompatible device, "
                                 f"expecting compute {cuda.compute_capability} got compute {header['device']}")  # fmt: skip
                return None
            return ICudaEngine(header)

    class ICudaEngine(_Strict):
        _removed = {
            **{
                name: removed_10
                for name in (
                    "num_bindings",
                    "get_binding_index",
                    "get_binding_name",
                    "binding_is_input",
                    "get_binding_shape",
                    "get_binding_dtype",
                    "get_binding_vectorized_dim",
                    "max_batch_size",
                    "get_profile_shape",
                    "get_location",
                )  # fmt: skip
            },
            **({"device_memory_size": removed_11} if major >= 11 else {}),
        }

        def __init__(self, header: dict) -> None:
            self._header = header
            self._io = [(n, TensorIOMode.INPUT, s, d) for n, s, d in header["inputs"]] + [
                (n, TensorIOMode.OUTPUT, s, d) for n, s, d in header["outputs"]
            ]

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        @property
        def name(self) -> str:
            return Path(self._header["onnx"]).stem

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def _find(self, name: str):
            for entry in self._io:
                if entry[0] == name:
                    return entry
            raise KeyError(name)  # the real API returns invalid values; a KeyError is louder

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self._find(name)[1]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._find(name)[2])

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType[self._find(name)[3]]

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            # Always three Dims (min, opt, max), as the binding builds them; invalid ones are empty.
            if profile_index != 0 or name not in self._header["profile"]:
                return [Dims(()), Dims(()), Dims(())]
            return [Dims(s) for s in self._header["profile"][name]]

        def create_execution_context(self, strategy: Any = None) -> IExecutionContext:
            record(("create_execution_context",))
            return IExecutionContext(self)

        def serialize(self) -> IHostMemory:
            return host_memory(ENGINE_MAGIC + json.dumps(self._header).encode())

    sessions: dict[tuple[str, bool], Any] = {}

    def _session(path: str, round_weights_to_fp16: bool):
        """ONNX Runtime on the ONNX the engine was built from. A weakly typed FP16 build of FP32
        weights is emulated by rounding the weights to FP16, so its error is not zero either."""
        key = (path, round_weights_to_fp16)
        if key not in sessions:
            import onnx
            import onnxruntime as ort
            from onnx import numpy_helper

            model = onnx.load(path)
            if round_weights_to_fp16:
                for init in model.graph.initializer:
                    if init.data_type == onnx.TensorProto.FLOAT:
                        rounded = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
                        init.CopyFrom(numpy_helper.from_array(rounded, init.name))
            options = ort.SessionOptions()
            options.log_severity_level = 3
            sessions[key] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sessions[key]

    class IExecutionContext(_Strict):
        _removed = {
            **{
                name: removed_10
                for name in (
                    "execute_async_v2",
                    "execute_async",
                    "execute",
                    "set_binding_shape",
                    "get_binding_shape",
                    "set_optimization_profile",
                    "set_shape_input",
                    "get_shape",
                )  # fmt: skip
            },
        }

        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}

        @property
        def engine(self) -> ICudaEngine:
            return self._engine

        def set_input_shape(self, name: str, shape) -> bool:
            shape = tuple(int(v) for v in shape)
            record(("set_input_shape", name, shape))
            lo, _, hi = self._engine._header["profile"].get(name, [None, None, None])
            if (
                lo is None
                or len(shape) != len(lo)
                or any(not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))
            ):
                emit(Severity.ERROR, f"IExecutionContext::setInputShape: {name} {shape} is outside the "
                                f"optimization profile [{lo}, {hi}]")  # fmt: skip
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            mode = self._engine.get_tensor_mode(name)
            if mode == TensorIOMode.INPUT:
                return Dims(self._shapes.get(name, self._engine.get_tensor_shape(name)))
            declared = self._engine.get_tensor_shape(name)
            batch = next(iter(self._shapes.values()), (-1,))[0]  # U²-Net's outputs follow the batch
            return Dims((batch, *declared[1:]) if declared and declared[0] < 0 else declared)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._engine._find(name)
            record(("set_tensor_address", name))
            self._addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addresses.get(name, 0)

        @property
        def all_binding_shapes_specified(self) -> bool:
            return all(n in self._shapes for n, mode, _, _ in self._engine._io if mode == TensorIOMode.INPUT)

        def execute_async_v3(self, stream_handle: int) -> bool:
            record(("execute_async_v3", int(stream_handle)))
            engine = self._engine
            if not self.all_binding_shapes_specified:
                emit(Severity.ERROR, "execute_async_v3: not all input shapes are specified")
                return False
            if any(name not in self._addresses for name, *_ in engine._io):
                emit(Severity.ERROR, "execute_async_v3: a tensor address is not set")
                return False
            plan = []
            for name, mode, _, dtype in engine._io:
                shape = tuple(self.get_tensor_shape(name))
                plan.append((name, mode, shape, np.dtype(np_of[DataType[dtype]]), self._addresses[name]))

            def run() -> None:  # runs when the stream is synchronized
                feeds = {
                    name: np.frombuffer(cuda.read_device(ptr, int(np.prod(shape)) * dt.itemsize), dt).reshape(shape)
                    for name, mode, shape, dt, ptr in plan
                    if mode == TensorIOMode.INPUT
                }
                outputs = [p for p in plan if p[1] == TensorIOMode.OUTPUT]
                header = engine._header
                emulate_fp16 = header["precision"] == "fp16" and not header["weights_fp16"]
                results = _session(header["onnx"], emulate_fp16).run([p[0] for p in outputs], feeds)
                for (_, _, shape, dt, ptr), value in zip(outputs, results, strict=True):
                    value = np.ascontiguousarray(value + trt.output_error, dt)  # fault injection for tests
                    if value.shape != shape:
                        raise _DeviceFault(f"output shape {value.shape} != {shape}")
                    cuda.write_device(ptr, value.tobytes())

            batch = next(s for _, m, s, _, _ in plan if m == TensorIOMode.INPUT)[0]
            if not cuda.enqueue(int(stream_handle), ("execute", batch), run):
                emit(Severity.ERROR, "execute_async_v3: invalid stream")
                return False
            return True

    for cls in (INetworkDefinition, OnnxParser, IOptimizationProfile, ITimingCache, IBuilderConfig, Builder,
                Runtime, ICudaEngine, IExecutionContext):  # fmt: skip
        cls._generation = gen["_generation"]

    exported = dict(
        DataType=DataType, nptype=nptype, TensorIOMode=TensorIOMode, MemoryPoolType=MemoryPoolType,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, BuilderFlag=BuilderFlag, Logger=Logger,
        ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime, Dims=Dims, ITensor=ITensor,
        ParserError=ParserError,
        INetworkDefinition=INetworkDefinition, IBuilderConfig=IBuilderConfig, ICudaEngine=ICudaEngine,
        IExecutionContext=IExecutionContext, IOptimizationProfile=IOptimizationProfile,
        ITimingCache=ITimingCache, IHostMemory=IHostMemory,
        float32=DataType.FLOAT, float16=DataType.HALF, int8=DataType.INT8, int32=DataType.INT32,
        int64=DataType.INT64, bool=DataType.BOOL, uint8=DataType.UINT8, bfloat16=DataType.BF16,
    )  # fmt: skip
    for name, value in exported.items():
        setattr(trt, name, value)
    return trt


def hide_cuda_packages(monkeypatch) -> None:
    """Neither cuda-python nor pycuda importable."""
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


def install_tensorrt(
    monkeypatch, version: str, cudart: FakeCudaRuntime | None = None, cuda_package: str | None = "cuda-python"
) -> types.ModuleType:
    """Put a fake ``tensorrt`` where ``import`` finds it, with its fake CUDA runtime reachable
    through ``cuda_package`` ("cuda-python", "pycuda", or None for neither)."""
    cudart = cudart if cudart is not None else FakeCudaRuntime()
    if cuda_package == "cuda-python":
        install_cuda(monkeypatch, cudart)
    elif cuda_package == "pycuda":
        install_pycuda(monkeypatch, cudart)
    else:
        hide_cuda_packages(monkeypatch)
    trt = make_tensorrt(version, cudart)
    trt.cudart = cudart
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt
