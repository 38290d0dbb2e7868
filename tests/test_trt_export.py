"""python -m export.to_trt and export/trt.py against the fake TensorRT 10.x / 11.x.

The ONNX files are real (exported from a random U²-NetP at 64 px, FP16 by export.fp16) and the
engine check really runs ONNX Runtime; TensorRT and CUDA are the fakes of ``fake_tensorrt``. The
missing-TensorRT path runs for real: this machine has no TensorRT.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import onnx
import pytest
from fake_tensorrt import CACHE_MAGIC, FakeCudaRuntime, FakeGpu, install_tensorrt, make_tensorrt

from export.errors import ExportError
from export.onnx import read_artifact
from export.to_trt import main
from export.trt import BuildOptions, Profile, build_engine, check_batches, plan_precision, require_tensorrt
from runtime.artifact import Artifact
from runtime.names import plan_path
from runtime.preprocess import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
STRONGLY_TYPED_10 = 1 << 1  # NetworkDefinitionCreationFlag.STRONGLY_TYPED is bit 1 in TensorRT 10


@pytest.fixture(scope="module")
def onnx_pair(random_u2netp) -> tuple[Path, Path]:
    """(FP32, FP16) ONNX of the session's random U²-NetP; tests that write next to a file copy it first."""
    assert random_u2netp.size == SIZE
    return random_u2netp.onnx


@pytest.fixture
def fp32_onnx(tmp_path, onnx_pair) -> Path:
    """A private copy of the FP32 ONNX: the CLI writes its FP16 copy and the engine next to it."""
    return Path(shutil.copy(onnx_pair[0], tmp_path / "m.onnx"))


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def engine_header(trt, plan: Path) -> dict:
    """What the fake builder put in the engine (its precision, typing, profile, ONNX)."""
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan.read_bytes())
    return engine._header


def called(trt, name: str) -> list[tuple]:
    return [c[1:] for c in trt.calls if c[0] == name]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- the fake itself: removed APIs fail loudly -----------------------------------------------


@pytest.mark.parametrize(
    "version, expression",
    [
        ("10.13.0.35", "builder.build_engine"),
        ("10.13.0.35", "builder.max_batch_size"),
        ("10.13.0.35", "config.max_workspace_size"),
        ("10.13.0.35", "engine.num_bindings"),
        ("10.13.0.35", "engine.get_binding_index"),
        ("10.13.0.35", "context.execute_async_v2"),
        ("11.4.0.106", "trt.BuilderFlag.FP16"),
        ("11.4.0.106", "trt.BuilderFlag.INT8"),
        ("11.4.0.106", "trt.BuilderFlag.BF16"),
        ("11.4.0.106", "trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH"),
        ("11.4.0.106", "builder.platform_has_fast_fp16"),
        ("11.4.0.106", "builder.build_engine"),
        ("11.4.0.106", "context.execute_async_v2"),
    ],
)
def test_fake_fails_loudly_on_removed_apis(tmp_path, monkeypatch, onnx_pair, version, expression):
    trt = install_tensorrt(monkeypatch, version)
    build_engine(tmp_path / "e.plan", BuildOptions(Profile(size=SIZE)), fp32_onnx=onnx_pair[0], fp16_onnx=onnx_pair[1],
                 check=False)  # fmt: skip
    builder = trt.Builder(trt.Logger())
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine((tmp_path / "e.plan").read_bytes())
    scope = {"trt": trt, "builder": builder, "config": builder.create_builder_config(), "engine": engine,
             "context": engine.create_execution_context()}  # fmt: skip
    with pytest.raises(AttributeError):
        eval(expression, scope)
    if expression.startswith("config."):
        with pytest.raises(AttributeError):  # assigning is refused too, as pybind objects do
            scope["config"].max_workspace_size = 1 << 30


def test_fake_10_still_has_what_11_removed():
    trt = make_tensorrt("10.8.0.43", FakeCudaRuntime())
    assert int(trt.BuilderFlag.FP16) == 0 and int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) == 0
    assert trt.Builder(trt.Logger()).platform_has_fast_fp16 is True


# -- building, per generation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "version, network_flags, from_fp16_onnx, fp16_flag",
    [
        ("10.8.0.43", 0, False, True),  # before 10.12: BuilderFlag.FP16 on the FP32 ONNX
        ("10.13.0.35", STRONGLY_TYPED_10, True, False),  # 10.12+: strongly typed from the FP16 ONNX
        ("11.4.0.106", 0, True, False),  # 11: always strongly typed, no flag to pass
    ],
)
def test_fp16_engine_per_generation(tmp_path, monkeypatch, capsys, fp32_onnx, version, network_flags, from_fp16_onnx,
                                    fp16_flag):  # fmt: skip
    trt = install_tensorrt(monkeypatch, version)
    code, out, err = cli(capsys, fp32_onnx)
    assert code == 0, err
    plan, half = tmp_path / "m.plan", tmp_path / "m.fp16.onnx"
    assert plan.is_file() and half.is_file()
    assert called(trt, "create_network") == [(network_flags,)]
    assert called(trt, "parse_from_file") == [(str(half if from_fp16_onnx else fp32_onnx),)]
    assert (("FP16",) in called(trt, "set_flag")) is fp16_flag
    header = engine_header(trt, plan)
    assert header["precision"] == "fp16" and header["strongly_typed"] is from_fp16_onnx
    assert header["weights_fp16"] is from_fp16_onnx  # the parser really read the FP16 file
    info = json.loads((tmp_path / "m.plan.json").read_text())
    build = info["tensorrt"]
    assert info["precision"] == "fp16" and build["strongly_typed"] is from_fp16_onnx
    assert build["tensorrt_version"] == version
    assert build["gpu_name"] == "NVIDIA Fake GPU" and build["compute_capability"] == "8.9"
    assert info["variant"] == "u2netp"
    assert info["spec"] == {"size": SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                            "divide_by_max": True}  # fmt: skip
    assert build["profile"] == {"input": "image", "min": [1, 3, SIZE, SIZE], "opt": [1, 3, SIZE, SIZE],
                                "max": [8, 3, SIZE, SIZE]}  # fmt: skip
    assert isinstance(build["build_seconds"], float) and build["build_seconds"] >= 0
    # The side file describes the same artifact as the FP16 ONNX, plus what only the engine knows.
    assert Artifact.from_side_file(info, "m.plan.json") == read_artifact(half)
    assert Artifact.from_side_file(info, "m.plan.json").spec == PreprocessSpec(size=SIZE)
    assert len(json.dumps(info).split('"precision"')) == 2  # every field stored once
    assert "max abs diff" in out and "mean abs diff" in out and "fp16 tolerance" in out
    assert leftovers(tmp_path) == []  # no staging folder or temp file left behind


@pytest.mark.parametrize("version, network_flags", [("10.13.0.35", STRONGLY_TYPED_10), ("11.4.0.106", 0)])
def test_fp32_engine_is_strongly_typed_from_the_fp32_onnx(tmp_path, monkeypatch, capsys, fp32_onnx, version,
                                                          network_flags):  # fmt: skip
    trt = install_tensorrt(monkeypatch, version)
    code, out, err = cli(capsys, fp32_onnx, "--fp32")
    assert code == 0, err
    assert called(trt, "create_network") == [(network_flags,)]
    assert called(trt, "parse_from_file") == [(str(fp32_onnx),)]
    assert called(trt, "set_flag") == [] and called(trt, "clear_flag") == [("TF32",)]
    assert engine_header(trt, tmp_path / "m.plan")["precision"] == "fp32"
    info = json.loads((tmp_path / "m.plan.json").read_text())
    assert info["precision"] == "fp32" and "metadata" not in info
    assert not (tmp_path / "m.fp16.onnx").exists()  # an FP32 engine needs no FP16 file
    assert "fp32 tolerance" in out


def test_from_checkpoint_writes_both_onnx_files_then_the_engine(tmp_path, monkeypatch, capsys, random_u2netp):
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    code, out, err = cli(capsys, random_u2netp.ckpt, "-o", tmp_path / "out.plan", "--size", SIZE)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.fp16.onnx", "out.onnx", "out.plan", "out.plan.json"]
    assert called(trt, "parse_from_file") == [(str(tmp_path / "out.fp16.onnx"),)]
    info = json.loads((tmp_path / "out.plan.json").read_text())
    assert info["source_sha256"] == hashlib.sha256(random_u2netp.ckpt.read_bytes()).hexdigest()  # provenance travels along
    assert info["source"] == random_u2netp.ckpt.name
    assert out.count("wrote ") == 3


def test_strongly_typed_fp16_refuses_an_fp32_onnx(tmp_path, monkeypatch, onnx_pair):
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    with pytest.raises(ExportError, match=r"has FP32 weights, but a strongly typed FP16 engine needs an FP16 ONNX"):
        build_engine(tmp_path / "e.plan", BuildOptions(Profile(size=SIZE)), fp32_onnx=onnx_pair[0],
                     fp16_onnx=onnx_pair[0])  # fmt: skip
    assert called(trt, "build_serialized_network") == [] and list(tmp_path.iterdir()) == []
    # Without that guard TensorRT 11 would quietly build an FP32 engine: the fake shows it too.
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(onnx_pair[0]))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, SIZE, SIZE), (1, 3, SIZE, SIZE), (1, 3, SIZE, SIZE))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(blob)._header["precision"] == "fp32"


def test_profile_and_workspace_reach_the_builder(tmp_path, monkeypatch, capsys, fp32_onnx):
    trt = install_tensorrt(monkeypatch, "10.13.0.35")
    args = ("--min-batch", 2, "--opt-batch", 3, "--max-batch", 5, "--workspace-gb", 0.5)
    code, out, err = cli(capsys, fp32_onnx, *args)
    assert code == 0, err
    assert called(trt, "set_shape") == [("image", (2, 3, SIZE, SIZE), (3, 3, SIZE, SIZE), (5, 3, SIZE, SIZE))]
    assert called(trt, "set_memory_pool_limit") == [("WORKSPACE", 1 << 29)]
    assert engine_header(trt, tmp_path / "m.plan")["profile"]["image"][2] == [5, 3, SIZE, SIZE]
    info = json.loads((tmp_path / "m.plan.json").read_text())
    profile = info["tensorrt"]["profile"]
    assert profile["min"][0] == 2 and profile["opt"][0] == 3 and profile["max"][0] == 5
    assert info["tensorrt"]["workspace_bytes"] == 1 << 29
    # The check ran inside the profile (no batch of 1 below its minimum).
    assert f"(batch 4 at {SIZE}x{SIZE}):" in out and "batch 1 at" not in out


def test_timing_cache_is_loaded_and_saved(tmp_path, monkeypatch, capsys, fp32_onnx):
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    cache = tmp_path / "trt.cache"
    assert cli(capsys, fp32_onnx, "-o", tmp_path / "a.plan", "--timing-cache", cache)[0] == 0
    assert called(trt, "create_timing_cache") == [(0,)]  # no file yet: a fresh cache
    first = cache.read_bytes()
    assert first.startswith(CACHE_MAGIC) and json.loads(first[len(CACHE_MAGIC) :])["entries"] == 1
    trt.calls.clear()
    assert cli(capsys, fp32_onnx, "-o", tmp_path / "b.plan", "--timing-cache", cache)[0] == 0
    assert called(trt, "create_timing_cache") == [(len(first),)]  # the saved cache was read back
    assert called(trt, "set_timing_cache") == [(1, False)]  # with its entry, strict about mismatches
    assert json.loads(cache.read_bytes()[len(CACHE_MAGIC) :])["entries"] == 2


@pytest.mark.parametrize("problem", ["corrupt", "other GPU", "other TensorRT", "a folder"])
def test_timing_cache_problems_never_fail_the_build(tmp_path, monkeypatch, capsys, caplog, fp32_onnx, problem):
    cache = tmp_path / "trt.cache"
    foreign = {"other GPU": {"entries": 7, "device": "7.5", "version": "11.4.0.106"},
               "other TensorRT": {"entries": 7, "device": "8.9", "version": "10.13.0.35"}}  # fmt: skip
    if problem == "corrupt":
        cache.write_bytes(b"\x00\x01 not a cache")
    elif problem == "a folder":
        cache.mkdir()  # cannot be read, nor replaced afterwards
    else:
        cache.write_bytes(CACHE_MAGIC + json.dumps(foreign[problem]).encode())
    trt = install_tensorrt(monkeypatch, "11.4.0.106")
    with caplog.at_level(logging.WARNING):
        code, out, err = cli(capsys, fp32_onnx, "--timing-cache", cache)
    assert code == 0, err
    assert (tmp_path / "m.plan").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "export.trt"]
    if problem == "a folder":
        assert any("cannot read the timing cache" in w for w in warnings)
        assert any("cannot save the timing cache" in w for w in warnings) and cache.is_dir()
        return
    assert any("timing cache is unusable here" in w for w in warnings)
    assert called(trt, "create_timing_cache")[-1] == (0,)  # a fresh cache after the refused one
    assert json.loads(cache.read_bytes()[len(CACHE_MAGIC) :]) == {"entries": 1, "device": "8.9",
                                                                   "version": "11.4.0.106"}  # fmt: skip
    # TensorRT's own complaint reached Python logging (logger "tensorrt"), never stdout,
    # which holds only the CLI's own lines.
    native = [r.getMessage() for r in caplog.records if r.name == "tensorrt"]
    assert native and all(message not in out for message in native)
    assert out.splitlines() and all(line.startswith(("wrote ", "  TensorRT ")) for line in out.splitlines()), out


def test_engine_that_fails_the_check_is_not_kept(tmp_path, monkeypatch, capsys, fp32_onnx):
    trt = install_tensorrt(monkeypatch, "10.13.0.35")
    trt.output_error = 0.2  # an engine computing wrong masks
    code, out, err = cli(capsys, fp32_onnx)
    assert code == 1
    assert "engine check failed, nothing was written" in err and "max abs diff 0.2" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()
    assert leftovers(tmp_path) == []
    assert trt.cudart.live("device") == 0  # the check closed its engine


def test_engine_from_an_fp16_onnx_uses_its_fp32_sibling_for_the_check(tmp_path, monkeypatch, capsys, onnx_pair):
    for path in onnx_pair:
        shutil.copy(path, tmp_path / path.name)
    trt = install_tensorrt(monkeypatch, "10.13.0.35")
    code, _, err = cli(capsys, tmp_path / "u2netp.fp16.onnx")
    assert code == 0, err
    assert (tmp_path / "u2netp.plan").is_file()  # X.fp16.onnx -> X.plan
    assert called(trt, "parse_from_file") == [(str(tmp_path / "u2netp.fp16.onnx"),)]
    (tmp_path / "u2netp.onnx").unlink()
    code, _, err = cli(capsys, tmp_path / "u2netp.fp16.onnx")
    assert code == 1 and "expected beside it as u2netp.onnx" in err


def test_fixed_batch_onnx_cannot_take_a_batch_profile(tmp_path, monkeypatch, capsys, fp32_onnx):
    model = onnx.load(str(fp32_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch fixed at 1
    onnx.save(model, str(fp32_onnx))
    install_tensorrt(monkeypatch, "11.4.0.106")
    code, _, err = cli(capsys, fp32_onnx, "--fp32", "--max-batch", 4)
    assert code == 1 and "input batch is fixed at 1, but the profile needs 1..4" in err
    assert cli(capsys, fp32_onnx, "--fp32", "--max-batch", 1)[0] == 0


def test_parser_failure_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    install_tensorrt(monkeypatch, "10.8.0.43")  # weak typing: the builder reads the FP32 file itself
    with pytest.raises(ExportError, match=r"bad\.onnx: TensorRT's ONNX parser failed: .*failed to parse") as info:
        build_engine(tmp_path / "e.plan", BuildOptions(Profile(size=SIZE)), fp32_onnx=bad)
    assert "\n" not in str(info.value) and not (tmp_path / "e.plan").exists()


def test_unreadable_onnx_and_missing_source(tmp_path, monkeypatch, capsys):
    install_tensorrt(monkeypatch, "11.4.0.106")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    code, _, err = cli(capsys, bad)
    assert code == 1 and "bad.onnx: not a readable ONNX model" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, tmp_path / "absent.pth")
    assert code == 1 and "absent.pth: no such file" in err


# -- what is missing -------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_onnx_files_are_written_and_exit_is_2(tmp_path, random_u2netp):
    """For real: a subprocess on this machine, which has no TensorRT."""
    out = tmp_path / "x.plan"
    env = {k: v for k, v in os.environ.items() if not k.startswith("U2NET_")}
    proc = subprocess.run(
        [sys.executable, "-m", "export.to_trt", str(random_u2netp.ckpt), "-o", str(out), "--size", str(SIZE)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "x.plan: not built: TensorRT is not installed" in lines[0] and "pip install '.[tensorrt-cu12]'" in lines[0]
    assert "x.onnx" in lines[0] and "x.fp16.onnx" in lines[0]
    assert (tmp_path / "x.onnx").is_file() and (tmp_path / "x.fp16.onnx").is_file()
    assert not out.exists() and not (tmp_path / "x.plan.json").exists()


def test_without_a_gpu_or_cuda_package_exit_is_2(tmp_path, monkeypatch, capsys, fp32_onnx):
    install_tensorrt(monkeypatch, "11.4.0.106", FakeCudaRuntime(gpus=[]))
    code, _, err = cli(capsys, fp32_onnx)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no usable CUDA GPU: cudaErrorNoDevice" in err and "m.fp16.onnx" in err
    assert (tmp_path / "m.fp16.onnx").is_file() and not (tmp_path / "m.plan").exists()
    install_tensorrt(monkeypatch, "11.4.0.106", cuda_package=None)
    code, _, err = cli(capsys, fp32_onnx)
    assert code == 2 and "neither cuda-python nor pycuda is installed" in err


def test_builder_that_cannot_start_cuda_exits_2(tmp_path, monkeypatch, capsys, fp32_onnx):
    """cuda-python sees a GPU, but TensorRT's own CUDA start fails (the binding raises TypeError)."""
    trt = install_tensorrt(monkeypatch, "10.13.0.35")
    visible = trt.cudart.gpus
    trt.cudart.gpus = []  # only TensorRT sees none

    def gpu_info(self, device=0):
        from runtime.backends.cuda import GpuInfo

        return GpuInfo(0, visible[0].name, "8.9", 1 << 30)

    monkeypatch.setattr("runtime.backends.cuda.CudaPython.gpu_info", gpu_info)
    code, _, err = cli(capsys, fp32_onnx)
    assert code == 2 and "TensorRT cannot start a builder" in err


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(ExportError, match="TensorRT 8.6.1 is too old"):
        require_tensorrt()


# -- small pieces ----------------------------------------------------------------------------


def test_bad_arguments_are_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "m.onnx"), "--min-batch", "4", "--max-batch", "2"])
    assert info.value.code == 2 and "need --min-batch <= --opt-batch <= --max-batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine.onnx")])
    assert "must end in .plan" in capsys.readouterr().err


def test_default_output_names():
    assert plan_path(Path("runs/best.pth")) == Path("runs/best.plan")
    assert plan_path(Path("m/u2net.onnx")) == Path("m/u2net.plan")
    assert plan_path(Path("m/u2net.fp16.onnx")) == Path("m/u2net.plan")


@pytest.mark.parametrize(
    "n, lo, hi, expected",
    [
        (4, 1, 8, [[0, 1, 2, 3], [0]]),  # all at once, plus a batch of one
        (4, 1, 1, [[0], [1], [2], [3]]),
        (4, 2, 3, [[0, 1, 2], [3, 3]]),  # a short last batch is filled up to the minimum
        (4, 6, 8, [[0, 1, 2, 3, 0, 1]]),
    ],
)
def test_check_batches_stay_inside_the_profile(n, lo, hi, expected):
    runs = check_batches(n, lo, hi)
    assert runs == expected
    assert all(lo <= len(r) <= hi for r in runs) and set().union(*runs) == set(range(n))


@pytest.mark.parametrize(
    "version, precision, from_fp16, strongly_typed, fp16_flag",
    [
        ((10, 0), "fp16", False, False, True),
        ((10, 11), "fp16", False, False, True),
        ((10, 12), "fp16", True, True, False),
        ((11, 0), "fp16", True, True, False),
        ((10, 0), "fp32", False, True, False),
        ((11, 4), "fp32", False, True, False),
    ],
)
def test_precision_plan_by_version(onnx_pair, version, precision, from_fp16, strongly_typed, fp16_flag):
    plan = plan_precision(version, precision, onnx_pair[0], onnx_pair[1])
    assert plan.onnx == onnx_pair[1 if from_fp16 else 0]
    assert (plan.strongly_typed, plan.fp16_flag, plan.precision) == (strongly_typed, fp16_flag, precision)


def test_precision_plan_needs_the_right_file(onnx_pair):
    with pytest.raises(ExportError, match="built from an FP16 ONNX file, and none was given"):
        plan_precision((11, 0), "fp16", onnx_pair[0], None)
    with pytest.raises(ExportError, match="has FP16 weights, but a strongly typed FP32 engine needs an FP32 ONNX"):
        plan_precision((11, 0), "fp32", onnx_pair[1], None)


def test_profile_validation():
    with pytest.raises(ExportError, match="1 <= min <= opt <= max"):
        Profile(2, 1, 4)
    assert Profile(1, 2, 4, 320).shapes() == ((1, 3, 320, 320), (2, 3, 320, 320), (4, 3, 320, 320))


def test_other_gpu_in_side_file(tmp_path, monkeypatch, capsys, fp32_onnx):
    cudart = FakeCudaRuntime([FakeGpu(name="NVIDIA GeForce RTX 4090", major=8, minor=9)])
    install_tensorrt(monkeypatch, "11.4.0.106", cudart)
    assert cli(capsys, fp32_onnx)[0] == 0
    info = json.loads((tmp_path / "m.plan.json").read_text())
    assert info["tensorrt"]["gpu_name"] == "NVIDIA GeForce RTX 4090"


def test_from_checkpoint_the_artifact_is_passed_on_not_read_back(tmp_path, monkeypatch, capsys, random_u2netp):
    """After run_export returns, nothing reads an ONNX file's metadata or weights to learn what it is."""
    import export.to_trt as to_trt
    import export.trt as trt_module

    install_tensorrt(monkeypatch, "11.4.0.106")
    real_run_export = to_trt.run_export

    def then_forbid_reading(*args, **kwargs):
        exported = real_run_export(*args, **kwargs)

        def forbidden(*_args, **_kwargs):
            raise AssertionError("an ONNX file was read back after its export")

        for module, name in ((trt_module, "read_artifact"), (trt_module, "onnx_weight_precision"),
                             (to_trt, "load_onnx")):  # fmt: skip
            monkeypatch.setattr(module, name, forbidden)
        return exported

    monkeypatch.setattr(to_trt, "run_export", then_forbid_reading)
    code, out, err = cli(capsys, random_u2netp.ckpt, "-o", tmp_path / "e.plan", "--size", SIZE)
    assert code == 0, err
    info = json.loads((tmp_path / "e.plan.json").read_text())
    assert Artifact.from_side_file(info, "e.plan.json").replace(tensorrt=None) == read_artifact(
        tmp_path / "e.fp16.onnx"
    ).replace(tensorrt=None)
