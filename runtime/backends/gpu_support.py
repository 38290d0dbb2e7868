"""Does this machine's driver, GPU and CUDA packages fit the installed TensorRT? One line if not.

TensorRT and cuda-python are built per CUDA major (``tensorrt-cu12`` / ``tensorrt-cu13``,
``cuda-python`` 12.x / 13.x); a build newer than the driver fails at its first CUDA call with
cudaErrorInsufficientDriver, which names neither the package nor the fix. This module checks, at
start-up, what the driver supports (nvidia-smi's "CUDA Version", from ``cudaDriverGetVersion``),
the CUDA major of the installed TensorRT and cuda-python, and the GPU's compute capability, and
says what to install instead. ``stack_problem`` is a pure function of those facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

from runtime.backends.cuda import CudaError, CudaUnavailable, GpuInfo

EXTRA = "pip install '.[tensorrt-cu{major}]'"  # the project's extras, one per CUDA major
MIN_DRIVER = {12: "525", 13: "580"}  # the oldest Linux driver of each CUDA major
SUPPORTED_CUDA = (12, 13)


class GpuStackMismatch(CudaUnavailable):
    """Driver, GPU and packages do not fit together; the message says what to install instead."""


@dataclass(frozen=True)
class GpuStack:
    tensorrt_version: str  # "10.13.0.35"
    tensorrt_cuda: int | None  # 12 or 13: the CUDA major TensorRT was built for; None when unknown
    driver_cuda: int | None  # cudaDriverGetVersion: 12080 is CUDA 12.8, 0 no driver; None unknown
    cuda_python: int | None  # cudaRuntimeGetVersion of cuda-python: 12090; None for pycuda
    gpu_name: str | None = None
    compute_capability: str | None = None  # "8.9"; None when no GPU could be queried


def min_compute_capability(tensorrt: tuple[int, int]) -> tuple[int, int]:
    """TensorRT 10.0-10.4 run on Volta (7.0) and newer; 10.5 removed Volta; 11 needs Turing (7.5)."""
    return (7, 0) if tensorrt < (10, 5) else (7, 5)


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def _cuda(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


def stack_problem(stack: GpuStack) -> str | None:
    """What is wrong with this combination, as one line ending in what to install; None if it fits."""
    return _driver_problem(stack) or _pairing_problem(stack) or _gpu_problem(stack)


def _driver_problem(stack: GpuStack) -> str | None:
    """A driver older than the CUDA major TensorRT or cuda-python were built for."""
    if stack.driver_cuda is None:
        return None
    if stack.driver_cuda == 0:
        return "no NVIDIA driver is loaded (nvidia-smi must work first); then pick the extra from its CUDA Version"
    driver = stack.driver_cuda // 1000
    if driver < min(SUPPORTED_CUDA):
        return (f"this driver supports only CUDA {_cuda(stack.driver_cuda)}; TensorRT 10/11 need CUDA 12 or 13: "
                f"update the NVIDIA driver to {MIN_DRIVER[12]}+ (CUDA 12) or {MIN_DRIVER[13]}+ (CUDA 13)")  # fmt: skip
    builds = [(f"TensorRT {stack.tensorrt_version} is the CUDA {stack.tensorrt_cuda} build", stack.tensorrt_cuda)]
    if stack.cuda_python is not None:
        builds.append((f"cuda-python is for CUDA {_cuda(stack.cuda_python)}", stack.cuda_python // 1000))
    for what, built in builds:
        if built is not None and built > driver:
            return (f"{what}, but this driver supports CUDA {_cuda(stack.driver_cuda)} (nvidia-smi's CUDA Version): "
                    f"install the CUDA {driver} build instead: {EXTRA.format(major=driver)} "
                    f"(or update the driver to {MIN_DRIVER.get(built, '?')}+)")  # fmt: skip
    return None


def _pairing_problem(stack: GpuStack) -> str | None:
    """TensorRT and cuda-python built for different CUDA majors."""
    if not (stack.tensorrt_cuda and stack.cuda_python) or stack.tensorrt_cuda == stack.cuda_python // 1000:
        return None
    target = stack.tensorrt_cuda if stack.driver_cuda is None else min(stack.driver_cuda // 1000, max(SUPPORTED_CUDA))
    return (f"TensorRT {stack.tensorrt_version} is the CUDA {stack.tensorrt_cuda} build but cuda-python is for CUDA "
            f"{_cuda(stack.cuda_python)}: install matching ones: {EXTRA.format(major=target)}")  # fmt: skip


def _gpu_problem(stack: GpuStack) -> str | None:
    """A GPU older than the TensorRT generation supports."""
    if not stack.compute_capability:
        return None
    needed, has = min_compute_capability(_version(stack.tensorrt_version)), _version(stack.compute_capability)
    if has >= needed:
        return None
    if has >= (7, 0):  # Volta: the last TensorRT for it is 10.4, a CUDA 12 build
        fix = "install TensorRT 10.4 or older (pip install 'tensorrt-cu12<10.5')"
    else:
        fix = "no TensorRT 10/11 runs on it: run the .onnx with ONNX Runtime (pip install onnxruntime-gpu)"
    return (f"{stack.gpu_name or 'this GPU'} has compute capability {stack.compute_capability}, but "
            f"TensorRT {stack.tensorrt_version} needs {needed[0]}.{needed[1]}+: {fix}")


def tensorrt_cuda_major(version: str) -> int | None:
    """The CUDA major of the installed TensorRT build, from its pip distribution's name."""
    for major in SUPPORTED_CUDA:
        for dist in (f"tensorrt-cu{major}-bindings", f"tensorrt-cu{major}-libs", f"tensorrt-cu{major}"):
            try:
                if metadata.version(dist) == version:
                    return major
            except metadata.PackageNotFoundError:
                continue
    return None  # a .deb / tar install, or unknown: nothing to compare


def check_gpu_stack(trt: Any, cuda: Any) -> GpuInfo:
    """The GPU TensorRT will run on, after checking the stack; GpuStackMismatch (one line) if it
    does not fit, or the CUDA package's own CudaUnavailable when no GPU can be used."""
    version = str(getattr(trt, "__version__", "0"))
    gpu, failure = None, None
    try:
        gpu = cuda.gpu_info()
    except CudaError as exc:
        failure = exc
    stack = GpuStack(
        tensorrt_version=version,
        tensorrt_cuda=tensorrt_cuda_major(version),
        driver_cuda=cuda.driver_version(),
        cuda_python=cuda.runtime_version(),
        gpu_name=gpu.name if gpu else None,
        compute_capability=gpu.compute_capability if gpu else None,
    )
    problem = stack_problem(stack)
    if problem:
        raise GpuStackMismatch(problem)
    if failure is not None:
        raise failure
    return gpu
