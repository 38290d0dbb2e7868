"""The start-up check of driver, CUDA packages and GPU against the installed TensorRT.

Inputs have the shapes the real libraries give: ``cudaDriverGetVersion`` -> 12080 for a driver
whose nvidia-smi says "CUDA Version: 12.8" (0 without a driver), ``cudaRuntimeGetVersion`` of
cuda-python 12.9 / 13.0 -> 12090 / 13000 (measured with cuda-bindings 12.9.4 and 13.0.3), compute
capability "8.9" as ``cudaGetDeviceProperties`` gives major/minor.
"""

from __future__ import annotations

import pytest
from fake_tensorrt import FakeCudaRuntime, FakeGpu, install_tensorrt

from runtime.backends.cuda import CudaUnavailable, open_cuda
from runtime.backends.gpu_support import GpuStack, GpuStackMismatch, check_gpu_stack, stack_problem


def stack(trt="10.13.0.35", trt_cuda=12, driver=12080, cuda_python=12090, gpu="NVIDIA L4", cc="8.9") -> GpuStack:
    return GpuStack(trt, trt_cuda, driver, cuda_python, gpu, cc)


@pytest.mark.parametrize(
    "case",
    [
        stack(),  # CUDA 12 driver, CUDA 12 TensorRT and cuda-python
        stack("11.4.0.106", 13, 13000, 13000, "NVIDIA H100 80GB HBM3", "9.0"),
        stack("11.4.0.106", 12, 13000, 12090),  # a CUDA 13 driver runs CUDA 12 builds
        stack("10.4.0", 12, 12040, 12040, "Tesla V100-SXM2-16GB", "7.0"),  # the last TensorRT for Volta
        stack("10.13.0.35", None, None, None),  # a .deb install driven by pycuda: nothing to compare
    ],
    ids=["cu12", "cu13-h100", "cu12-on-cu13-driver", "volta-10.4", "unknown"],
)
def test_fitting_stacks_pass(case):
    assert stack_problem(case) is None


@pytest.mark.parametrize(
    "case, expected",
    [
        (stack("11.4.0.106", 13, 12080, 12090),
         "TensorRT 11.4.0.106 is the CUDA 13 build, but this driver supports CUDA 12.8 (nvidia-smi's CUDA Version): "
         "install the CUDA 12 build instead: pip install '.[tensorrt-cu12]' (or update the driver to 580+)"),
        (stack("10.13.0.35", 12, 12040, 13000),  # pip's default cuda-python (13) on a CUDA 12 driver
         "cuda-python is for CUDA 13.0, but this driver supports CUDA 12.4 (nvidia-smi's CUDA Version): install the "
         "CUDA 12 build instead: pip install '.[tensorrt-cu12]' (or update the driver to 580+)"),
        (stack("11.4.0.106", 13, 13000, 12090),
         "TensorRT 11.4.0.106 is the CUDA 13 build but cuda-python is for CUDA 12.9: install matching ones: "
         "pip install '.[tensorrt-cu13]'"),
        (stack(driver=0), "no NVIDIA driver is loaded (nvidia-smi must work first); then pick the extra from its "
         "CUDA Version"),
        (stack(driver=11080), "this driver supports only CUDA 11.8; TensorRT 10/11 need CUDA 12 or 13: update the "
         "NVIDIA driver to 525+ (CUDA 12) or 580+ (CUDA 13)"),
        (stack(gpu="NVIDIA GeForce GTX 1080 Ti", cc="6.1"),  # the paper's GPU
         "NVIDIA GeForce GTX 1080 Ti has compute capability 6.1, but TensorRT 10.13.0.35 needs 7.5+: no TensorRT "
         "10/11 runs on it: run the .onnx with ONNX Runtime (pip install onnxruntime-gpu)"),
        (stack("10.0.1", gpu="NVIDIA GeForce GTX 1080 Ti", cc="6.1"),
         "NVIDIA GeForce GTX 1080 Ti has compute capability 6.1, but TensorRT 10.0.1 needs 7.0+: no TensorRT 10/11 "
         "runs on it: run the .onnx with ONNX Runtime (pip install onnxruntime-gpu)"),
        (stack("10.5.0", gpu="Tesla V100-SXM2-16GB", cc="7.0"),
         "Tesla V100-SXM2-16GB has compute capability 7.0, but TensorRT 10.5.0 needs 7.5+: install TensorRT 10.4 "
         "or older (pip install 'tensorrt-cu12<10.5')"),
    ],
    ids=["trt13-driver12", "cudapython13-driver12", "trt13-cudapython12", "no-driver", "cuda11-driver",
         "pascal", "pascal-10.0", "volta-10.5"],  # fmt: skip
)
def test_mismatch_is_one_line_saying_what_to_install(case, expected):
    assert stack_problem(case) == expected


def test_check_reads_the_real_shaped_cuda_answers(monkeypatch):
    """cuda-python 13 over a CUDA 12.8 driver: every call answers (cudaErrorInsufficientDriver, None)."""
    cudart = FakeCudaRuntime([FakeGpu("NVIDIA L4", 8, 9)], driver_cuda=12080, runtime_cuda=13000)
    trt = install_tensorrt(monkeypatch, "10.13.0.35", cudart)
    assert cudart.cudaGetDeviceCount() == (cudart.cudaError_t.cudaErrorInsufficientDriver, None)
    with pytest.raises(GpuStackMismatch, match=r"^cuda-python is for CUDA 13\.0, but this driver supports CUDA 12\.8"):
        check_gpu_stack(trt, open_cuda())


def test_check_passes_the_gpu_through_or_the_cuda_error(monkeypatch):
    trt = install_tensorrt(monkeypatch, "11.4.0.106", FakeCudaRuntime([FakeGpu("NVIDIA L4", 8, 9)]))
    gpu = check_gpu_stack(trt, open_cuda())
    assert (gpu.name, gpu.compute_capability) == ("NVIDIA L4", "8.9")
    trt = install_tensorrt(monkeypatch, "11.4.0.106", FakeCudaRuntime(gpus=[]))  # a driver, but no GPU
    with pytest.raises(CudaUnavailable, match="no usable CUDA GPU: cudaErrorNoDevice") as info:
        check_gpu_stack(trt, open_cuda())
    assert not isinstance(info.value, GpuStackMismatch)
