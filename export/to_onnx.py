"""Export a U²-Net / U²-NetP checkpoint to ONNX (FP32, optionally FP16), verified against PyTorch.

    python -m export.to_onnx runs/u2netp/best.pth                    # -> runs/u2netp/best.onnx
    python -m export.to_onnx u2netp.pth -o models/u2netp.onnx --fp16 # + models/u2netp.fp16.onnx
    python -m export.to_onnx u2net.pth --dynamic-hw --all-outputs    # any H×W, seven outputs
    python -m export.to_onnx u2netp.pth --int8 --calib photos/        # + u2netp.int8.onnx, u2netp.int8-ort.onnx

Accepts the official raw state dicts (``u2net.pth``, ``u2netp.pth``) and this project's training
checkpoints. Every file is checked with ONNX Runtime against PyTorch before it appears at its
destination; on any failure nothing is written and the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from export import int8 as int8_export
from export.errors import ExportError
from export.fp16 import convert_to_fp16
from export.onnx import MAX_OPSET, MIN_OPSET, check_options, export_onnx, onnx_artifact, read_artifact
from export.verify import Comparison, ParityCheck
from runtime import atomic
from runtime.argtypes import positive_int
from runtime.artifact import Artifact
from runtime.logs import setup_logging
from runtime.names import fp16_path, int8_path
from runtime.preprocess import PreprocessSpec
from train.checkpoint import CheckpointError, load_checkpoint
from train.model import MODEL_NAMES

log = logging.getLogger(__name__)

DEFAULT_SIZE = 320


@dataclass(frozen=True)
class ExportedFile:
    """One verified file at its final path, with what it is and how it compared with PyTorch."""

    path: Path
    artifact: Artifact
    comparison: Comparison

    @property
    def precision(self) -> str:
        return self.artifact.precision

    @property
    def variant(self) -> str:
        return self.artifact.variant

    @property
    def input_shape(self) -> str:
        """e.g. "(N,3,320,320)" or "(N,3,H,W)"."""
        size = self.artifact.spec.size
        return f"(N,3,{'H,W' if self.artifact.dynamic_hw else f'{size},{size}'})"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _missing_ancestor(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None if it exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A private folder next to the destination, where files are built and verified before being renamed
    into place. It is always removed, and so are the folders created for an export that failed."""
    created = _missing_ancestor(out.parent)
    try:
        staging = atomic.staged_dir(out.parent)
        stage = staging.__enter__()
    except OSError as exc:
        raise ExportError(f"{out.parent}: cannot write the output here: {exc.strerror or exc}") from None
    ok = False
    try:
        yield stage
        ok = True
    except OSError as exc:
        raise ExportError(f"{out.parent}: cannot write: {exc.strerror or exc}") from None
    except ExportError as exc:  # name the files the user asked for, not their staging copies
        raise ExportError(str(exc).replace(str(stage), str(out.parent))) from None
    finally:
        staging.__exit__(None, None, None)
        if not ok and created is not None:
            for folder in (out.parent, *out.parent.parents):
                try:
                    folder.rmdir()  # only while empty: never anything the user had
                except OSError:
                    break
                if folder == created:
                    break


def _publish(staged: list[ExportedFile], folder: Path) -> list[ExportedFile]:
    """Rename verified files into place, all or none."""
    atomic.publish([(f.path, folder / f.path.name) for f in staged])
    return [replace(f, path=folder / f.path.name) for f in staged]


def run_export(
    ckpt: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model: str = "auto",
    size: int | None = None,
    opset: int = 17,
    dynamic_hw: bool = False,
    fp16: bool = False,
    all_outputs: bool = False,
    int8: bool = False,
    calib: str | os.PathLike | None = None,
    calib_count: int = int8_export.DEFAULT_CALIB_COUNT,
    calib_method: str = int8_export.DEFAULT_METHOD,
    progress: bool = False,
) -> list[ExportedFile]:
    """``export_checkpoint`` that also returns each file's ``Artifact`` and verification numbers.

    ``int8``: also write ``X.int8.onnx`` (symmetric s8/s8: TensorRT, OpenVINO) and ``X.int8-ort.onnx``
    (u8/s8: ONNX Runtime), calibrated on ``calib_count`` photos of ``calib`` (default: the SOD photos
    when present, else synthetic images) with ``calib_method``.
    """
    ckpt = Path(ckpt)
    out = Path(out) if out is not None else ckpt.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output name must end in .onnx (the runtime picks its backend by suffix)")
    steps = ["load checkpoint", "export FP32", "verify FP32"] + (["convert FP16", "verify FP16"] if fp16 else [])
    steps += [f"{what} INT8 {form}" for form in int8_export.FORMS for what in ("calibrate", "verify")] if int8 else []
    with tqdm(total=len(steps), desc="export", unit="step", disable=None if progress else True, leave=False) as bar:

        def step(index: int) -> None:
            if index:
                bar.update()
            bar.set_postfix_str(steps[index])
            log.info("%s", steps[index])

        step(0)
        calib_set = int8_export.calibration_set(calib, calib_count, calib_method) if int8 else None
        try:
            loaded = load_checkpoint(ckpt, model=model)
        except CheckpointError as exc:
            raise ExportError(str(exc)) from None
        spec = loaded.spec or PreprocessSpec(size=DEFAULT_SIZE)  # official raw state dicts carry none
        spec = replace(spec, size=size) if size is not None else spec
        check_options(out, opset, spec.size)
        artifact = onnx_artifact(loaded.variant, spec, opset=opset, dynamic_hw=dynamic_hw, all_outputs=all_outputs,
                                 source=ckpt, source_sha256=file_sha256(ckpt))  # fmt: skip
        parity = ParityCheck(loaded.model, spec=spec)
        with _staging(out) as stage:
            step(1)
            fp32 = export_onnx(loaded.model, stage / out.name, artifact)
            step(2)
            staged = [ExportedFile(fp32, artifact, _verify(parity, fp32, "fp32"))]
            if fp16:
                step(3)
                half_artifact = artifact.replace(precision="fp16")
                half = convert_to_fp16(fp32, stage / fp16_path(out).name, half_artifact)
                step(4)
                staged.append(ExportedFile(half, half_artifact, _verify(parity, half, "fp16")))
            if calib_set is not None:
                staged += _int8_files(fp32, stage / out.name, calib_set, parity, lambda name: step(steps.index(name)))
            bar.update()
            return _publish(staged, out.parent)


def _int8_files(
    fp32: Path, out: Path, calib_set: tuple[list, int8_export.Calibration], parity: ParityCheck,
    step: Callable[[str], None],
) -> list[ExportedFile]:  # fmt: skip
    """Both INT8 forms of the staged ``fp32`` file, from one calibration pass, each verified."""
    images, calibration = calib_set
    files = []
    for form in int8_export.FORMS:
        step(f"calibrate INT8 {form}")
        quant = int8_export.convert_to_int8(fp32, int8_path(out, form), images, form=form,
                                            calibration=calibration, cache=out.parent / "ranges.json")  # fmt: skip
        step(f"verify INT8 {form}")
        files.append(ExportedFile(quant, read_artifact(quant), _verify(parity, quant, "int8")))
    return files


def _verify(parity: ParityCheck, staged: Path, precision: str) -> Comparison:
    """Verify a staged file; on failure say that nothing reached the destination."""
    try:
        return parity.verify(staged, precision)
    except ExportError as exc:
        raise ExportError(f"{exc}; nothing was written") from None


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike | None = None, **options: Any) -> list[Path]:
    """Write ``out`` (default: the checkpoint's name with ``.onnx``) and, with ``fp16=True``, ``X.fp16.onnx``.

    ``options`` are ``run_export``'s (model, size, opset, dynamic_hw, fp16, all_outputs). Each file is
    verified with ONNX Runtime against PyTorch before it is moved into place. Raises ``ExportError``
    (one line) on any problem; then no file is left behind.
    """
    return [artifact.path for artifact in run_export(ckpt, out, **options)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.to_onnx",
        description="Export a U²-Net/U²-NetP checkpoint to ONNX and verify it with ONNX Runtime against PyTorch.",
        epilog="Input 'image' float32 (N,3,H,W), normalised as recorded in the file's metadata; "
        "output 'mask' float32 (N,1,H,W) fused probabilities. The batch is always dynamic.",
    )
    parser.add_argument("checkpoint", type=Path, help="official u2net.pth/u2netp.pth or a training checkpoint")
    parser.add_argument("-o", "--output", type=Path, help="output .onnx (default: next to the checkpoint)")
    parser.add_argument("--model", choices=("auto", *MODEL_NAMES), default="auto",
                        help="architecture; auto infers it from the weights (default: auto)")
    parser.add_argument("--size", type=positive_int,
                        help=f"input height and width (default: the checkpoint's input_size, else {DEFAULT_SIZE})")
    parser.add_argument("--opset", type=positive_int, default=17,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: 17)")
    parser.add_argument("--dynamic-hw", action="store_true", help="make height and width dynamic too")
    parser.add_argument("--fp16", action="store_true",
                        help="also write X.fp16.onnx: FP16 weights and compute, float32 input/output "
                        "(for ONNX Runtime and strongly typed TensorRT)")
    parser.add_argument("--int8", action="store_true",
                        help="also write X.int8.onnx (symmetric s8/s8 Q/DQ: TensorRT, OpenVINO) and X.int8-ort.onnx "
                        "(u8/s8 Q/DQ: fast in ONNX Runtime), calibrated on photos through the runtime's preprocessing")
    parser.add_argument("--calib", type=Path, metavar="DIR",
                        help="calibration photos for --int8, searched recursively (default: ../shared/data/SOD "
                        "when present, else synthetic images)")
    parser.add_argument("--calib-count", type=positive_int, default=int8_export.DEFAULT_CALIB_COUNT, metavar="N",
                        help="photos used for calibration, spread over the folder (default: %(default)s)")
    parser.add_argument("--calib-method", choices=int8_export.METHODS, default=int8_export.DEFAULT_METHOD,
                        help="how activation ranges are chosen (default: %(default)s, chosen by measured accuracy)")
    parser.add_argument("--all-outputs", action="store_true",
                        help="add the six side maps side1..side6 (probabilities) after 'mask'")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(default=logging.INFO if args.verbose else logging.WARNING)
    try:
        with logging_redirect_tqdm():  # log lines print above the progress bar, not through it
            artifacts = run_export(
                args.checkpoint, args.output, model=args.model, size=args.size, opset=args.opset,
                dynamic_hw=args.dynamic_hw, fp16=args.fp16, all_outputs=args.all_outputs, int8=args.int8,
                calib=args.calib, calib_count=args.calib_count, calib_method=args.calib_method, progress=True,
            )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for artifact in artifacts:
        print(
            f"wrote {artifact.path} ({artifact.size_bytes / 1e6:.1f} MB): {artifact.variant} {artifact.precision}, "
            f"input 'image' {artifact.input_shape}"
        )
        print(f"  {artifact.comparison.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
