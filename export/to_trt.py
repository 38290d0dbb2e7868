"""Build a TensorRT engine (FP16 by default) from a checkpoint or an ONNX file, then check it.

    python -m export.to_trt runs/u2netp/best.pth                  # -> best.onnx, best.fp16.onnx, best.plan
    python -m export.to_trt u2net.pth -o models/u2net.plan --max-batch 16 --timing-cache trt.cache
    python -m export.to_trt models/u2net.onnx --precision fp32    # FP32 engine from an existing ONNX
    python -m export.to_trt u2net.pth --precision int8 --calib photos/   # INT8 from calibrated Q/DQ

From a checkpoint, ``OUT.onnx`` (FP32) and ``OUT.fp16.onnx`` (or, for INT8, the calibrated
``OUT.int8.onnx`` and ``OUT.int8-ort.onnx``) are exported and verified first (``export.to_onnx``); from
an FP32 ``.onnx`` file the FP16 copy or the symmetric INT8 file is made beside the plan when needed,
and an ``X.int8.onnx`` given directly is built as it is.
The engine is written with ``OUT.plan.json`` (preprocessing metadata, precision, profile, TensorRT
version, GPU) and checked against ONNX Runtime FP32 on a few images before it is kept.

Exit status: 0 built and checked; 1 failed (nothing half-written is left); 2 TensorRT, CUDA or a
GPU is missing here (the ONNX files are still written, ready for a machine that has them).
Engines are specific to a TensorRT version and a GPU model: build on the machine that runs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from export import int8 as int8_export
from export.errors import ExportError
from export.fp16 import convert_to_fp16
from export.onnx import artifact_of, load_onnx, read_artifact
from export.to_onnx import run_export
from export.trt import (
    PRECISIONS,
    BuildOptions,
    Profile,
    TensorRTUnavailable,
    build_engine,
    require_symmetric,
    weight_precision,
)
from runtime.argtypes import positive_float, positive_int
from runtime.artifact import Artifact
from runtime.logs import setup_logging
from runtime.names import fp16_path, int8_path, plan_path, sibling_onnx, side_file
from train.model import MODEL_NAMES

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EngineSources:
    """The ONNX files an engine is built from, and their artifact (read or made once, passed on)."""

    fp32: Path | None
    fp16: Path | None
    artifact: Artifact
    int8: Path | None = None  # the symmetric Q/DQ file

    @property
    def written(self) -> list[Path]:
        return [p for p in (self.fp32, self.fp16, self.int8) if p is not None]


@dataclass(frozen=True)
class Calibrate:
    """Where the INT8 calibration photos come from (``export.int8.calibration_set``)."""

    folder: Path | None = None
    count: int = int8_export.DEFAULT_CALIB_COUNT


def onnx_from_checkpoint(ckpt: Path, plan: Path, *, model: str, size: int | None, precision: str,
                         calibrate: Calibrate = Calibrate()) -> EngineSources:  # fmt: skip
    """Export and verify ``plan.onnx`` and the file the engine is built from (FP16 or INT8) from a checkpoint."""
    exported = run_export(
        ckpt, plan.with_suffix(".onnx"), model=model, size=size, fp16=precision == "fp16",
        int8=precision == "int8", calib=calibrate.folder, calib_count=calibrate.count, progress=sys.stderr.isatty(),
    )  # fmt: skip
    for file in exported:
        print(f"wrote {file.path} ({file.precision}): {file.comparison.summary()}")
    fp32 = exported[0]
    half = next((f for f in exported if f.precision == "fp16"), None)
    symmetric = next((f for f in exported if f.path == int8_path(fp32.path, "symmetric")), None)
    chosen = {"fp16": half, "int8": symmetric}.get(precision) or fp32
    return EngineSources(fp32.path, half.path if half else None, chosen.artifact,
                         int8=symmetric.path if symmetric else None)  # fmt: skip


def onnx_from_onnx(source: Path, plan: Path, *, precision: str, calibrate: Calibrate = Calibrate()) -> EngineSources:
    """Use an existing ONNX file (read once); make the FP16 copy or the symmetric INT8 file beside the plan
    when the engine needs one."""
    model = load_onnx(source)
    artifact = artifact_of(model, source)
    found = weight_precision(model)
    if found != "fp32":
        return _derived_source(source, model, artifact, found, precision)
    artifact = artifact.replace(precision="fp32")  # what its weights are, whatever an edited label says
    if precision == "fp32":
        return EngineSources(source, None, artifact)
    if precision == "int8":
        quant = int8_path(plan.with_suffix(".onnx"), "symmetric")
        images, calibration = int8_export.calibration_set(calibrate.folder, calibrate.count, int8_export.DEFAULT_METHOD)
        int8_export.convert_to_int8(source, quant, images, form="symmetric", calibration=calibration)
        print(f"wrote {quant} (int8 symmetric Q/DQ, calibrated on {len(images)} images from {calibration.source})")
        return EngineSources(source, None, read_artifact(quant), int8=quant)
    half = fp16_path(plan.with_suffix(".onnx"))
    convert_to_fp16(source, half, artifact)
    print(f"wrote {half} (fp16, converted from {source.name})")
    return EngineSources(source, half, artifact.replace(precision="fp16"))


def _derived_source(source: Path, model: object, artifact: Artifact, found: str, precision: str) -> EngineSources:
    """An FP16 or INT8 file given directly: built as it is, checked against its FP32 sibling."""
    if found != precision:
        what = "FP16 weights" if found == "fp16" else "INT8 Q/DQ nodes"
        raise ExportError(f"{source}: has {what}; a {precision} engine needs the FP32 ONNX file")
    if found == "int8":
        require_symmetric(model, source)
    sibling = sibling_onnx(source)
    if not sibling.is_file():
        raise ExportError(
            f"{source}: the engine check compares against the FP32 ONNX, expected beside it as {sibling.name}"
        )
    if found == "int8":
        return EngineSources(sibling, None, artifact, int8=source)
    return EngineSources(sibling, source, artifact.replace(precision="fp16"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.to_trt",
        description="Build a TensorRT 10/11 engine (FP16 by default) from a U²-Net checkpoint or ONNX file, "
        "and check it against ONNX Runtime FP32.",
        epilog="Needs TensorRT, cuda-python (or pycuda) and an NVIDIA GPU; without them the ONNX files are "
        "still written and the exit status is 2. Engines only run on the TensorRT version and GPU model "
        "that built them.",
    )
    parser.add_argument("source", type=Path, help="checkpoint (.pth) or ONNX file (.onnx)")
    parser.add_argument("-o", "--output", type=Path, help="engine file, .plan (default: SOURCE with .plan)")
    parser.add_argument(
        "--min-batch", type=positive_int, default=1, help="smallest batch the engine runs (default: 1)"
    )
    parser.add_argument("--opt-batch", type=positive_int, default=1, help="batch TensorRT tunes for (default: 1)")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="largest batch the engine runs (default: 8)")
    parser.add_argument(
        "--size", type=positive_int, help="input height and width (default: the checkpoint's or ONNX file's own)"
    )
    parser.add_argument(
        "--workspace-gb",
        type=positive_float,
        default=2.0,
        help="GPU memory TensorRT may use for tactics while building, in GiB (default: 2)",
    )
    parser.add_argument(
        "--timing-cache",
        type=Path,
        metavar="FILE",
        help="TensorRT timing cache: loaded if it exists, saved after the build "
        "(makes later builds on the same GPU and TensorRT faster)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="engine precision (default: fp16); int8 builds from the symmetric Q/DQ ONNX, "
                        "calibrated on --calib photos when it has to be made")  # fmt: skip
    parser.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    parser.add_argument("--calib", type=Path, metavar="DIR",
                        help="calibration photos for --precision int8, searched recursively (default: "
                        "../shared/data/SOD when present, else synthetic images)")  # fmt: skip
    parser.add_argument("--calib-count", type=positive_int, default=int8_export.DEFAULT_CALIB_COUNT, metavar="N",
                        help=f"calibration images for --precision int8 (default: {int8_export.DEFAULT_CALIB_COUNT})")
    parser.add_argument(
        "--model",
        choices=("auto", *MODEL_NAMES),
        default="auto",
        help="architecture of a checkpoint; auto infers it from the weights (default: auto)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(default=logging.INFO if args.verbose else logging.WARNING)
    if not args.min_batch <= args.opt_batch <= args.max_batch:
        parser.error(
            f"need --min-batch <= --opt-batch <= --max-batch, got {args.min_batch}, {args.opt_batch}, {args.max_batch}"
        )
    source: Path = args.source
    out: Path = args.output or plan_path(source)
    if out.suffix.lower() != ".plan":
        parser.error(f"{out}: the engine name must end in .plan (the runtime picks its backend by suffix)")
    if args.fp32 and args.precision not in (None, "fp32"):
        parser.error(f"--fp32 contradicts --precision {args.precision}")
    precision = "fp32" if args.fp32 else args.precision or "fp16"
    if precision != "int8" and (args.calib is not None or args.calib_count != int8_export.DEFAULT_CALIB_COUNT):
        parser.error("--calib and --calib-count are for --precision int8")
    calibrate = Calibrate(args.calib, args.calib_count)
    try:
        if not source.is_file():
            raise ExportError(f"{source}: no such file")
        if source.suffix.lower() == ".onnx":
            sources = onnx_from_onnx(source, out, precision=precision, calibrate=calibrate)
        else:
            sources = onnx_from_checkpoint(source, out, model=args.model, size=args.size, precision=precision,
                                           calibrate=calibrate)  # fmt: skip
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        options = BuildOptions(
            profile=Profile(args.min_batch, args.opt_batch, args.max_batch, args.size or sources.artifact.spec.size),
            precision=precision,
            workspace_bytes=int(args.workspace_gb * (1 << 30)),
            timing_cache=args.timing_cache,
        )
        with tqdm(total=1, desc=f"TensorRT {precision} engine", unit="engine", leave=False, disable=None) as bar:
            built = build_engine(out, options, fp32_onnx=sources.fp32, fp16_onnx=sources.fp16,
                                 int8_onnx=sources.int8, artifact=sources.artifact)  # fmt: skip
            bar.update()
    except TensorRTUnavailable as exc:
        print(f"{out}: not built: {exc}; the ONNX files are ready: {', '.join(map(str, sources.written))}",
              file=sys.stderr)  # fmt: skip
        return 2
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    build = built.build
    print(
        f"wrote {built.plan} ({built.plan.stat().st_size / 1e6:.1f} MB, {built.artifact.precision}, TensorRT "
        f"{build.tensorrt_version} on {build.gpu_name}, batch {args.min_batch}..{args.max_batch}, "
        f"built in {build.build_seconds or 0:.1f} s) + {side_file(built.plan).name}"
    )
    if built.check is not None:
        print(f"  {built.check.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
