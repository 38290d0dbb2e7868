"""OpenVINO backend: real OpenVINO sessions on the exported random U²-NetP, checked against ONNX Runtime.

The CPU's BF16 capability is monkeypatched (``runtime.cpu_info.native_bf16``), never the inference:
what changes is which precision hint reaches OpenVINO, read back from the compiled model.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from runtime import cpu_info
from runtime.api import Remover
from runtime.backends import BackendError, find_backend, open_backend
from runtime.backends import openvino as ov_backend
from runtime.preprocess import preprocess
from train.synthetic import make_sample

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def u2netp_onnx(random_u2netp):
    return random_u2netp.onnx


@pytest.fixture(scope="module")
def batch(u2netp_onnx):
    with open_backend(u2netp_onnx[0], backend="onnxruntime", provider="cpu") as ort_backend:
        spec = ort_backend.spec
        images = [make_sample(seed, size=90)[0] for seed in range(3)]
        x = preprocess(images, spec)
        return x, ort_backend.run(x)


def _hint(backend) -> str:
    """The precision OpenVINO actually compiled with: "bf16" or "f32"."""
    compiled, _ = next(iter(backend._compiled.values()))
    text = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return "bf16" if "bfloat16" in text or "bf16" in text else "f32" if "float32" in text or "f32" in text else text


def test_fp32_matches_onnx_runtime(u2netp_onnx, batch):
    x, expected = batch
    with open_backend(u2netp_onnx[0], backend="openvino", precision="fp32") as backend:
        assert backend.name == "openvino" and backend.precision == "fp32"
        assert _hint(backend) == "f32"
        got = backend.run(x)
        single = backend.run(x[:1])  # another static batch size, compiled on demand
    assert got.shape == expected.shape and got.dtype == np.float32
    assert float(np.abs(got - expected).max()) <= 1e-5
    np.testing.assert_allclose(single, got[:1], atol=1e-6)


@pytest.mark.skipif(not cpu_info.native_bf16(), reason="this CPU has no native BF16")
def test_bf16_is_close_to_onnx_runtime(u2netp_onnx, batch):
    x, expected = batch
    with open_backend(u2netp_onnx[0], backend="openvino", precision="bf16") as backend:
        assert backend.precision == "bf16" and _hint(backend) == "bf16"
        got = backend.run(x)
    error = np.abs(got - expected)
    assert 0 < float(error.max()) <= 0.15  # really BF16 (not FP32), and close
    assert float(error.mean()) <= 0.01


def test_without_native_bf16_asking_for_bf16_runs_fp32_and_says_so(u2netp_onnx, monkeypatch, caplog):
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="runtime.backends.openvino"):
        with open_backend(u2netp_onnx[0], backend="openvino", precision="bf16") as backend:
            assert backend.precision == "fp32" and _hint(backend) == "f32"
            assert "fp32 inference precision" in backend.describe()
        assert "no native BF16" in caplog.text and "running FP32" in caplog.text
        caplog.clear()
        with open_backend(u2netp_onnx[0], backend="openvino") as backend:  # the default: FP32, and why
            assert backend.precision == "fp32"
        assert "no native BF16" in caplog.text


def test_default_precision_is_bf16_where_native(u2netp_onnx, monkeypatch):
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: True)
    with open_backend(u2netp_onnx[0], backend="openvino") as backend:
        assert backend.precision == "bf16" and "bf16 inference precision" in backend.describe()


def test_bad_requests_are_one_line(u2netp_onnx, tmp_path):
    fp32 = u2netp_onnx[0]
    cases = [
        (dict(path=tmp_path / "absent.onnx"), "no such engine file"),
        (dict(path=fp32, precision="int8"), "not INT8"),
        (dict(path=fp32, precision="fp8"), "not 'fp8'"),
        (dict(path=fp32, provider="cuda"), "runs on the CPU"),
    ]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07" + b"\xff" * 40)
    cases.append((dict(path=junk), "junk.onnx"))
    for kwargs, words in cases:
        path = kwargs.pop("path")
        with pytest.raises(BackendError, match=words) as info:
            open_backend(path, backend="openvino", **kwargs)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_onnx_runtime_refuses_a_precision_it_cannot_run(u2netp_onnx):
    with pytest.raises(BackendError, match="own precision"):
        open_backend(u2netp_onnx[0], backend="onnxruntime", precision="bf16")
    with open_backend(u2netp_onnx[0], backend="onnxruntime", precision="fp32") as backend:
        assert backend.name == "onnxruntime"


def test_default_backend_on_a_cpu_is_the_fastest_installed(u2netp_onnx, monkeypatch, tmp_path):
    fp32 = u2netp_onnx[0]
    monkeypatch.setattr(ov_backend, "_onnxruntime_has_cuda", lambda: False)
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: True)
    assert find_backend(fp32).name == "openvino"  # runs BF16
    assert find_backend(fp32, provider="cpu").name == "openvino"
    assert find_backend(fp32, provider="cuda").name == "onnxruntime"
    assert find_backend(fp32, "onnxruntime").name == "onnxruntime"
    assert find_backend(fp32.with_suffix(".plan")).name == "tensorrt"
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: False)
    assert find_backend(fp32).name == "onnxruntime"  # OpenVINO FP32 is no faster than ONNX Runtime FP32
    int8 = tmp_path / "m.int8.onnx"  # the precision comes from the file's own metadata
    int8.write_bytes(fp32.read_bytes().replace(b'"fp32"', b'"int8"'))
    assert find_backend(int8).name == "onnxruntime"  # no form recorded: not known to be the u8/s8 CPU form
    monkeypatch.setattr(ov_backend, "read_onnx_props", lambda path: {"u2net.precision": '"int8"',
                                                                     "u2net.int8": '{"form": "u8s8"}'})
    assert find_backend(int8).name == "openvino"
    monkeypatch.setattr(ov_backend, "read_onnx_props", lambda path: {"u2net.precision": '"int8"',
                                                                     "u2net.int8": '{"form": "s8s8-symmetric"}'})
    assert find_backend(int8).name == "onnxruntime"  # TensorRT's form: accurate in ONNX Runtime only
    monkeypatch.setattr(ov_backend, "read_onnx_props", lambda path: {"u2net.precision": '"int8"',
                                                                     "u2net.int8": '{"form": "u8s8"}'})
    monkeypatch.setattr(ov_backend, "_onnxruntime_has_cuda", lambda: True)
    assert find_backend(int8).name == "onnxruntime"  # a GPU build of ONNX Runtime wins
    monkeypatch.setattr(ov_backend, "_onnxruntime_has_cuda", lambda: False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino"
                        else real_find_spec(name, *a))
    assert find_backend(int8).name == "onnxruntime"  # not installed: ONNX Runtime


def test_remover_log_names_backend_and_precision(u2netp_onnx, caplog):
    image = make_sample(7, size=80)[0]
    with caplog.at_level(logging.INFO, logger="runtime.api"):
        with Remover(u2netp_onnx[0], backend="openvino", precision="fp32") as remover:
            mask = remover.mask(image)
    assert "OpenVINO" in caplog.text and "fp32 inference precision" in caplog.text
    with Remover(u2netp_onnx[0], backend="onnxruntime") as reference:
        expected = reference.mask(image)
    assert mask.shape == expected.shape and np.abs(mask.astype(int) - expected).max() <= 1


def test_cli_runs_openvino(u2netp_onnx, tmp_path, caplog):
    import cv2

    from runtime.infer import main

    photo = tmp_path / "in" / "shot.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), make_sample(3, size=72)[0])
    with caplog.at_level(logging.INFO):
        status = main(["--engine", str(u2netp_onnx[0]), "--backend", "openvino", "--precision", "fp32",
                       str(photo.parent), "-o", str(tmp_path / "out"), "--mode", "mask", "--no-progress"])
    assert status == 0
    assert (tmp_path / "out" / "shot.png").is_file()
    assert "OpenVINO" in caplog.text and "fp32 inference precision" in caplog.text


SIGNAL_AFTER_CLOSING = """
import gc, signal, sys
from runtime.backends import open_backend
backends = [open_backend(sys.argv[1], backend="openvino", precision="fp32") for _ in range(3)]
backends.pop(1).close()  # an older backend first, then the newest: the order that left a dangling stack
backends.pop().close()
gc.collect()
caught = []
signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
signal.raise_signal(signal.SIGTERM)
print("caught", caught)
"""


def test_a_signal_after_closing_backends_is_delivered(u2netp_onnx):
    # With one Core per backend, OpenVINO's CPU plugin (on AMX CPUs) left the main thread's signal stack
    # pointing at freed memory, and the next SIGTERM or Ctrl-C killed the process with SIGSEGV.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_CLOSING, str(u2netp_onnx[0])],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "caught [15]" in done.stdout
