"""INT8 Q/DQ export: real calibration with ONNX Runtime, real files, run for real in ONNX Runtime (and OpenVINO)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest

from export.errors import ExportError
from export.samples import calibration_images
from export.to_onnx import main as to_onnx_main
from export.to_onnx import run_export
from runtime.artifact import Artifact
from runtime.names import int8_path
from runtime.onnx_props import OnnxPropsError, read_onnx_props
from runtime.preprocess import preprocess
from train.synthetic import make_sample


@pytest.fixture(scope="module")
def u2netp_test_ckpt(random_u2netp):
    return random_u2netp.ckpt


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for seed in range(6):
        cv2.imwrite(str(folder / f"shot{seed}.png"), cv2.cvtColor(make_sample(seed, size=96)[0], cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def int8_files(u2netp_test_ckpt, calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "u2netp.onnx"
    artifacts = run_export(u2netp_test_ckpt, out, int8=True, calib=calib_dir, calib_count=4, calib_method="minmax")
    return {a.path.name: a for a in artifacts}


def _ort_run(path, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["mask"], {"image": batch})[0]


def _zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_writes_both_forms_beside_the_fp32_file(int8_files):
    assert set(int8_files) == {"u2netp.onnx", "u2netp.int8.onnx", "u2netp.int8-ort.onnx"}
    for name in ("u2netp.int8.onnx", "u2netp.int8-ort.onnx"):
        artifact = int8_files[name]
        assert artifact.precision == "int8" and artifact.comparison.ok
        assert artifact.size_bytes < int8_files["u2netp.onnx"].size_bytes / 2  # weights really are 8-bit
    assert not list(int8_files["u2netp.onnx"].path.parent.glob(".u2tmp-*"))  # no staging leftovers


def test_symmetric_form_is_what_tensorrt_reads(int8_files):
    model = onnx.load(int8_files["u2netp.int8.onnx"].path)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    zero_points = _zero_points(model)
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)


def test_ort_form_has_unsigned_activations(int8_files):
    zero_points = _zero_points(onnx.load(int8_files["u2netp.int8-ort.onnx"].path))
    assert zero_points and all(zp.dtype == np.uint8 for zp in zero_points)
    assert any(zp.any() for zp in zero_points)  # asymmetric: real zero points


def test_metadata_round_trip(int8_files):
    for name, form in (("u2netp.int8.onnx", "s8s8-symmetric"), ("u2netp.int8-ort.onnx", "u8s8")):
        path = int8_files[name].path
        props = read_onnx_props(path)
        assert props == {p.key: p.value for p in onnx.load(path).metadata_props}
        assert json.loads(props["u2net.precision"]) == "int8"
        int8 = json.loads(props["u2net.int8"])
        assert int8["form"] == form and int8["calibration"] == "minmax" and int8["calibration_images"] == 4
        assert int8["fp32_nodes"]  # the fusion head stays FP32
        artifact = Artifact.from_onnx_props(props, path)
        assert artifact.precision == "int8" and artifact.int8 == int8
        assert artifact == int8_files[name].artifact
        assert Artifact.from_onnx_props(props).spec == Artifact.from_onnx_props(read_onnx_props(
            int8_files["u2netp.onnx"].path)).spec


def test_runs_in_onnx_runtime_close_to_fp32(int8_files):
    spec = Artifact.from_onnx_props(read_onnx_props(int8_files["u2netp.onnx"].path)).spec
    batch = preprocess([make_sample(seed, size=80)[0] for seed in (11, 12)], spec)
    reference = _ort_run(int8_files["u2netp.onnx"].path, batch)
    for name in ("u2netp.int8.onnx", "u2netp.int8-ort.onnx"):
        got = _ort_run(int8_files[name].path, batch)
        assert got.shape == reference.shape
        error = np.abs(got - reference)
        assert float(error.mean()) < 0.05, name
        assert 0 < float(error.max()), name  # really quantized, not the FP32 graph again


def test_calibration_folder_problems(tmp_path, caplog):
    with pytest.raises(ExportError, match="does not exist"):
        calibration_images(tmp_path / "missing", 4)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ExportError, match="no readable calibration images"):
        calibration_images(tmp_path, 4)
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((40, 50, 3), 90, np.uint8))
    images, source = calibration_images(tmp_path, 4)
    assert len(images) == 1 and images[0].shape == (40, 50, 3) and source == str(tmp_path)
    assert "broken.jpg" in caplog.text


def test_cli_bad_calibration_folder_is_one_line_and_writes_nothing(u2netp_test_ckpt, tmp_path, capsys):
    out = tmp_path / "m" / "u.onnx"
    assert to_onnx_main([str(u2netp_test_ckpt), "-o", str(out), "--int8", "--calib", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "m").exists()


def test_int8_path_names_by_engine(tmp_path):
    assert int8_path(tmp_path / "u2net.onnx", "symmetric").name == "u2net.int8.onnx"
    assert int8_path(tmp_path / "u2net.onnx", "ort").name == "u2net.int8-ort.onnx"


def test_onnx_props_reader_rejects_non_onnx(tmp_path, int8_files):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(OnnxPropsError, match="junk.onnx"):
        read_onnx_props(junk)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(int8_files["u2netp.onnx"].path.read_bytes()[:5000])
    with pytest.raises(OnnxPropsError, match="truncated"):
        read_onnx_props(truncated)


def test_runs_in_openvino_like_onnx_runtime(int8_files):
    pytest.importorskip("openvino")
    from runtime.backends import open_backend

    spec = Artifact.from_onnx_props(read_onnx_props(int8_files["u2netp.onnx"].path)).spec
    batch = preprocess([make_sample(seed, size=80)[0] for seed in (11, 12)], spec)
    path = int8_files["u2netp.int8-ort.onnx"].path
    with open_backend(path, backend="openvino") as backend:
        assert backend.precision == "int8" and "int8" in backend.describe()
        got = backend.run(batch)
    expected = _ort_run(path, batch)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).mean()) < 0.02  # same Q/DQ graph, two engines' INT8 kernels
