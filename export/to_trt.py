"""Build a TensorRT engine (FP16 by default) from a checkpoint or an ONNX file, then check it.

    python -m export.to_trt runs/u2netp/best.pth                  # -> best.onnx, best.fp16.onnx, best.plan
    python -m export.to_trt u2net.pth -o models/u2net.plan --max-batch 16 --timing-cache trt.cache
    python -m export.to_trt models/u2net.onnx --fp32              # FP32 engine from an existing ONNX

From a checkpoint, ``OUT.onnx`` (FP32) and ``OUT.fp16.onnx`` are exported and verified first
(``export.to_onnx``); from an ``.onnx`` file, the FP16 copy is made beside the plan when needed.
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

from export.errors import ExportError
from export.fp16 import convert_to_fp16
from export.onnx import artifact_of, load_onnx
from export.to_onnx import fp16_path, run_export
from export.trt import BuildOptions, Profile, TensorRTUnavailable, build_engine, weight_precision
from runtime.argtypes import positive_float, positive_int
from runtime.artifact import Artifact
from runtime.logs import setup_logging
from train.model import MODEL_NAMES

log = logging.getLogger(__name__)

FP16_TAG = ".fp16"


def default_output(source: Path) -> Path:
    """``X.pth`` / ``X.onnx`` / ``X.fp16.onnx`` -> ``X.plan`` beside it."""
    stem = source.stem
    if source.suffix.lower() == ".onnx" and stem.endswith(FP16_TAG):
        stem = stem[: -len(FP16_TAG)]
    return source.with_name(stem + ".plan")


@dataclass(frozen=True)
class EngineSources:
    """The ONNX files an engine is built from, and their artifact (read or made once, passed on)."""

    fp32: Path | None
    fp16: Path | None
    artifact: Artifact

    @property
    def written(self) -> list[Path]:
        return [p for p in (self.fp32, self.fp16) if p is not None]


def onnx_from_checkpoint(ckpt: Path, plan: Path, *, model: str, size: int | None, fp16: bool) -> EngineSources:
    """Export and verify ``plan.onnx`` (and ``plan.fp16.onnx``) from a checkpoint."""
    exported = run_export(
        ckpt, plan.with_suffix(".onnx"), model=model, size=size, fp16=fp16, progress=sys.stderr.isatty()
    )
    for file in exported:
        print(f"wrote {file.path} ({file.precision}): {file.comparison.summary()}")
    paths = {f.precision: f.path for f in exported}
    return EngineSources(paths["fp32"], paths.get("fp16"), exported[-1].artifact)


def onnx_from_onnx(source: Path, plan: Path, *, fp16: bool) -> EngineSources:
    """Use an existing ONNX file (read once); make the FP16 copy beside the plan when an FP16 engine needs one."""
    model = load_onnx(source)
    artifact = artifact_of(model, source)
    if weight_precision(model) == "fp16":
        if not fp16:
            raise ExportError(f"{source}: has FP16 weights; an FP32 engine needs the FP32 ONNX file")
        sibling = source.with_name(source.name.replace(f"{FP16_TAG}.onnx", ".onnx"))
        if sibling == source or not sibling.is_file():
            raise ExportError(
                f"{source}: the engine check compares against the FP32 ONNX, expected beside it as {sibling.name}"
            )
        return EngineSources(sibling, source, artifact.replace(precision="fp16"))
    artifact = artifact.replace(precision="fp32")  # what its weights are, whatever an edited label says
    if not fp16:
        return EngineSources(source, None, artifact)
    half = fp16_path(plan.with_suffix(".onnx"))
    convert_to_fp16(source, half, artifact)
    print(f"wrote {half} (fp16, converted from {source.name})")
    return EngineSources(source, half, artifact.replace(precision="fp16"))


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
    parser.add_argument("--fp32", action="store_true", help="build an FP32 engine (from the FP32 ONNX) instead of FP16")
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
    out: Path = args.output or default_output(source)
    if out.suffix.lower() != ".plan":
        parser.error(f"{out}: the engine name must end in .plan (the runtime picks its backend by suffix)")
    precision = "fp32" if args.fp32 else "fp16"
    try:
        if not source.is_file():
            raise ExportError(f"{source}: no such file")
        if source.suffix.lower() == ".onnx":
            sources = onnx_from_onnx(source, out, fp16=precision == "fp16")
        else:
            sources = onnx_from_checkpoint(source, out, model=args.model, size=args.size, fp16=precision == "fp16")
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
                                 artifact=sources.artifact)  # fmt: skip
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
        f"{build['tensorrt_version']} on {build['gpu_name']}, batch {args.min_batch}..{args.max_batch}, "
        f"built in {build['build_seconds']:.1f} s) + {built.plan.name}.json"
    )
    if built.check is not None:
        print(f"  {built.check.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
