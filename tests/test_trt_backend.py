"""TensorRTBackend against the fake TensorRT 10/11 and fake CUDA runtime of ``fake_tensorrt``.

The fake engine runs the ONNX it was built from with ONNX Runtime, reading its input from and
writing its output to (fake) device memory when the stream is synchronized, so these tests check
the backend's real data path: pinned host buffer -> device -> execute -> device -> host, per batch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fake_tensorrt import FakeCudaRuntime, FakeGpu, install_tensorrt

from export.trt import BuildOptions, Profile, build_engine
from runtime.backends import open_backend
from runtime.backends.base import BackendError
from runtime.backends.trt import TensorRTBackend
from runtime.names import side_file

SIZE = 64
VERSIONS = ["10.13.0.35", "11.4.0.106"]


@pytest.fixture(scope="module")
def onnx_pair(random_u2netp) -> tuple[Path, Path]:
    """(FP32, FP16) ONNX of the session's random U²-NetP; tests that write next to a file copy it first."""
    assert random_u2netp.size == SIZE
    return random_u2netp.onnx


def build(tmp_path, monkeypatch, onnx_pair, version="10.13.0.35", batches=(1, 2, 4), precision="fp16", **fake):
    trt = install_tensorrt(monkeypatch, version, **fake)
    options = BuildOptions(Profile(*batches, size=SIZE), precision=precision)
    built = build_engine(tmp_path / "u2netp.plan", options, fp32_onnx=onnx_pair[0], fp16_onnx=onnx_pair[1], check=False)
    trt.calls.clear()
    return built.plan, trt


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def onnxruntime_reference(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["mask"], {"image": batch})[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("cuda_package", ["cuda-python", "pycuda"])
def test_every_batch_in_the_profile_runs_through_device_memory(tmp_path, monkeypatch, onnx_pair, version, cuda_package):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair, version, batches=(1, 2, 4), cuda_package=cuda_package)
    cudart = trt.cudart
    batch = images(4)
    expected = onnxruntime_reference(onnx_pair[1], batch)  # the FP16 ONNX is what the engine runs
    with TensorRTBackend(plan) as backend:
        assert backend.max_batch == 4 and backend.min_batch == 1 and backend.opt_batch == 2
        for n in (1, 3, 4, 2):
            cudart.events.clear()
            got = backend.run(batch[:n])
            assert got.shape == (n, 1, SIZE, SIZE) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected[:n], rtol=0, atol=1e-6)
            # One pinned upload of exactly n images, the engine, one pinned download, then the sync.
            assert cudart.events == [
                ("H2D", n * 3 * SIZE * SIZE * 4, True),
                ("execute", n),
                ("D2H", n * SIZE * SIZE * 4, True),
                ("sync",),
            ]
        shapes = [c[2] for c in trt.calls if c[0] == "set_input_shape"]
        assert shapes == [(n, 3, SIZE, SIZE) for n in (1, 3, 4, 2)]
        assert backend.run(batch[:1]) is not backend.run(batch[:1])  # results are copies, not pinned views
    assert cudart.live("device") == 0 and cudart.live("pinned") == 0 and not cudart.streams


def test_buffers_are_allocated_once_for_the_largest_batch(tmp_path, monkeypatch, onnx_pair):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair, batches=(1, 1, 3))
    with TensorRTBackend(plan) as backend:
        for n in (1, 2, 3):
            backend.run(images(n))
    mallocs = [e for e in trt.cudart.events if e[0].startswith("malloc")]
    assert sorted(mallocs) == sorted([
        ("malloc_device", 3 * 3 * SIZE * SIZE * 4), ("malloc_pinned", 3 * 3 * SIZE * SIZE * 4),
        ("malloc_device", 3 * SIZE * SIZE * 4), ("malloc_pinned", 3 * SIZE * SIZE * 4),
    ])  # fmt: skip
    assert [c[0] for c in trt.calls].count("set_tensor_address") == 2  # addresses set once, not per run


def test_batch_outside_the_profile_is_rejected_clearly(tmp_path, monkeypatch, onnx_pair):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair, batches=(2, 2, 4))
    with TensorRTBackend(plan) as backend:
        for n in (0, 5):
            with pytest.raises(
                BackendError, match=rf"batch of {n} is outside the engine's optimization profile \(2\.\.4\)"
            ):
                backend.run(images(n))
        with pytest.raises(BackendError, match=r"expected a float32 batch \(N, 3, 64, 64\), got \(2, 3, 32, 32\)"):
            backend.run(np.zeros((2, 3, 32, 32), np.float32))
        assert "execute_async_v3" not in [c[0] for c in trt.calls]
        assert backend.run(images(2)).shape == (2, 1, SIZE, SIZE)  # still usable afterwards


def test_batch_below_the_profile_minimum_is_padded(tmp_path, monkeypatch, onnx_pair):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair, batches=(2, 2, 4))
    batch = images(1, seed=3)
    expected = onnxruntime_reference(onnx_pair[1], np.concatenate([batch, np.zeros_like(batch)]))[:1]
    with TensorRTBackend(plan) as backend:
        got = backend.run(batch)
    assert got.shape == (1, 1, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert [c[2] for c in trt.calls if c[0] == "set_input_shape"] == [(2, 3, SIZE, SIZE)]


def test_describe_names_version_gpu_precision_and_profile(tmp_path, monkeypatch, onnx_pair):
    cudart = FakeCudaRuntime([FakeGpu(name="NVIDIA L4", major=8, minor=9)])
    plan, _ = build(tmp_path, monkeypatch, onnx_pair, "11.4.0.106", batches=(1, 2, 8), cudart=cudart)
    with open_backend(plan) as backend:  # .plan -> TensorRT
        assert isinstance(backend, TensorRTBackend) and backend.name == "tensorrt"
        text = backend.describe()
        assert backend.spec.size == SIZE
    for part in ("TensorRT 11.4.0.106", "NVIDIA L4", "8.9", "u2netp", "fp16", "64x64", "batch 1..8", "opt 2"):
        assert part in text, (part, text)


def test_spec_comes_from_the_side_file(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    info = json.loads(side_file(plan).read_text())
    info["spec"]["mean"] = [0.5, 0.5, 0.5]
    side_file(plan).write_text(json.dumps(info))
    with TensorRTBackend(plan) as backend:
        assert backend.spec.mean == (0.5, 0.5, 0.5)


def old_side_file(info: dict, onnx_path: Path) -> dict:
    """The layout export.to_trt wrote before the side file held one Artifact: the ONNX file's
    metadata_props under "metadata", and build facts plus copies of precision/size/normalisation on top."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {p.key: p.value for p in model.metadata_props}
    metadata["u2net.precision"] = json.dumps(info["precision"])
    spec = info["spec"]
    return {"variant": info["variant"], "size": spec["size"], "precision": info["precision"],
            "normalization": {k: spec[k] for k in ("mean", "std", "divide_by_max")},
            **info["tensorrt"], "metadata": metadata}  # fmt: skip


def test_old_side_files_still_load(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair, batches=(1, 2, 4))
    new = json.loads(side_file(plan).read_text())
    with TensorRTBackend(plan) as backend:
        expected, text = backend.artifact, backend.describe()
    side_file(plan).write_text(json.dumps(old_side_file(new, onnx_pair[1])))
    with TensorRTBackend(plan) as backend:
        assert backend.artifact == expected and backend.describe() == text
        assert backend.artifact.tensorrt.tensorrt_version == new["tensorrt"]["tensorrt_version"]
        assert backend.run(images(2)).shape == (2, 1, SIZE, SIZE)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda info: info["spec"].update(size="64"), "metadata.* size is '64', expected a positive whole number"),
        (lambda info: info["spec"].update(std=[0.2, 0.0, 0.2]), "std is .*expected three positive numbers"),
        (lambda info: info.update(outputs="mask"), "metadata outputs is 'mask', expected a non-empty list"),
        (lambda info: info.update(tensorrt=[1]), "metadata tensorrt is \\[1\\], expected an object"),
    ],
)
def test_inconsistent_side_file_is_one_line(tmp_path, monkeypatch, onnx_pair, edit, message):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    info = json.loads(side_file(plan).read_text())
    edit(info)
    side_file(plan).write_text(json.dumps(info))
    with pytest.raises(BackendError, match=message) as caught:
        TensorRTBackend(plan)
    assert str(caught.value).startswith(f"{side_file(plan)}: ") and "\n" not in str(caught.value)


def test_missing_side_file_names_the_file_needed(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    side_file(plan).unlink()
    with pytest.raises(BackendError, match=r"u2netp\.plan: needs its side file u2netp\.plan\.json"):
        TensorRTBackend(plan)


def test_corrupt_side_file(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    side_file(plan).write_text("{not json")
    with pytest.raises(BackendError, match=r"u2netp\.plan\.json: side file is not readable JSON"):
        TensorRTBackend(plan)
    side_file(plan).write_text('{"precision": "fp16"}')
    with pytest.raises(BackendError, match='side file has no "metadata" object'):
        TensorRTBackend(plan)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_engine_gives_one_clear_line(tmp_path, monkeypatch, onnx_pair, damage):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair)
    data = plan.read_bytes()
    plan.write_bytes(b"\x00not an engine" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(BackendError) as info:
        TensorRTBackend(plan)
    message = str(info.value)
    assert "\n" not in message and str(plan) in message
    assert "cannot load this engine" in message and "the file is corrupt or truncated" in message
    assert message.endswith("rebuild it here with python -m export.to_trt")
    assert trt.cudart.live("device") == 0


def test_engine_from_another_tensorrt_version(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair, "10.13.0.35")
    install_tensorrt(monkeypatch, "11.4.0.106")  # the machine was upgraded since the build
    with pytest.raises(
        BackendError, match=r"TensorRT 11\.4\.0\.106 cannot load .*: it was built with TensorRT 10\.13\.0\.35"
    ):
        TensorRTBackend(plan)


def test_engine_for_another_gpu(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair, cudart=FakeCudaRuntime([FakeGpu("NVIDIA A100", 8, 0)]))
    install_tensorrt(monkeypatch, "10.13.0.35", FakeCudaRuntime([FakeGpu("NVIDIA H100", 9, 0)]))
    with pytest.raises(
        BackendError, match=r"on NVIDIA H100 .*: it was built for another GPU \(NVIDIA A100, compute capability 8\.0\)"
    ):
        TensorRTBackend(plan)


def test_missing_and_empty_engine_files(tmp_path):
    with pytest.raises(BackendError, match="no such engine file"):
        TensorRTBackend(tmp_path / "absent.plan")
    empty = tmp_path / "empty.plan"
    empty.touch()
    with pytest.raises(BackendError, match=r"empty \(0 bytes\)"):
        TensorRTBackend(empty)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_module_says_how_to_install(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    monkeypatch.undo()  # the real environment again: no tensorrt module
    with pytest.raises(
        BackendError, match=r"TensorRT is not installed \(install it with this project's extra for your driver"
    ):
        TensorRTBackend(plan)


def test_missing_cuda_package_and_missing_gpu(tmp_path, monkeypatch, onnx_pair):
    plan, _ = build(tmp_path, monkeypatch, onnx_pair)
    install_tensorrt(monkeypatch, "10.13.0.35", cuda_package=None)
    with pytest.raises(BackendError, match=r"neither cuda-python nor pycuda is installed"):
        TensorRTBackend(plan)
    install_tensorrt(monkeypatch, "10.13.0.35", FakeCudaRuntime(gpus=[]))
    with pytest.raises(BackendError, match=r"no usable CUDA GPU: cudaErrorNoDevice"):
        TensorRTBackend(plan)


def test_close_frees_everything_and_run_after_close_fails(tmp_path, monkeypatch, onnx_pair):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair)
    backend = TensorRTBackend(plan)
    assert trt.cudart.live("device") == 2 and trt.cudart.live("pinned") == 2
    backend.close()
    backend.close()  # twice is fine
    assert trt.cudart.live("device") == 0 and trt.cudart.live("pinned") == 0 and not trt.cudart.streams
    with pytest.raises(BackendError, match="backend is closed"):
        backend.run(images(1))


def test_device_fault_is_reported_not_crashed(tmp_path, monkeypatch, onnx_pair):
    plan, trt = build(tmp_path, monkeypatch, onnx_pair)
    with TensorRTBackend(plan) as backend:
        backend.context.set_tensor_address("mask", 0xDEAD0000)  # as if the engine wrote out of bounds
        with pytest.raises(BackendError, match="cudaErrorIllegalAddress"):
            backend.run(images(1))


def test_fake_cuda_moves_bytes_only_when_the_stream_is_synchronized():
    """The fake's async semantics, which make a missing synchronize visible in the tests above."""
    rt = FakeCudaRuntime()
    _, stream = rt.cudaStreamCreate()
    _, host = rt.cudaMallocHost(16)
    _, device = rt.cudaMalloc(16)
    src = np.arange(4, dtype=np.float32)
    back = np.zeros(4, np.float32)
    h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    assert rt.cudaMemcpyAsync(device, src.ctypes.data, 16, h2d, stream) == (rt.cudaError_t.cudaSuccess,)
    assert rt.cudaMemcpyAsync(back.ctypes.data, device, 16, d2h, stream) == (rt.cudaError_t.cudaSuccess,)
    assert not back.any()  # nothing moved yet
    assert rt.cudaStreamSynchronize(stream) == (rt.cudaError_t.cudaSuccess,)
    np.testing.assert_array_equal(back, src)
    assert rt.cudaMemcpyAsync(device, src.ctypes.data, 32, h2d, stream)[0] == rt.cudaError_t.cudaErrorInvalidValue
    assert rt.cudaFree(host)[0] == rt.cudaError_t.cudaErrorInvalidValue  # pinned memory is freed with FreeHost
