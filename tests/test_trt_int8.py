"""python -m export.to_trt --precision int8: strongly typed engines from the symmetric Q/DQ ONNX.

The Q/DQ files are real (``export.int8`` calibrating the session's random U²-NetP on synthetic
images); TensorRT and CUDA are the fakes of ``fake_tensorrt``, whose parser refuses non-zero zero
points as the real one does and whose engine runs the Q/DQ file in ONNX Runtime, so the engine check
below compares real INT8 arithmetic against ONNX Runtime FP32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from fake_tensorrt import install_tensorrt

from export.errors import ExportError
from export.int8 import Calibration, convert_to_int8
from export.samples import calibration_images, sample_images
from export.to_trt import main
from export.trt import plan_precision
from runtime.names import int8_path, plan_path

STRONGLY_TYPED_10 = 1 << 1  # NetworkDefinitionCreationFlag.STRONGLY_TYPED is bit 1 in TensorRT 10


@pytest.fixture(scope="module")
def qdq_files(random_u2netp, tmp_path_factory) -> dict[str, Path]:
    """The FP32 ONNX and its two calibrated INT8 forms, side by side as export.to_onnx --int8 leaves them."""
    folder = tmp_path_factory.mktemp("qdq")
    fp32 = Path(shutil.copy(random_u2netp.fp32, folder / "m.onnx"))
    images, _ = calibration_images(None, 4)
    calib = Calibration(method="minmax", count=len(images))
    files = {"fp32": fp32}
    for form in ("symmetric", "ort"):
        files[form] = convert_to_int8(fp32, int8_path(fp32, form), images, form=form, calibration=calib,
                                      cache=folder / "ranges.json")  # fmt: skip
    (folder / "ranges.json").unlink()
    return files


@pytest.fixture
def workdir(tmp_path, qdq_files) -> Path:
    for path in qdq_files.values():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def called(trt, name: str) -> list[tuple]:
    return [c[1:] for c in trt.calls if c[0] == name]


def engine_header(trt, plan: Path) -> dict:
    return trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan.read_bytes())._header


@pytest.mark.parametrize(
    "version, network_flags",
    [("10.8.0.43", STRONGLY_TYPED_10),  # even where FP16 still uses BuilderFlag.FP16: INT8 is strongly typed
     ("10.13.0.35", STRONGLY_TYPED_10),
     ("11.4.0.106", 0)],
)  # fmt: skip
def test_int8_engine_is_strongly_typed_from_the_symmetric_file(workdir, monkeypatch, capsys, version, network_flags):
    trt = install_tensorrt(monkeypatch, version)
    code, out, err = cli(capsys, workdir / "m.int8.onnx", "--precision", "int8")
    assert code == 0, err
    assert called(trt, "create_network") == [(network_flags,)]
    assert called(trt, "parse_from_file") == [(str(workdir / "m.int8.onnx"),)]
    assert called(trt, "set_flag") == []  # no INT8/FP16 flags: the Q/DQ nodes say what is INT8
    header = engine_header(trt, workdir / "m.plan")
    assert header["precision"] == "int8" and header["strongly_typed"] is True
    info = json.loads((workdir / "m.plan.json").read_text())
    assert info["precision"] == "int8" and info["tensorrt"]["onnx"] == "m.int8.onnx"
    assert info["int8"]["form"] == "s8s8-symmetric" and info["int8"]["calibration"] == "minmax"
    assert "int8 tolerance" in out  # the engine was checked against ONNX Runtime FP32 (m.onnx)
    assert sorted(p.name for p in workdir.iterdir()) == ["m.int8-ort.onnx", "m.int8.onnx", "m.onnx", "m.plan",
                                                         "m.plan.json"]  # fmt: skip


def test_from_an_fp32_onnx_the_symmetric_file_is_calibrated_beside_the_plan(tmp_path, monkeypatch, capsys,
                                                                          random_u2netp):  # fmt: skip
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    source = Path(shutil.copy(random_u2netp.fp32, tmp_path / "m.onnx"))
    photos = tmp_path / "photos"
    photos.mkdir()
    # The kind of photos the engine check then runs (SOD, else synthetic): with random weights and
    # percentile calibration, ranges from another kind of image clip too much for the check's tolerance.
    for i, image in enumerate(sample_images(3)[0]):
        cv2.imwrite(str(photos / f"{i}.png"), image[:, :, ::-1])
    code, out, err = cli(capsys, source, "--precision", "int8", "--calib", photos, "--calib-count", 2)
    assert code == 0, err
    assert called(trt, "parse_from_file") == [(str(tmp_path / "m.int8.onnx"),)]
    info = json.loads((tmp_path / "m.plan.json").read_text())
    assert info["precision"] == "int8"
    assert info["int8"]["calibration_images"] == 2 and info["int8"]["calibration_source"] == "photos"
    assert "calibrated on 2 images" in out


def test_from_a_checkpoint_the_int8_files_are_exported_first(tmp_path, monkeypatch, capsys, random_u2netp):
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    code, out, err = cli(capsys, random_u2netp.ckpt, "-o", tmp_path / "out.plan", "--size", random_u2netp.size,
                         "--precision", "int8", "--calib-count", 2)  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.int8-ort.onnx", "out.int8.onnx", "out.onnx", "out.plan", "out.plan.json"]
    assert called(trt, "parse_from_file") == [(str(tmp_path / "out.int8.onnx"),)]
    info = json.loads((tmp_path / "out.plan.json").read_text())
    assert info["precision"] == "int8" and info["int8"]["form"] == "s8s8-symmetric"
    assert info["source"] == random_u2netp.ckpt.name


def test_the_cpu_form_is_refused_in_one_line(workdir, monkeypatch, capsys):
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    code, out, err = cli(capsys, workdir / "m.int8-ort.onnx", "--precision", "int8")
    assert code == 1
    assert err.count("\n") == 1 and "u8/s8" in err and "m.int8.onnx" in err
    assert called(trt, "parse_from_file") == [] and not (workdir / "m.plan").exists()


def test_the_real_parser_rule_holds_for_each_form(qdq_files, monkeypatch):
    """The fake parser refuses non-zero zero points as TensorRT's does: the symmetric file passes it."""
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    logger = trt.Logger()
    for form, ok in (("symmetric", True), ("ort", False)):
        network = trt.Builder(logger).create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse_from_file(str(qdq_files[form])) is ok
        if not ok:
            assert "zero point" in str(parser.get_error(0))


def test_an_int8_file_needs_an_int8_engine(workdir, monkeypatch, capsys):
    install_tensorrt(monkeypatch, "11.4.0.106")
    code, _, err = cli(capsys, workdir / "m.int8.onnx")  # default precision: fp16
    assert code == 1 and "INT8 Q/DQ" in err and "fp16 engine needs the FP32 ONNX" in err


def test_precision_options_are_checked(capsys, workdir):
    for args, message in ((["--fp32", "--precision", "int8"], "--fp32 contradicts --precision int8"),
                          (["--calib-count", "3"], "are for --precision int8")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([str(workdir / "m.onnx"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_precision_plan_for_int8(qdq_files):
    plan = plan_precision((10, 8), "int8", qdq_files["fp32"], None, int8_onnx=qdq_files["symmetric"])
    assert (plan.onnx, plan.strongly_typed, plan.fp16_flag) == (qdq_files["symmetric"], True, False)
    with pytest.raises(ExportError, match="built from an INT8 Q/DQ ONNX file, and none was given"):
        plan_precision((11, 4), "int8", qdq_files["fp32"], None)
    with pytest.raises(ExportError, match="has FP32 weights, but a strongly typed INT8 engine"):
        plan_precision((11, 4), "int8", None, None, int8_onnx=qdq_files["fp32"])
    with pytest.raises(ExportError, match="u8/s8 .* use m.int8.onnx"):
        plan_precision((11, 4), "int8", None, None, int8_onnx=qdq_files["ort"])


def test_default_output_strips_every_derived_tag():
    for name in ("m.onnx", "m.fp16.onnx", "m.int8.onnx", "m.int8-ort.onnx", "m.pth"):
        assert plan_path(Path("d") / name) == Path("d/m.plan")
