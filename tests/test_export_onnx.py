"""ONNX export: contract, metadata, FP16, verification, checkpoint formats and CLI errors.

Uses a random but non-trivial U²-NetP (the ``random_u2netp`` fixture, ``tests/random_u2netp.py``) at 64x64 to stay fast.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from random_u2netp import SIZE as TEST_SIZE

from export import to_onnx
from export.errors import ExportError
from export.onnx import MAX_OPSET, MIN_OPSET, SIDE_NAMES, project_version
from export.samples import sample_images
from export.verify import TOLERANCES, ParityCheck, Tolerance
from runtime.artifact import Artifact
from runtime.backends.onnxrt import OnnxRuntimeBackend
from runtime.preprocess import PreprocessSpec
from train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {
    "u2net.size", "u2net.mean", "u2net.std", "u2net.divide_by_max",
    "u2net.variant", "u2net.precision", "u2net.version", "u2net.source_sha256",
}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_maps(model, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [torch.sigmoid(m).numpy() for m in model.eval().forward_logits(torch.from_numpy(x))]


def _batch(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, (n, 3, h, w)).astype(np.float32)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- contract --------------------------------------------------------------------------------


def test_fp32_contract_names_dtypes_shapes_and_batch_1_and_3(random_u2netp):
    fp32, _ = random_u2netp.onnx
    session = _session(fp32)
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type) == ("image", "tensor(float)")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, TEST_SIZE, TEST_SIZE]
    assert [(o.name, o.type) for o in outs] == [("mask", "tensor(float)")]
    for n in (1, 3):
        x = _batch(n, TEST_SIZE, TEST_SIZE, seed=n)
        (mask,) = session.run(None, {"image": x})
        assert mask.shape == (n, 1, TEST_SIZE, TEST_SIZE) and mask.dtype == np.float32
        np.testing.assert_allclose(mask, _torch_maps(random_u2netp.model, x)[0], atol=TOLERANCES["fp32"].max_abs, rtol=0)
    # Static H/W means static: another size is refused rather than silently resized.
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": _batch(1, TEST_SIZE + 1, TEST_SIZE + 1)})


def test_resize_matches_align_corners_false(random_u2netp):
    graph = onnx.load(random_u2netp.onnx[0]).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes, "the decoder's upsampling must be in the graph"
    for node in resizes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"linear"
        assert attrs["coordinate_transformation_mode"] in (b"half_pixel", b"pytorch_half_pixel")


def test_dynamic_hw_and_all_outputs_at_odd_sizes_batch_1_and_3(random_u2netp, tmp_path):
    (path,) = to_onnx.export_checkpoint(random_u2netp.ckpt, tmp_path / "seven.onnx", dynamic_hw=True, all_outputs=True)
    session = _session(path)
    shape = session.get_inputs()[0].shape
    assert all(isinstance(d, str) for d in (shape[0], shape[2], shape[3])) and shape[1] == 3
    names = ["mask", *SIDE_NAMES]
    assert [o.name for o in session.get_outputs()] == names
    for n, h, w in ((1, 65, 97), (3, 47, 33)):
        x = _batch(n, h, w, seed=h)
        got = session.run(None, {"image": x})
        want = _torch_maps(random_u2netp.model, x)
        for name, g, expected in zip(names, got, want, strict=True):
            assert g.shape == (n, 1, h, w), name
            np.testing.assert_allclose(g, expected, atol=TOLERANCES["fp32"].max_abs, rtol=0, err_msg=name)
    # The runtime still finds the fused map by name among the seven.
    x = _batch(2, TEST_SIZE, TEST_SIZE)
    backend = OnnxRuntimeBackend(path, provider="cpu")
    np.testing.assert_array_equal(backend.run(x), session.run(["mask"], {"image": x})[0])


# --- metadata --------------------------------------------------------------------------------


def test_metadata_keys_and_round_trip(random_u2netp):
    sha = hashlib.sha256(random_u2netp.ckpt.read_bytes()).hexdigest()
    for path, precision in zip(random_u2netp.onnx, ("fp32", "fp16"), strict=True):
        model = onnx.load(path)
        props = {p.key: p.value for p in model.metadata_props}
        assert CONTRACT_KEYS <= set(props)
        assert all(isinstance(json.loads(v), (str, int, float, bool, list)) for v in props.values())
        assert json.loads(props["u2net.variant"]) == "u2netp"
        assert json.loads(props["u2net.precision"]) == precision
        assert json.loads(props["u2net.version"]) == project_version()
        assert json.loads(props["u2net.source_sha256"]) == sha
        assert Artifact.from_onnx_props(props).spec == PreprocessSpec(size=TEST_SIZE)
        # The runtime needs no flags: its backend reads the same spec back.
        assert OnnxRuntimeBackend(path, provider="cpu").spec == PreprocessSpec(size=TEST_SIZE)
        # An IR version every supported onnxruntime accepts, and a model the checker passes.
        assert model.ir_version <= 10
        onnx.checker.check_model(model, full_check=True)


def test_training_checkpoint_meta_travels_into_the_file(random_u2netp, tmp_path, capsys):
    """Default output next to the checkpoint; size and normalisation from its meta; --model and --opset."""
    ckpt = tmp_path / "custom.pth"
    meta = {"input_size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "divide_by_max": False}
    save_checkpoint(ckpt, random_u2netp.model, "u2netp", meta=meta)
    assert to_onnx.main([str(ckpt), "--model", "u2netp", "--opset", str(MIN_OPSET)]) == 0
    out = tmp_path / "custom.onnx"
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout and "max abs diff" in stdout
    assert _files(tmp_path) == ["custom.onnx", "custom.pth"]
    spec = OnnxRuntimeBackend(out, provider="cpu").spec
    assert spec == PreprocessSpec(size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), divide_by_max=False)
    model = onnx.load(out)
    assert model.opset_import[0].version == MIN_OPSET
    assert _session(out).get_inputs()[0].shape[2:] == [96, 96]


# --- FP16 ------------------------------------------------------------------------------------


def test_fp16_weights_are_half_and_io_stays_float32(random_u2netp):
    fp32, fp16 = random_u2netp.onnx
    model = onnx.load(fp16)
    kinds = Counter(init.data_type for init in model.graph.initializer)
    assert kinds[onnx.TensorProto.FLOAT16] > 100 and kinds[onnx.TensorProto.FLOAT] == 0, kinds
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names), "node names must be unique (TensorRT's parser)"
    # Strict type inference: no op mixes float16 and float32 inputs (strongly typed TensorRT rejects that).
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size


def test_fp16_within_tolerance_and_really_computes_in_half(random_u2netp):
    fp32, fp16 = random_u2netp.onnx
    x = _batch(3, TEST_SIZE, TEST_SIZE)
    want = _torch_maps(random_u2netp.model, x)[0]
    half = _session(fp16).run(None, {"image": x})[0]
    full = _session(fp32).run(None, {"image": x})[0]
    tol = TOLERANCES["fp16"]
    diff = np.abs(half - want)
    assert half.dtype == np.float32 and half.shape == want.shape
    assert tol.accepts(float(diff.max()), float(diff.mean())), (diff.max(), diff.mean())
    # Half-precision rounding is visible: the FP16 file is not the FP32 graph in disguise.
    assert np.abs(half - full).max() > 1e-5


def test_fp16_parity_check_reports_numbers(random_u2netp):
    result = ParityCheck(random_u2netp.model).verify(random_u2netp.onnx[1])
    assert result.precision == "fp16" and result.ok
    assert 0 < result.mean_abs <= result.max_abs <= TOLERANCES["fp16"].max_abs
    assert "batch 3" in result.summary() and "batch 1" in result.summary()


# --- verification ----------------------------------------------------------------------------


def _perturb_fuse_weight(path: Path, delta: float = 0.5) -> None:
    """Change the 1x1 fuse conv's weights (shape 1x6x1x1) in a written ONNX file."""
    model = onnx.load(path)
    (init,) = [i for i in model.graph.initializer if list(i.dims) == [1, 6, 1, 1]]
    values = onnx.numpy_helper.to_array(init) + np.asarray(delta, onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, path)


def test_tolerance_table():
    assert set(TOLERANCES) == {"fp32", "fp16", "bf16", "int8"}
    assert TOLERANCES["int8"].accepts(0.5, 0.02) and not TOLERANCES["int8"].accepts(0.5, 0.031)
    assert TOLERANCES["bf16"].accepts(0.05, 0.004) and not TOLERANCES["bf16"].accepts(0.11, 0.0)
    assert TOLERANCES["fp32"].accepts(1e-4, 1e-4) and not TOLERANCES["fp32"].accepts(1.1e-4, 0.0)
    assert TOLERANCES["fp16"].accepts(5e-2, 2e-3)
    assert not TOLERANCES["fp16"].accepts(1e-3, 2.1e-3) and not TOLERANCES["fp16"].accepts(5.1e-2, 0.0)
    assert not Tolerance(max_abs=1.0).accepts(float("nan"), 0.0)


def test_tampered_file_fails_verification(random_u2netp, tmp_path):
    bad = tmp_path / "tampered.onnx"
    bad.write_bytes(random_u2netp.onnx[0].read_bytes())
    _perturb_fuse_weight(bad)
    parity = ParityCheck(random_u2netp.model)
    assert parity.verify(random_u2netp.onnx[0]).ok  # the untouched file passes the same check
    result = parity.compare(bad)
    assert not result.ok and result.max_abs > 1e-2
    with pytest.raises(ExportError, match="tampered.onnx: verification failed"):
        parity.verify(bad)


def test_metadata_that_misdescribes_the_checkpoint_fails(random_u2netp):
    wrong = PreprocessSpec(size=TEST_SIZE, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ExportError, match="u2netp.onnx: metadata describes"):
        ParityCheck(random_u2netp.model, spec=wrong).compare(random_u2netp.onnx[0])


@pytest.mark.parametrize("stage", ["fp32", "fp16"])
def test_cli_removes_everything_when_verification_fails(stage, random_u2netp, tmp_path, monkeypatch, capsys):
    """A file that differs from the checkpoint's model is caught; no file (or staging folder) is left."""
    target = "export_onnx" if stage == "fp32" else "convert_to_fp16"
    real = getattr(to_onnx, target)

    def tampering(*args, **kwargs):
        path = real(*args, **kwargs)
        _perturb_fuse_weight(path)
        return path

    monkeypatch.setattr(to_onnx, target, tampering)
    out = tmp_path / "new" / "folder" / "m.onnx"
    code = to_onnx.main([str(random_u2netp.ckpt), "-o", str(out), "--fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "verification failed" in err[0] and "nothing was written" in err[0]
    assert str(out.parent / ("m.fp16.onnx" if stage == "fp16" else "m.onnx")) in err[0]
    assert _files(tmp_path) == []  # no file, no staging folder, not even the folders made for the output


def test_sample_images_fall_back_to_synthetic(tmp_path):
    images, source = sample_images(2, sod_dir=tmp_path / "absent")
    assert source == "synthetic images" and len(images) == 2
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    assert not np.array_equal(images[0], images[1])


def test_sample_images_use_sod_photos(sod_dir):
    images, source = sample_images(3, sod_dir=sod_dir)
    assert source == "SOD photos" and len(images) == 3 and images[0].dtype == np.uint8


# --- checkpoint formats and CLI -----------------------------------------------------------------


def test_official_raw_state_dict_via_subprocess(random_u2netp, tmp_path):
    ckpt = tmp_path / "u2netp.pth"
    torch.save(random_u2netp.model.state_dict(), ckpt)  # the official format: a bare state dict
    out = tmp_path / "nested" / "dir" / "u2netp.onnx"  # missing folders are created
    run = subprocess.run(
        [sys.executable, "-m", "export.to_onnx", str(ckpt), "-o", str(out), "--size", str(TEST_SIZE),
         "--fp16", "--dynamic-hw"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert _files(out.parent) == ["u2netp.fp16.onnx", "u2netp.onnx"]
    assert f"wrote {out}" in run.stdout and f"wrote {out.parent / 'u2netp.fp16.onnx'}" in run.stdout
    assert "MB" in run.stdout and run.stdout.count("max abs diff") == 2 and "Traceback" not in run.stderr
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(props["u2net.variant"]) == "u2netp" and json.loads(props["u2net.size"]) == TEST_SIZE
    assert json.loads(props["u2net.source_sha256"]) == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_cli_error_via_subprocess(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "export.to_onnx", str(tmp_path / "missing.pth")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().count("\n") == 0 and "missing.pth" in run.stderr and "Traceback" not in run.stderr


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_missing_checkpoint(tmp_path, capsys):
    assert to_onnx.main([str(tmp_path / "nope.pth")]) == 1
    assert "nope.pth" in _one_line_error(capsys)
    assert _files(tmp_path) == []


def test_corrupt_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "broken.pth"
    ckpt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert to_onnx.main([str(ckpt)]) == 1
    assert "broken.pth" in _one_line_error(capsys)
    assert _files(tmp_path) == ["broken.pth"]


def test_wrong_architecture_flag(random_u2netp, tmp_path, capsys):
    assert to_onnx.main([str(random_u2netp.ckpt), "-o", str(tmp_path / "x.onnx"), "--model", "u2net"]) == 1
    line = _one_line_error(capsys)
    assert "u2netp_test.pth" in line and "u2net" in line
    assert _files(tmp_path) == []


def test_unwritable_output_directory(random_u2netp, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # Root may write anywhere, so use a path whose "folder" is a file: no one can create it.
    assert to_onnx.main([str(random_u2netp.ckpt), "-o", str(blocker / "sub" / "m.onnx")]) == 1
    assert "a_file" in _one_line_error(capsys)
    assert _files(tmp_path) == ["a_file"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--opset", str(MIN_OPSET - 1)], "opset"),
        (["--opset", str(MAX_OPSET + 1)], "opset"),
        (["--size", "16"], "too small"),
        (["-o", "{tmp}/model.bin"], ".onnx"),
    ],
)
def test_bad_options_fail_cleanly(args, needle, random_u2netp, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "m.onnx")]
    assert to_onnx.main([str(random_u2netp.ckpt), *args]) == 1
    assert needle in _one_line_error(capsys)
    assert _files(tmp_path) == []


def test_argparse_rejects_nonsense(random_u2netp, capsys):
    for argv in (["--size", "0"], ["--model", "resnet"], []):
        with pytest.raises(SystemExit) as exc:
            to_onnx.main(([str(random_u2netp.ckpt)] if argv else []) + argv)
        assert exc.value.code == 2
    capsys.readouterr()
