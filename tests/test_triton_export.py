"""export.to_triton: model repositories whose every config parses with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_tensorrt import install_tensorrt

from export.to_triton import main
from export.triton_config import ConfigError, TensorSpec, TritonModel, config_parameters, parse_config, render_config
from export.trt import BuildOptions, Profile, build_engine
from runtime.artifact import Artifact

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed (pip install '.[triton]')")


def parsed(repo: Path, name: str):
    return parse_config((repo / name / "config.pbtxt").read_text(encoding="utf-8"))


def test_onnx_repository_has_io_batching_instances_and_spec(tmp_path, random_u2netp):
    fp32 = random_u2netp.fp32
    repo = tmp_path / "repo"
    assert main([str(fp32), "-o", str(repo), "--max-batch", "6", "--instances", "2", "--kind", "cpu"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["u2netp"]  # no staging leftovers
    assert (repo / "u2netp" / "1" / "model.onnx").read_bytes() == fp32.read_bytes()
    config = parsed(repo, "u2netp")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 6
    (inp,), (out,) = config.input, config.output
    assert (inp.name, list(inp.dims), out.name, list(out.dims)) == ("image", [3, 64, 64], "mask", [1, 64, 64])
    assert inp.data_type == out.data_type == 11  # TYPE_FP32 (the project's FP16 files keep FP32 I/O)
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, 2)]  # KIND_CPU
    spec = Artifact.from_onnx_props(config_parameters(config)).spec
    assert spec.size == 64 and spec.divide_by_max
    assert json.loads(config_parameters(config)["u2net.variant"]) == "u2netp"


def test_exporting_again_adds_a_version_and_other_backend_is_refused(tmp_path, random_u2netp):
    fp32, fp16 = random_u2netp.onnx
    repo = tmp_path / "repo"
    assert main([str(fp32), "-o", str(repo)]) == 0
    assert main([str(fp16), "-o", str(repo)]) == 0
    assert sorted(p.name for p in (repo / "u2netp").iterdir()) == ["1", "2", "config.pbtxt"]
    assert (repo / "u2netp" / "2" / "model.onnx").read_bytes() == fp16.read_bytes()
    assert json.loads(config_parameters(parsed(repo, "u2netp"))["u2net.precision"]) == "fp16"
    assert main([str(fp32), "-o", str(repo), "--backend", "openvino"]) == 1  # same name, another backend
    assert sorted(p.name for p in (repo / "u2netp").iterdir()) == ["1", "2", "config.pbtxt"]
    assert main([str(fp32), "-o", str(repo), "--backend", "openvino", "--name", "u2netp_cpu"]) == 0
    config = parsed(repo, "u2netp_cpu")
    assert config.backend == "openvino" and config.instance_group[0].kind == 2


def test_plan_takes_max_batch_and_preferred_sizes_from_the_profile(tmp_path, monkeypatch, random_u2netp):
    fp32, fp16 = random_u2netp.onnx
    install_tensorrt(monkeypatch, "10.13.0.35")
    options = BuildOptions(Profile(1, 4, 16, size=64), precision="fp16")
    plan = build_engine(tmp_path / "u2netp.plan", options, fp32_onnx=fp32, fp16_onnx=fp16, check=False).plan
    repo = tmp_path / "repo"
    assert main([str(plan), str(fp32), "-o", str(repo)]) == 0  # one variant twice: _trt and _onnx
    config = parsed(repo, "u2netp_trt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.instance_group[0].kind == 1  # KIND_GPU
    assert (repo / "u2netp_trt" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert json.loads(config_parameters(config)["u2net.precision"]) == "fp16"
    assert parsed(repo, "u2netp_onnx").platform == "onnxruntime_onnx"
    assert main([str(plan), "-o", str(tmp_path / "r2"), "--max-batch", "32"]) == 1  # beyond the profile
    assert main([str(plan), "-o", str(tmp_path / "r3"), "--kind", "cpu"]) == 1  # plans need a GPU
    assert not (tmp_path / "r2" / "u2netp").exists() and not (tmp_path / "r3" / "u2netp").exists()


def test_bad_artifacts_are_one_line_each_and_the_rest_is_written(tmp_path, random_u2netp, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    lonely = tmp_path / "lonely.plan"
    lonely.write_bytes(b"engine")
    repo = tmp_path / "repo"
    code = main([str(broken), str(lonely), str(tmp_path / "missing.onnx"), str(random_u2netp.fp32), "-o", str(repo)])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "broken.onnx: not a readable ONNX file" in errors[0]
    assert "lonely.plan" in errors[1] and "side file" in errors[1]
    assert "missing.onnx: no such file" in errors[2]
    assert parsed(repo, "u2netp").platform == "onnxruntime_onnx"


def _model(**overrides) -> TritonModel:
    values = dict(name="m", kind="onnx", inputs=(TensorSpec("image", "TYPE_FP32", (3, 8, 8)),),
                  outputs=(TensorSpec("mask", "TYPE_FP32", (1, 8, 8)),), max_batch_size=4,
                  parameters={"u2net.size": "8", 'odd "key"': 'U²-Net a\\b "c"\n\x01'})  # fmt: skip
    values.update(overrides)
    return TritonModel(**values)


def test_rendered_text_round_trips_through_the_protobuf():
    config = parse_config(render_config(_model()))
    assert config_parameters(config) == {"u2net.size": "8", 'odd "key"': 'U²-Net a\\b "c"\n\x01'}
    assert parse_config(render_config(_model(max_batch_size=0, inputs=(TensorSpec("image", "TYPE_FP32", (1, 3, 8, 8)),))))


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("max_batch_size:", "max_batch_sise:", "no field named"),  # misspelled field
        ("TYPE_FP32", "TYPE_FLOAT32", "TYPE_FLOAT32"),  # unknown enum value
        ("KIND_GPU", "KIND_TPU", "KIND_TPU"),
        ("max_batch_size: 4", "max_batch_size: four", "max_batch_size"),  # wrong value type
        ("dims: [ 3, 8, 8 ]", "dims: [ 3, 0, 8 ]", "bad dims"),  # parses, but Triton refuses it
        ("max_batch_size: 4", "max_batch_size: 2", "preferred batch size 4"),
    ],
)
def test_a_config_with_a_wrong_field_fails_the_check(old, new, why):
    text = render_config(_model(preferred_batch_sizes=(4,)))
    assert old in text
    with pytest.raises(ConfigError, match=why):
        parse_config(text.replace(old, new, 1))


def test_model_description_refuses_impossible_settings():
    with pytest.raises(ConfigError, match="only on a GPU"):
        _model(kind="plan", instance_kind="cpu")
    with pytest.raises(ConfigError, match="outside"):
        _model(preferred_batch_sizes=(8,))
