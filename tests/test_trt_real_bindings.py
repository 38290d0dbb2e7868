"""The fake TensorRT and the project's TensorRT code, judged by TensorRT's REAL Python bindings.

The bindings wheels come from PyPI (``tests/real_tensorrt.py``: downloaded once into ``.cache/``)
and import over stub native libraries, so everything that does not need a GPU is the real thing:
class and method names, keyword names, enum values, the binding's own error texts, the default
logger's stdout, and ``Builder(logger)`` / ``Runtime(logger)`` failing with TypeError when the
library cannot start. The tests skip (saying so) only when PyPI cannot be reached.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from fake_tensorrt import FakeCudaRuntime, cudaError_t, cudaMemcpyKind, make_tensorrt
from real_tensorrt import (
    CUDA_BINDINGS,
    RELEASES,
    NoWheelForThisPython,
    RegistryUnreachable,
    cuda_bindings_site,
    real_tensorrt,
)
from tensorrt_api_diff import api_differences

REPO = Path(__file__).resolve().parents[1]
PROJECT_SOURCES = ("export/trt.py", "runtime/backends/trt.py")
LOG_LINE = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] \[TRT\] \[E\] (.*)$")
STUB_MESSAGE = "stub libnvinfer: CUDA initialization failure with error: 35"

# Every TensorRT name the project's code touches, and the generations it touches it on. Names
# that 11 removed are only used on 10 (export/trt.py guards them): there they must exist, and on
# 11 they must really be gone.
ALL, TEN = (10, 11), (10,)
PROJECT_USES = {
    "Builder": ALL, "Builder.create_network": ALL, "Builder.create_builder_config": ALL,
    "Builder.create_optimization_profile": ALL, "Builder.build_serialized_network": ALL,
    "Builder.platform_has_fast_fp16": TEN,
    "OnnxParser": ALL, "OnnxParser.parse_from_file": ALL, "OnnxParser.num_errors": ALL, "OnnxParser.get_error": ALL,
    "INetworkDefinition.num_inputs": ALL, "INetworkDefinition.get_input": ALL, "ITensor.name": ALL,
    "ITensor.shape": ALL, "NetworkDefinitionCreationFlag.STRONGLY_TYPED": ALL,
    "IBuilderConfig.set_memory_pool_limit": ALL, "IBuilderConfig.set_flag": ALL, "IBuilderConfig.clear_flag": ALL,
    "IBuilderConfig.add_optimization_profile": ALL, "IBuilderConfig.create_timing_cache": ALL,
    "IBuilderConfig.set_timing_cache": ALL, "IBuilderConfig.get_timing_cache": ALL, "ITimingCache.serialize": ALL,
    "IOptimizationProfile.set_shape": ALL, "MemoryPoolType.WORKSPACE": ALL, "BuilderFlag.TF32": ALL,
    "BuilderFlag.FP16": TEN,
    "Runtime": ALL, "Runtime.deserialize_cuda_engine": ALL, "ICudaEngine.num_io_tensors": ALL,
    "ICudaEngine.get_tensor_name": ALL, "ICudaEngine.get_tensor_mode": ALL, "ICudaEngine.get_tensor_shape": ALL,
    "ICudaEngine.get_tensor_dtype": ALL, "ICudaEngine.get_tensor_profile_shape": ALL,
    "ICudaEngine.create_execution_context": ALL, "TensorIOMode.INPUT": ALL, "TensorIOMode.OUTPUT": ALL,
    "IExecutionContext.set_input_shape": ALL, "IExecutionContext.set_tensor_address": ALL,
    "IExecutionContext.get_tensor_shape": ALL, "IExecutionContext.execute_async_v3": ALL, "nptype": ALL,
    "ILogger": ALL, "ILogger.log": ALL, "ILogger.Severity": ALL,
}  # fmt: skip
KEYWORDS_USED = {"IBuilderConfig.set_timing_cache": "ignore_mismatch"}
NEVER_USED_BECAUSE_REMOVED = ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.INT8", "BuilderFlag.BF16")


def _load(release):
    try:
        return real_tensorrt(release)
    except (RegistryUnreachable, NoWheelForThisPython) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=RELEASES, ids=str)
def real(request):
    return _load(request.param)


def lookup(dump: dict, dotted: str) -> dict | None:
    """The dump's entry for ``Class.member`` / ``Class`` / ``function`` (None if absent)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dump["classes"].get(head) or ({"kind": "function"} if head in dump["functions"] else None)
    entry = dump["classes"].get(head)
    for part in rest.split("."):
        if entry is None:
            return None
        if "enum" in entry:
            return {"kind": "enum value", "value": entry["enum"][part]} if part in entry["enum"] else None
        entry = entry["members"].get(part)
    return entry


def test_fake_agrees_with_the_real_bindings(real):
    dump = real.dump()
    fake = make_tensorrt(real.release.version, FakeCudaRuntime())
    assert fake.enum_release == real.release.version  # the fake's tables are this release's own
    assert api_differences(fake, dump) == []


def test_every_name_the_project_uses_exists_where_it_is_used(real):
    dump, major = real.dump(), real.release.major
    source = "\n".join((REPO / path).read_text() for path in PROJECT_SOURCES)
    for dotted, generations in PROJECT_USES.items():
        assert dotted.rsplit(".", 1)[-1] in source, f"{dotted} is listed but the project no longer uses it"
        present = lookup(dump, dotted) is not None
        if major in generations:
            assert present, f"{real.release}: the project uses {dotted}, which does not exist"
        else:
            assert not present, f"{real.release}: the code treats {dotted} as removed in {major}, but it exists"
    for dotted, keyword in KEYWORDS_USED.items():
        assert any(keyword in names for names in lookup(dump, dotted)["keywords"]), (dotted, keyword)
    for dotted in NEVER_USED_BECAUSE_REMOVED:
        assert f".{dotted.rsplit('.', 1)[-1]}" not in source  # never accessed (comments may name it)
        assert (lookup(dump, dotted) is None) == (major >= 11), f"{real.release}: {dotted}"


@pytest.mark.parametrize("release", [r for r in RELEASES if r.major == 10], ids=str)
def test_what_the_fake_says_11_removed_exists_in_10(release):
    dump = _load(release).dump()
    fake11 = make_tensorrt("11.4.0.106", FakeCudaRuntime())
    removed = [f"{name}.{member}" for name in dir(fake11) if isinstance(getattr(fake11, name), type)
               for member, why in getattr(getattr(fake11, name), "_removed", {}).items() if why == "11"]  # fmt: skip
    assert removed, "the fake names no API removed in 11"
    assert [name for name in removed if lookup(dump, name) is None] == []
    for dotted in ("BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"):
        assert lookup(dump, dotted) is not None and not hasattr(getattr(fake11, dotted.split(".")[0]),
                                                                dotted.split(".")[1])  # fmt: skip


def test_the_fakes_error_texts_are_the_bindings_own(real):
    binary = real.library.read_bytes()
    for text in ("Shape provided for min is inconsistent with other shapes.",
                 "Shape provided for max is inconsistent with other shapes.",
                 "factory function returned nullptr"):  # fmt: skip
        assert text.encode() in binary, text
    fake = make_tensorrt(real.release.version, FakeCudaRuntime())
    profile = fake.IOptimizationProfile()
    with pytest.raises(RuntimeError, match=r"^Shape provided for max is inconsistent with other shapes\.$"):
        profile.set_shape("image", (2, 3, 8, 8), (4, 3, 8, 8), (3, 3, 8, 8))
    no_driver = make_tensorrt(real.release.version, FakeCudaRuntime(driver_cuda=0))
    with pytest.raises(TypeError, match=r"^pybind11::init\(\): factory function returned nullptr$"):
        no_driver.Builder(no_driver.Logger())


def test_real_logger_prints_to_stdout_ours_goes_to_logging(real, capsys):
    proc = real.run(textwrap.dedent("""
        import logging, sys, tensorrt as trt
        from runtime.backends.trt import make_logger
        logging.basicConfig(level=logging.WARNING, format="LOGGING %(name)s %(levelname)s %(message)s")
        logger = make_logger(trt)
        for start in (trt.Builder, trt.Runtime):
            try:
                start(logger)
            except TypeError as exc:
                print("raised", type(exc).__name__, exc, file=sys.stderr)
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", "TensorRT wrote to stdout through the project's logger"
    assert proc.stderr.count(f"LOGGING tensorrt ERROR {STUB_MESSAGE}") == 2
    assert proc.stderr.count("raised TypeError pybind11::init(): factory function returned nullptr") == 2
    default = real.run("import tensorrt as trt\ntry:\n    trt.Builder(trt.Logger())\nexcept TypeError:\n    pass\n")
    [line] = default.stdout.splitlines()  # the real default logger: stdout
    assert LOG_LINE.match(line).group(1) == STUB_MESSAGE
    fake = make_tensorrt(real.release.version, FakeCudaRuntime())
    fake.Logger().log(fake.ILogger.Severity.ERROR, STUB_MESSAGE)  # the fake's default logger does the same
    assert LOG_LINE.match(capsys.readouterr().out.strip()).group(1) == STUB_MESSAGE


PROJECT_SCRIPT = """
import json, logging, sys, types
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from fake_tensorrt import FakeCudaRuntime, FakeGpu
from runtime.artifact import Artifact
from runtime.preprocess import PreprocessSpec

out = Path(OUT)
logging.basicConfig(level=logging.WARNING, format="LOGGING %(name)s %(levelname)s %(message)s")
cuda = types.ModuleType("cuda"); cuda.bindings = types.ModuleType("cuda.bindings")
sys.modules.update({"cuda": cuda, "cuda.bindings": cuda.bindings})

from export.trt import BuildOptions, Profile, build_engine
from runtime.backends.trt import TensorRTBackend

graph = helper.make_graph(
    [helper.make_node("Mul", ["image", "w"], ["mask"])], "tiny",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 64, 64])],
    [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 3, 64, 64])],
    [helper.make_tensor("w", TensorProto.FLOAT, [], [1.0])])
onnx.save(helper.make_model(graph), out / "tiny.onnx")
(out / "e.plan").write_bytes(b"not an engine either")
(out / "e.plan.json").write_text(json.dumps({"metadata": Artifact(spec=PreprocessSpec(size=64)).to_onnx_props()}))
results = {}
for driver, runtime in SCENARIOS:  # what cudaDriverGetVersion / cuda-python's cudaRuntimeGetVersion say
    cuda.bindings.runtime = FakeCudaRuntime([FakeGpu("NVIDIA L4", 8, 9)], driver_cuda=driver, runtime_cuda=runtime)
    sys.modules["cuda.bindings.runtime"] = cuda.bindings.runtime  # cuda-python sees a GPU
    found = results[f"{driver}/{runtime}"] = {}
    try:
        build_engine(out / "built.plan", BuildOptions(Profile(size=64), precision="fp32"), fp32_onnx=out / "tiny.onnx")
    except Exception as exc:
        found["build"] = [type(exc).__name__, str(exc)]
    try:
        TensorRTBackend(out / "e.plan")
    except Exception as exc:
        found["backend"] = [type(exc).__name__, str(exc)]
(out / "results.json").write_text(json.dumps(results))
"""
GPU = "NVIDIA L4 (compute capability 8.9)"


def run_project_code(real, out: Path, scenarios: list[tuple[int, int]]) -> dict:
    """The project's builder and backend over the real bindings, one run per (driver, cuda-python)."""
    script = PROJECT_SCRIPT.replace("OUT", repr(str(out))).replace("SCENARIOS", repr(scenarios))
    proc = real.run(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""  # the library's own messages go through logging, never stdout
    return json.loads((out / "results.json").read_text()), proc.stderr


# The project's code imports torch (export.onnx), seconds per run: the oldest and newest 10.x and
# the newest 11.x (a CUDA 13 build) are enough to show it meets each generation's real classes.
PROJECT_RELEASES = [RELEASES[0], RELEASES[4], RELEASES[6]]


@pytest.mark.parametrize("release", PROJECT_RELEASES, ids=str)
def test_project_code_reaches_the_real_builder_and_runtime(release, tmp_path):
    """export.trt and the backend reach the REAL Builder / Runtime, whose TypeError becomes one line.
    On CUDA 13 TensorRT, a CUDA 12.8 driver is caught first, from the real wheel's installed metadata."""
    real = _load(release)
    fitting = (13000, release.cuda_major * 1000 + 90)
    scenarios = [fitting] + ([(12080, 12090)] if release.cuda_major == 13 else [])
    results, stderr = run_project_code(real, tmp_path, scenarios)
    assert results[f"{fitting[0]}/{fitting[1]}"] == {
        "build": ["TensorRTUnavailable",
                  f"TensorRT cannot start a builder on {GPU}: pybind11::init(): factory function returned nullptr"],
        "backend": ["BackendError", f"{tmp_path / 'e.plan'}: TensorRT cannot start on {GPU}: pybind11::init(): "
                    "factory function returned nullptr"],
    }  # fmt: skip
    assert stderr.count(f"LOGGING tensorrt ERROR {STUB_MESSAGE}") == 2  # Builder's and Runtime's, via logging
    assert not (tmp_path / "built.plan").exists()
    if release.cuda_major == 13:
        expected = (f"TensorRT {release.version} is the CUDA 13 build, but this driver supports CUDA 12.8 "
                    "(nvidia-smi's CUDA Version): install the CUDA 12 build instead: pip install '.[tensorrt-cu12]' "
                    "(or update the driver to 580+)")  # fmt: skip
        assert results["12080/12090"] == {
            "build": ["TensorRTUnavailable", f"{expected}; TensorRT builds engines on the GPU that will run them"],
            "backend": ["BackendError", f"{tmp_path / 'e.plan'}: {expected}"],
        }


CUDA_SCRIPT = """
import json
from cuda.bindings import runtime as rt
def plain(result):
    return [int(v) if hasattr(v, "__int__") and not isinstance(v, (bytes, str)) else
            (v.decode() if isinstance(v, bytes) else v) for v in result]
calls = {
    "cudaGetDeviceCount": plain(rt.cudaGetDeviceCount()),
    "cudaGetDeviceProperties": [int(rt.cudaGetDeviceProperties(0)[0]), rt.cudaGetDeviceProperties(0)[1]],
    "cudaMalloc": plain(rt.cudaMalloc(16)), "cudaMallocHost": plain(rt.cudaMallocHost(16)),
    "cudaStreamCreate": plain(rt.cudaStreamCreate()), "cudaDriverGetVersion": plain(rt.cudaDriverGetVersion()),
    "cudaRuntimeGetVersion": plain(rt.cudaRuntimeGetVersion()),
}
codes = {e.name: int(e) for e in rt.cudaError_t}
names = {c: [plain(rt.cudaGetErrorName(rt.cudaError_t(c))), plain(rt.cudaGetErrorString(rt.cudaError_t(c)))]
         for c in CODES}
kinds = {k.name: int(k) for k in rt.cudaMemcpyKind}
print(json.dumps({"calls": calls, "codes": codes, "names": names, "kinds": kinds}))
"""


@pytest.mark.parametrize("version", CUDA_BINDINGS)
def test_fake_cuda_runtime_answers_like_cuda_bindings_without_a_driver(version):
    import os
    import subprocess

    try:
        site = cuda_bindings_site(version)
    except (RegistryUnreachable, NoWheelForThisPython) as exc:
        pytest.skip(str(exc))
    env = {**os.environ, "PYTHONPATH": str(site)}
    script = CUDA_SCRIPT.replace("CODES", repr([int(c) for c in cudaError_t]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout)
    if real["calls"]["cudaDriverGetVersion"][1] != 0:
        pytest.skip("this machine has an NVIDIA driver: the no-driver answers cannot be observed here")
    assert {e.name: int(e) for e in cudaError_t}.items() <= real["codes"].items()
    assert {k.name: int(k) for k in cudaMemcpyKind}.items() <= real["kinds"].items()
    fake = FakeCudaRuntime(driver_cuda=0, runtime_cuda=real["calls"]["cudaRuntimeGetVersion"][1])

    def plain(result):
        return [int(v) if isinstance(v, int) else (v.decode() if isinstance(v, bytes) else v) for v in result]

    for call, answer in real["calls"].items():
        args = {"cudaGetDeviceProperties": (0,), "cudaMalloc": (16,), "cudaMallocHost": (16,)}.get(call, ())
        assert plain(getattr(fake, call)(*args)) == answer, call
    for code, (name, text) in real["names"].items():
        assert [plain(fake.cudaGetErrorName(int(code))), plain(fake.cudaGetErrorString(int(code)))] == [name, text]
