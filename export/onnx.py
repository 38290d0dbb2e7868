"""PyTorch U²-Net -> FP32 ONNX with its ``Artifact`` (preprocessing spec, variant...) in ``metadata_props``.

Uses the TorchScript exporter (``dynamo=False``): it needs no onnxscript, traces U²-NetP in
seconds and writes every bilinear upsample as an opset-11+ ``Resize`` whose output size comes
from the skip tensor's runtime shape, so dynamic batch and dynamic H/W really are dynamic.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.errors import ExportError
from runtime import atomic
from runtime.artifact import PRODUCER, Artifact, project_version
from runtime.errors import BackendError, first_line
from runtime.preprocess import PreprocessSpec
from train.model import U2Net

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
SIDE_NAMES = tuple(f"side{i}" for i in range(1, 7))
MIN_OPSET = 11  # opset 10's Upsample/Resize cannot express align_corners=False (half-pixel) sampling
MAX_OPSET = 20  # the newest opset torch's TorchScript exporter supports
# Smallest traced size: five ceil-mode poolings must not reach 1 px, or the trace would drop resizes
# that larger inputs need (the model skips a resize whose input already has the target size).
MIN_SIZE = 32


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """The model (external weight files are not loaded); one ExportError line when it is not ONNX."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise ExportError(f"{path}: not a readable ONNX model: {first_line(exc, 160)}") from None


def read_artifact(path: str | os.PathLike) -> Artifact:
    """The ``Artifact`` in an ONNX file's metadata; one ExportError line when it is unreadable."""
    return artifact_of(load_onnx(path), path)


def artifact_of(model: onnx.ModelProto, path: str | os.PathLike) -> Artifact:
    try:
        return Artifact.from_onnx_props({prop.key: prop.value for prop in model.metadata_props}, path)
    except BackendError as exc:
        raise ExportError(str(exc)) from None


def write_artifact(model: onnx.ModelProto, artifact: Artifact) -> None:
    """Replace ``metadata_props`` with the artifact's ``u2net.*`` keys."""
    del model.metadata_props[:]
    for key, value in sorted(artifact.to_onnx_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def pin_ir_version(model: onnx.ModelProto) -> None:
    """Write the oldest IR version the opsets allow: onnx 1.23 would write IR 14, which some ORT builds reject."""
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)


def save_atomic(model: onnx.ModelProto, out_path: Path) -> None:
    """Check, then write via a temp name and rename, so no half-written file is ever left behind."""
    onnx.checker.check_model(model, full_check=True)
    with atomic.atomic_path(out_path) as tmp:
        onnx.save(model, tmp)


def check_options(out_path: Path, opset: int, size: int) -> None:
    if opset < MIN_OPSET:
        raise ExportError(f"{out_path}: opset {opset} is too old: bilinear upsampling needs opset >= {MIN_OPSET}")
    if opset > MAX_OPSET:
        raise ExportError(f"{out_path}: opset {opset} is newer than the exporter supports (at most {MAX_OPSET})")
    if size < MIN_SIZE:
        raise ExportError(f"{out_path}: input size {size} is too small; use at least {MIN_SIZE}")


class _Probabilities(nn.Module):
    """The deployable head: sigmoid of the fused map, optionally followed by the six side maps."""

    def __init__(self, model: U2Net, all_outputs: bool) -> None:
        super().__init__()
        self.model = model
        self.all_outputs = all_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        maps = self.model.forward_logits(x)
        if self.all_outputs:
            return tuple(torch.sigmoid(m) for m in maps)
        return torch.sigmoid(maps[0])


def _trace(model: U2Net, out_path: Path, size: int, opset: int, dynamic_hw: bool, names: list[str]) -> onnx.ModelProto:
    """The TorchScript exporter's graph of ``model`` (a CPU FP32 copy when it is not one already)."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    first = next(model.parameters())
    if first.dtype != torch.float32 or first.device.type != "cpu":  # export a CPU FP32 copy, leave the caller's
        model = copy.deepcopy(model).float().cpu()
    was_training = model.training
    # The wrapper must be in eval mode itself: the exporter restores the wrapper's mode, recursively, afterwards.
    wrapper = _Probabilities(model, all_outputs=len(names) > 1).eval()
    tmp = out_path.with_name(atomic.temp_name(".onnx"))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy-exporter deprecation notice and the tracer's notes about the model's
            # size-equality shortcut are expected here and say nothing the user can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper, (torch.zeros(1, 3, size, size),), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=names,
                dynamic_axes={name: axes for name in (INPUT_NAME, *names)},
                do_constant_folding=True,  # also folds every BatchNorm into its convolution
            )  # fmt: skip
        return onnx.load(tmp)
    except OSError as exc:
        raise ExportError(f"{out_path}: cannot write: {exc.strerror or exc}") from None
    except Exception as exc:  # the exporter raises many types (unsupported opset, untraceable code...)
        raise ExportError(f"{out_path}: torch.onnx.export failed: {first_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)


def output_names(all_outputs: bool) -> list[str]:
    return [OUTPUT_NAME, *SIDE_NAMES] if all_outputs else [OUTPUT_NAME]


def onnx_artifact(
    variant: str,
    spec: PreprocessSpec,
    *,
    opset: int = 17,
    dynamic_hw: bool = False,
    all_outputs: bool = False,
    source: Path | None = None,
    source_sha256: str | None = None,
) -> Artifact:
    """What ``export_onnx`` writes: an FP32 file of ``variant`` at ``spec``, from checkpoint ``source``."""
    return Artifact(
        variant=variant, precision="fp32", spec=spec, opset=opset, outputs=tuple(output_names(all_outputs)),
        dynamic_hw=dynamic_hw, source=source.name if source else None, source_sha256=source_sha256,
        version=project_version(),
    )  # fmt: skip


def export_onnx(model: U2Net, out_path: str | os.PathLike, artifact: Artifact) -> Path:
    """Export ``model`` (FP32) to ``out_path`` as ``artifact`` describes it (``onnx_artifact``); returns the path.

    Input ``image`` float32 (N, 3, S, S) with S = ``artifact.spec.size`` (N always dynamic; H and W
    too with ``dynamic_hw``); outputs ``artifact.outputs``: ``mask`` float32 (N, 1, H, W) fused
    probabilities, then ``side1..side6`` when all outputs are exported.
    """
    out_path = Path(out_path)
    opset, dynamic_hw, variant = artifact.opset or 17, artifact.dynamic_hw, artifact.variant
    if artifact.outputs not in (tuple(output_names(False)), tuple(output_names(True))):
        raise ExportError(f"{out_path}: cannot export outputs {list(artifact.outputs)}")
    check_options(out_path, opset, artifact.spec.size)
    proto = _trace(model, out_path, artifact.spec.size, opset, dynamic_hw, list(artifact.outputs))
    write_artifact(proto, artifact.replace(opset=opset))
    proto.producer_name, proto.producer_version = PRODUCER, project_version()
    proto.doc_string = f"{variant} salient-object mask: input '{INPUT_NAME}', output '{OUTPUT_NAME}' (probabilities)"
    pin_ir_version(proto)
    try:
        save_atomic(proto, out_path)
    except OSError as exc:
        raise ExportError(f"{out_path}: cannot write: {exc.strerror or exc}") from None
    log.info("wrote %s (%s, opset %d, %s)", out_path, variant, opset, "dynamic N,H,W" if dynamic_hw else "dynamic N")
    return out_path
