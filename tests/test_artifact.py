"""The one artifact description and the one backend interface: round trips, old files, bad metadata."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import onnx
import pytest
from runtime_helpers import make_tiny_onnx

from runtime import backends
from runtime.artifact import SIDE_FORMAT, Artifact, TensorRTBuild
from runtime.backends import BackendEntry, BackendError, open_backend, provider_choices
from runtime.backends.base import Backend
from runtime.backends.onnxrt import PROVIDERS, OnnxRuntimeBackend
from runtime.infer import main as infer_main
from runtime.preprocess import PreprocessSpec

FULL = Artifact(
    variant="u2netp", precision="fp16", spec=PreprocessSpec(size=288, mean=(0.5, 0.5, 0.5), divide_by_max=False),
    opset=17, outputs=("mask", "side1"), dynamic_hw=True, source="best.pth", source_sha256="ab" * 32,
    version="0.3.0", tensorrt=TensorRTBuild(tensorrt_version="10.13.0.35", gpu_name="NVIDIA L4"),
)  # fmt: skip


def _old_export_props() -> dict[str, str]:
    """metadata_props exactly as export.onnx wrote them before Artifact existed (one json.dumps per key)."""
    spec = PreprocessSpec(size=288, mean=(0.5, 0.5, 0.5), divide_by_max=False)
    props = {f"u2net.{k}": json.dumps(v) for k, v in
             {"size": spec.size, "mean": list(spec.mean), "std": list(spec.std), "divide_by_max": False}.items()}
    props.update({f"u2net.{k}": json.dumps(v) for k, v in {
        "variant": "u2netp", "precision": "fp16", "version": "0.3.0", "opset": 17, "dynamic_hw": True,
        "outputs": ["mask", "side1"], "source_sha256": "ab" * 32, "source": "best.pth"}.items()})
    return props  # fmt: skip


def test_round_trips():
    assert Artifact.from_dict(FULL.to_dict()) == FULL and Artifact.from_dict(FULL.to_dict()).tensorrt == FULL.tensorrt
    assert json.loads(json.dumps(FULL.to_dict())) == FULL.to_dict()  # plain JSON values only
    assert Artifact.from_side_file(FULL.to_side_file(), "x.plan.json").tensorrt == FULL.tensorrt
    assert FULL.to_side_file()["format"] == SIDE_FORMAT
    back = Artifact.from_onnx_props(FULL.to_onnx_props())
    assert back == FULL and back.tensorrt is None  # an ONNX file has no TensorRT build
    assert Artifact.from_dict({}) == Artifact()  # everything has a default


def test_onnx_props_keep_the_keys_files_always_had():
    assert FULL.to_onnx_props() == _old_export_props()
    assert Artifact.from_onnx_props(_old_export_props()) == FULL


def test_old_onnx_file_loads(tmp_path):
    """A file with only the first contract's keys (spec, variant, precision) opens and describes itself."""
    path = make_tiny_onnx(tmp_path / "old.onnx")
    keys = {p.key for p in onnx.load(path).metadata_props}
    assert keys == {"u2net.size", "u2net.mean", "u2net.std", "u2net.divide_by_max", "u2net.variant", "u2net.precision"}
    with OnnxRuntimeBackend(path, provider="cpu") as backend:
        assert backend.artifact == Artifact(variant="tiny", precision="fp32", spec=PreprocessSpec(size=64))
        assert "tiny fp32 64x64" in backend.describe()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("u2net.size", "abc", "metadata u2net.size is not valid JSON: 'abc'"),
        ("u2net.size", '"64"', "size is '64', expected a positive whole number"),
        ("u2net.size", "0", "size is 0, expected a positive whole number"),
        ("u2net.mean", "[0.5, 0.5]", r"mean is \[0.5, 0.5\], expected three numbers"),
        ("u2net.std", "[1, 0, 1]", "std is .* expected three positive numbers"),
        ("u2net.divide_by_max", '"yes"', "divide_by_max is 'yes', expected true or false"),
        ("u2net.variant", "3", "metadata variant is 3, expected a string"),
        ("u2net.opset", "1.5", "metadata opset is 1.5, expected a positive whole number"),
        ("u2net.outputs", "[]", r"metadata outputs is \[\], expected a non-empty list of names"),
    ],
)
def test_bad_onnx_metadata_is_one_line_naming_the_file(tmp_path, key, value, message):
    path = make_tiny_onnx(tmp_path / "bad.onnx")
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            break
    else:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    with pytest.raises(BackendError, match=message) as caught:
        OnnxRuntimeBackend(path, provider="cpu")
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_infer_cli_reports_bad_metadata_instead_of_a_traceback(tmp_path, capsys):
    path = make_tiny_onnx(tmp_path / "bad.onnx")
    model = onnx.load(path)
    next(p for p in model.metadata_props if p.key == "u2net.size").value = "three hundred"
    onnx.save(model, path)
    code = infer_main(["--engine", str(path), str(tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {path}: metadata u2net.size is not valid JSON: 'three hundred'"]


def test_side_file_of_unknown_shape():
    with pytest.raises(BackendError, match=r"x.plan.json: side file holds list, not an object"):
        Artifact.from_side_file([], "x.plan.json")
    with pytest.raises(BackendError, match=r"x.plan.json: bad preprocessing metadata: expected an object, not str"):
        Artifact.from_side_file({"format": SIDE_FORMAT, "spec": "320"}, "x.plan.json")


# --- the backend base ------------------------------------------------------------------------


def test_run_checks_batches_with_clear_errors(tmp_path):
    backend = OnnxRuntimeBackend(make_tiny_onnx(tmp_path / "tiny.onnx", batch=2), provider="cpu")
    good = np.zeros((2, 3, 64, 64), np.float32)
    assert backend.run(good).shape == (2, 1, 64, 64)
    assert backend.run(good.astype(np.float64)).dtype == np.float32  # any float is cast once, here
    for bad, message in [
        (good[:, :2], r"expected a float32 batch \(N, 3, 64, 64\), got \(2, 2, 64, 64\)"),
        (np.zeros((2, 3, 32, 32), np.float32), r"got \(2, 3, 32, 32\)"),
        (good.astype(np.uint8), "got dtype uint8"),
        ([[1.0]], "got list"),
        (np.zeros((3, 3, 64, 64), np.float32), r"batch of 3 is outside the engine's batch range \(1..2\)"),
    ]:
        with pytest.raises(ValueError, match=message):  # also a BackendError (BatchError is both)
            backend.run(bad)
    assert backend.max_batch == 2 and backend.preferred_batch == 1  # ONNX Runtime on a CPU: 1
    with backend:
        pass
    assert backend.closed
    with pytest.raises(RuntimeError, match="onnxruntime backend is closed"):
        backend.run(good)
    backend.close()  # twice is fine


def test_provider_choices_come_from_the_backend_table():
    assert provider_choices() == list(PROVIDERS)
    assert {"onnxruntime", "tensorrt"} <= set(backends.backend_names())


class _EchoBackend(Backend):
    """A whole backend in a few lines: what a new module needs to provide."""

    name = "echo"

    def __init__(self, path, provider=None, threads=None, precision=None):
        super().__init__(path, Artifact(variant="echo", spec=PreprocessSpec(size=8)))
        self.max_batch = 4

    def _run(self, batch, names):
        return [batch[:, :1]]


def test_a_new_backend_is_one_module_and_one_row(tmp_path, monkeypatch):
    module = types.ModuleType("echo_backend")
    module.EchoBackend = _EchoBackend
    monkeypatch.setitem(sys.modules, "echo_backend", module)
    row = BackendEntry("echo", "echo_backend", "EchoBackend", (".echo",), schemes=("echo://",))
    monkeypatch.setattr(backends, "BACKENDS", (*backends.BACKENDS, row))
    (tmp_path / "m.echo").write_bytes(b"x")
    for target in (tmp_path / "m.echo", "echo://localhost:1/m"):
        with open_backend(target) as backend:
            assert isinstance(backend, _EchoBackend) and backend.preferred_batch == 4
            assert backend.describe() == f"echo, {backend.label}: echo fp32 8x8, batch 1..4"
            assert backend.run(np.ones((2, 3, 8, 8), np.float32)).shape == (2, 1, 8, 8)
    # An explicit name overrides the suffix; an unknown name or suffix is one line.
    tiny = make_tiny_onnx(tmp_path / "t.onnx")
    assert isinstance(open_backend(tiny, backend="echo"), _EchoBackend)
    with pytest.raises(BackendError, match=r"t.onnx: unknown backend 'nope'; choose openvino, onnxruntime, tensorrt"):
        open_backend(tiny, backend="nope")
    with pytest.raises(BackendError, match=r"unknown engine type '.txt'; expected .onnx, .plan"):
        open_backend(tmp_path / "m.txt")


def test_one_log_format_for_every_cli():
    import logging

    from runtime.logs import CliFormatter

    fmt = CliFormatter("%(message)s")

    def line(level: int) -> str:
        return fmt.format(logging.LogRecord("export.trt", level, __file__, 1, "built in %.1f s", (2.0,), None))

    assert line(logging.INFO) == "built in 2.0 s"
    assert line(logging.WARNING) == "warning: built in 2.0 s" and line(logging.ERROR) == "error: built in 2.0 s"
    assert line(logging.DEBUG) == "debug export.trt: built in 2.0 s"


def test_first_line_quotes_one_line_of_any_message():
    from runtime.errors import first_line

    assert first_line(ValueError("\n  first\nsecond")) == "first"
    assert first_line(ValueError("")) == "ValueError"  # an empty message: the type (no IndexError)
    assert first_line(RuntimeError("x" * 500), 10) == "x" * 10
    assert first_line("parser said\nmore") == "parser said" and first_line("") == "unknown error"

    class ServerError(Exception):  # tritonclient's errors keep their text in .message()
        def message(self) -> str:
            return "model not ready\ndetails"

    assert first_line(ServerError()) == "model not ready"
