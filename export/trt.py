"""ONNX -> TensorRT engine, for TensorRT 10 and 11, as a chain of small steps.

    version -> precision plan -> network (parse ONNX) -> config (workspace, profile, timing cache)
            -> build -> save timing cache -> engine + side file (staged) -> check vs ONNX Runtime -> publish

Precision, by TensorRT generation:
- 11.x: every network is strongly typed and the precision flags are gone: an FP16 engine is built
  from the FP16 ONNX (``export.fp16``), an FP32 engine from the FP32 ONNX.
- 10.12 and newer 10.x: the same strongly typed builds (``BuilderFlag.FP16`` is deprecated there).
- 10.0-10.11: FP16 by ``BuilderFlag.FP16`` on the FP32 ONNX (weak typing); FP32 strongly typed.
- INT8, every generation: strongly typed from the symmetric Q/DQ ONNX (``export.int8``, ``X.int8.onnx``).
  Its QuantizeLinear/DequantizeLinear pairs say which tensors are INT8 (explicit quantization, the
  only kind TensorRT 11 has); TensorRT needs every zero point to be 0, so the u8/s8 CPU form is refused.
Names that one generation removed are only ever touched on the generation that still has them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from export.compare import TOLERANCES, Comparison, OutputMismatch, compare
from export.errors import ExportError
from export.onnx import load_onnx, read_artifact
from export.samples import sample_images
from runtime import atomic
from runtime.artifact import Artifact, TensorRTBuild
from runtime.backends.base import BackendError
from runtime.backends.cuda import CudaUnavailable, GpuInfo, open_cuda
from runtime.backends.gpu_support import check_gpu_stack
from runtime.backends.onnxrt import OnnxRuntimeBackend
from runtime.backends.trt import (
    INSTALL_HINT,
    TensorRTBackend,
    import_tensorrt,
    make_logger,
    tensorrt_version,
)
from runtime.errors import first_line
from runtime.names import int8_path, sibling_onnx, side_file
from runtime.preprocess import preprocess

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "int8")
STRONG_FP16_FROM = (10, 12)  # first TensorRT whose FP16 path is the strongly typed one
CHECK_IMAGES = 4


class TensorRTUnavailable(ExportError):
    """TensorRT, a CUDA package or a GPU is missing here: no engine can be built (exit status 2)."""


@dataclass(frozen=True)
class Profile:
    """One optimization profile: batch range at a fixed square size."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    size: int = 320

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ExportError(
                f"batch profile needs 1 <= min <= opt <= max, got min {self.min_batch}, "
                f"opt {self.opt_batch}, max {self.max_batch}"
            )
        if self.size < 1:
            raise ExportError(f"input size must be positive, got {self.size}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((b, 3, self.size, self.size) for b in (self.min_batch, self.opt_batch, self.max_batch))

    def to_json(self, input_name: str) -> dict[str, Any]:
        lo, mid, hi = self.shapes()
        return {"input": input_name, "min": list(lo), "opt": list(mid), "max": list(hi)}


@dataclass(frozen=True)
class BuildOptions:
    profile: Profile
    precision: str = "fp16"
    workspace_bytes: int = 2 << 30
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}")
        if self.workspace_bytes <= 0:
            raise ExportError(f"workspace must be positive, got {self.workspace_bytes} bytes")


@dataclass(frozen=True)
class PrecisionPlan:
    """Which ONNX feeds the builder, and how its precision is obtained."""

    precision: str
    onnx: Path
    strongly_typed: bool
    fp16_flag: bool  # BuilderFlag.FP16: TensorRT 10.0-10.11 only


@dataclass
class BuiltEngine:
    plan: Path
    artifact: Artifact  # what the side file says: the ONNX's artifact, the engine's precision, build facts
    check: Comparison | None = None

    @property
    def build(self) -> TensorRTBuild:
        return self.artifact.tensorrt or TensorRTBuild()


# -- step 1: what is installed ---------------------------------------------------------------


def require_tensorrt() -> ModuleType:
    trt = import_tensorrt()
    if trt is None:
        raise TensorRTUnavailable(f"TensorRT is not installed ({INSTALL_HINT})")
    major, _ = tensorrt_version(trt)
    if major < 10:
        raise ExportError(f"TensorRT {trt.__version__} is too old: this project needs TensorRT 10 or 11")
    return trt


def require_gpu(trt: ModuleType) -> GpuInfo:
    try:
        return check_gpu_stack(trt, open_cuda())
    except CudaUnavailable as exc:
        raise TensorRTUnavailable(f"{exc}; TensorRT builds engines on the GPU that will run them") from None


# -- step 2: precision plan ------------------------------------------------------------------


def onnx_weight_precision(path: Path) -> str:
    """What a strongly typed build of the file runs in: int8 (Q/DQ), fp16 or fp32."""
    return weight_precision(load_onnx(path))


def weight_precision(model: Any) -> str:
    import onnx

    if any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        return "int8"
    types = {init.data_type for init in model.graph.initializer}
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


def asymmetric_zero_points(model: Any) -> list[str]:
    """Names of Q/DQ zero points that are unsigned or not 0: TensorRT reads symmetric INT8 only."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    names = {node.input[2] for node in model.graph.node
             if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2}  # fmt: skip
    bad = []
    for name in sorted(names):
        value = numpy_helper.to_array(inits[name]) if name in inits else None
        if value is None or value.dtype.kind == "u" or value.any():
            bad.append(name)
    return bad


_SOURCE_HINTS = {
    "fp16": "make one with python -m export.to_onnx --fp16",
    "fp32": "use the FP32 file",
    "int8": "make the symmetric X.int8.onnx with python -m export.to_onnx --int8",
}


def plan_precision(
    version: tuple[int, int], precision: str, fp32_onnx: Path | None, fp16_onnx: Path | None,
    verified: bool = False, int8_onnx: Path | None = None,
) -> PrecisionPlan:  # fmt: skip
    """``verified``: the files are known to hold the weights their names say (``export.to_onnx`` made them)."""
    strongly_typed = precision != "fp16" or version >= STRONG_FP16_FROM
    from_fp16 = precision == "fp16" and strongly_typed
    onnx_path = {"int8": int8_onnx, "fp16": fp16_onnx if from_fp16 else fp32_onnx}.get(precision, fp32_onnx)
    if onnx_path is None:
        kind = "INT8 Q/DQ" if precision == "int8" else "FP16" if from_fp16 else "FP32"
        raise ExportError(
            f"a {precision} engine on TensorRT {version[0]}.{version[1]} is built from an {kind} ONNX file, "
            "and none was given"
        )
    if strongly_typed and not verified:
        # A strongly typed network runs in the ONNX's own types: FP32 weights would give an FP32
        # engine labelled FP16 (or the reverse). Refuse rather than mislabel.
        model = load_onnx(onnx_path)
        found = weight_precision(model)
        if found != precision:
            described = "Q/DQ (INT8)" if found == "int8" else f"{found.upper()} weights"
            raise ExportError(
                f"{onnx_path}: has {described}, but a strongly typed {precision.upper()} engine "
                f"needs an {precision.upper()} ONNX ({_SOURCE_HINTS[precision]})"
            )
        if precision == "int8":
            require_symmetric(model, onnx_path)
    return PrecisionPlan(precision, onnx_path, strongly_typed, fp16_flag=precision == "fp16" and not strongly_typed)


def require_symmetric(model: Any, path: Path) -> None:
    """One line when a Q/DQ file is the u8/s8 CPU form: TensorRT's parser takes zero points of 0 only."""
    if asymmetric_zero_points(model):
        symmetric = int8_path(sibling_onnx(path), "symmetric").name
        raise ExportError(
            f"{path}: is the u8/s8 (asymmetric) INT8 form for CPU engines; TensorRT reads symmetric "
            f"Q/DQ only (zero points 0): use {symmetric} (python -m export.to_onnx --int8)"
        )


# -- step 3: network -------------------------------------------------------------------------


def network_flags(trt: ModuleType, version: tuple[int, int], strongly_typed: bool) -> int:
    if version[0] >= 11:
        return 0  # always strongly typed; the flag is deprecated there
    if strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # explicit batch is the default since 10; EXPLICIT_BATCH is never needed


def parse_network(trt: ModuleType, builder: Any, logger: Any, onnx_path: Path, flags: int) -> tuple[Any, Any]:
    """A network holding the ONNX graph (the parser must outlive the build, so it is returned too)."""
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = first_line(errors[0] if errors else "")
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {first}{more}")
    return network, parser


def network_input(network: Any, onnx_path: Path, profile: Profile) -> str:
    """The one image input's name, after checking its fixed dims agree with the profile."""
    if network.num_inputs != 1:
        raise ExportError(f"{onnx_path}: expected one input, found {network.num_inputs}")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if len(shape) != 4 or shape[1] != 3:
        raise ExportError(f"{onnx_path}: input {tensor.name} has shape {shape}, expected (batch, 3, H, W)")
    for name, dim, lo, hi in (("batch", shape[0], profile.min_batch, profile.max_batch),
                              ("height", shape[2], profile.size, profile.size),
                              ("width", shape[3], profile.size, profile.size)):  # fmt: skip
        if dim >= 0 and not lo == dim == hi:
            raise ExportError(f"{onnx_path}: input {name} is fixed at {dim}, but the profile needs {lo}..{hi}")
    return tensor.name


# -- step 4: builder config ------------------------------------------------------------------


def make_config(trt: ModuleType, builder: Any, plan: PrecisionPlan, options: BuildOptions, input_name: str) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    if plan.fp16_flag:  # TensorRT 10.0-10.11 only: plan_precision never asks for it elsewhere
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16: the FP16 engine may be slower than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # real FP32, so the engine matches ONNX Runtime to rounding
    profile = builder.create_optimization_profile()
    try:
        profile.set_shape(input_name, *options.profile.shapes())
    except RuntimeError as exc:  # the binding raises on shapes it finds inconsistent
        raise ExportError(f"TensorRT rejected the optimization profile {options.profile.shapes()}: {exc}") from None
    if config.add_optimization_profile(profile) < 0:
        raise ExportError(f"TensorRT rejected the optimization profile {options.profile.shapes()}")
    return config


def attach_timing_cache(config: Any, path: Path | None) -> int:
    """Load the cache file when it exists (else start empty) and attach it; returns the bytes reused.

    The cache only saves build time: an unreadable, corrupt or foreign file (other TensorRT version
    or GPU) is ignored with a warning and replaced after the build, never a failed build.
    """
    blob = b""
    if path is not None and path.exists():
        try:
            blob = path.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot read the timing cache (%s); building without it", path, exc.strerror or exc)
    if blob:
        if _use_timing_cache(config, blob):
            log.info("%s: reusing timing cache (%d bytes)", path, len(blob))
            return len(blob)
        log.warning("%s: timing cache is unusable here (corrupt, or from another TensorRT/GPU); starting afresh", path)
    if not _use_timing_cache(config, b""):
        log.warning("TensorRT could not create an empty timing cache; building without one")
    return 0


def _use_timing_cache(config: Any, blob: bytes) -> bool:
    """Create a cache from ``blob`` and attach it; False (TensorRT logged why) when refused."""
    try:
        cache = config.create_timing_cache(blob)  # None when TensorRT cannot read the bytes
        return cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
    except (TypeError, ValueError, RuntimeError) as exc:  # the binding's own errors
        log.debug("timing cache refused: %s", exc)
        return False


def save_timing_cache(config: Any, path: Path) -> int:
    """Write the (grown) cache; a failure is a warning: the engine itself is fine."""
    cache = config.get_timing_cache()
    if cache is None:
        return 0
    data = bytes(memoryview(cache.serialize()))  # IHostMemory: a buffer, no len()
    try:
        atomic.write_bytes(path, data)
    except OSError as exc:
        log.warning("%s: cannot save the timing cache (%s)", path, exc.strerror or exc)
        return 0
    return len(data)


# -- step 5: build ---------------------------------------------------------------------------


def build_serialized(builder: Any, network: Any, config: Any, onnx_path: Path) -> bytes:
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")
    log.info("built in %.1f s", time.perf_counter() - started)
    return bytes(memoryview(serialized))


def build_facts(
    trt: ModuleType, gpu: GpuInfo, plan: PrecisionPlan, options: BuildOptions, input_name: str, seconds: float
) -> TensorRTBuild:
    """What only the engine knows: the ``tensorrt`` part of its artifact."""
    return TensorRTBuild(
        strongly_typed=plan.strongly_typed,
        profile=options.profile.to_json(input_name),
        workspace_bytes=options.workspace_bytes,
        onnx=plan.onnx.name,
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        build_seconds=round(seconds, 2),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def engine_artifact(source: Artifact, precision: str, size: int, build: TensorRTBuild) -> Artifact:
    """The ONNX file's artifact with what the engine changes: precision, its fixed size, the build facts."""
    return source.replace(precision=precision, spec=replace(source.spec, size=size), dynamic_hw=False, tensorrt=build)


def build_engine(
    out: Path, options: BuildOptions, *, fp32_onnx: Path | None, fp16_onnx: Path | None = None, check: bool = True,
    artifact: Artifact | None = None, int8_onnx: Path | None = None,
) -> BuiltEngine:  # fmt: skip
    """Build ``out`` (+ ``out.json``) from the ONNX files; check it against ONNX Runtime unless told not to.

    ``artifact``: the ONNX files' own, when the caller has it (then the files are trusted to hold the
    weights their names say and are not read for it); otherwise it is read from the file built from.

    Both files are written and checked in a private folder next to ``out``, then renamed into place:
    a failed build or check leaves nothing behind. Raises TensorRTUnavailable when TensorRT, CUDA
    or a GPU is missing, ExportError (one line) for everything else.
    """
    trt = require_tensorrt()
    gpu = require_gpu(trt)
    version = tensorrt_version(trt)
    plan = plan_precision(version, options.precision, fp32_onnx, fp16_onnx, verified=artifact is not None,
                          int8_onnx=int8_onnx)
    log.info("TensorRT %s on %s: %s engine from %s (%s)", trt.__version__, gpu, plan.precision, plan.onnx.name,
             "strongly typed" if plan.strongly_typed else "BuilderFlag.FP16")  # fmt: skip
    logger = make_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # the binding raises TypeError when it cannot initialise CUDA
        raise TensorRTUnavailable(f"TensorRT cannot start a builder on {gpu}: {exc}") from None
    network, _parser = parse_network(trt, builder, logger, plan.onnx, network_flags(trt, version, plan.strongly_typed))
    input_name = network_input(network, plan.onnx, options.profile)
    config = make_config(trt, builder, plan, options, input_name)
    attach_timing_cache(config, options.timing_cache)
    started = time.perf_counter()
    serialized = build_serialized(builder, network, config, plan.onnx)
    seconds = time.perf_counter() - started
    if options.timing_cache is not None:
        saved = save_timing_cache(config, options.timing_cache)
        log.info("%s: timing cache saved (%d bytes)", options.timing_cache, saved)
    source = artifact or read_artifact(plan.onnx)
    built = engine_artifact(source, plan.precision, options.profile.size,
                            build_facts(trt, gpu, plan, options, input_name, seconds))  # fmt: skip
    try:
        with atomic.staged_dir(out.parent) as stage:
            return _publish_engine(stage, out, serialized, built, fp32_onnx, check)
    except OSError as exc:
        raise ExportError(f"{out.parent}: cannot write: {exc.strerror or exc}") from None


def _publish_engine(
    stage: Path, out: Path, serialized: Any, artifact: Artifact, fp32_onnx: Path | None, check: bool
) -> BuiltEngine:
    """Write engine + side file in ``stage``, check them, then rename both into place."""
    staged = stage / out.name
    staged.write_bytes(serialized)
    side_file(staged).write_text(json.dumps(artifact.to_side_file(), indent=2) + "\n", encoding="utf-8")
    result = BuiltEngine(staged, artifact)
    if check:
        if fp32_onnx is None:
            raise ExportError(f"{out}: checking the engine needs the FP32 ONNX file it was made from")
        result.check = check_engine(staged, fp32_onnx, artifact.precision)
        if not result.check.ok:
            raise ExportError(f"{out}: engine check failed, nothing was written: {result.check.summary()}")
    atomic.publish([(side_file(staged), side_file(out)), (staged, out)])  # the engine last: never without its side file
    result.plan = out
    return result


# -- step 6: check against ONNX Runtime FP32 -------------------------------------------------


def check_batches(n_images: int, min_batch: int, max_batch: int) -> list[list[int]]:
    """Image indices per run: every image at the largest allowed batch, plus a batch of one when allowed.

    Runs smaller than the profile's minimum are filled up by repeating images.
    """
    order = list(range(n_images))
    runs = [order[i : i + max_batch] for i in range(0, n_images, max_batch)]
    if min_batch == 1 and max_batch > 1 and all(len(r) > 1 for r in runs):
        runs.append([0])
    return [(r * min_batch)[: max(len(r), min_batch)] if len(r) < min_batch else r for r in runs]


def check_engine(plan: Path, fp32_onnx: Path, precision: str, n_images: int = CHECK_IMAGES) -> Comparison:
    """Run the engine and ONNX Runtime (FP32, CPU) on the same preprocessed images and compare."""
    try:
        with TensorRTBackend(plan) as engine, OnnxRuntimeBackend(fp32_onnx, provider="cpu") as reference:
            images, source = sample_images(n_images)
            batch = preprocess(images, engine.spec)
            runs = check_batches(len(images), engine.min_batch, engine.max_batch)
            result = compare((reference, engine), [batch[indices] for indices in runs], TOLERANCES[precision],
                             labels=("ONNX Runtime FP32", f"TensorRT {precision} engine"), precision=precision,
                             inputs=f"{len(images)} {source}")  # fmt: skip
    except (BackendError, OutputMismatch) as exc:
        raise ExportError(str(exc)) from None
    log.info("%s", result.summary())
    return result
