"""FP32 ONNX -> FP16 ONNX: FP16 weights and compute, float32 input and output.

The result is what strongly typed TensorRT (10.12+, 11) needs for an FP16 engine, and it runs
on ONNX Runtime (CPU included), which is how CI checks it. onnxconverter-common keeps ``Resize``
in FP32 (casts around each upsample), which both accept.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import onnx
from onnxconverter_common.float16 import convert_float_to_float16

from export.errors import ExportError
from export.onnx import artifact_of, pin_ir_version, save_atomic, write_artifact
from runtime.artifact import Artifact
from runtime.errors import first_line

log = logging.getLogger(__name__)


def _unique_node_names(graph: onnx.GraphProto) -> None:
    """Give every node a distinct, non-empty name: the converter derives Cast names from node names,
    and duplicates make TensorRT's parser and some ORT versions refuse the graph."""
    seen: Counter[str] = Counter()
    for index, node in enumerate(graph.node):
        base = node.name or f"{node.op_type}_{index}"
        name = base
        while seen[name]:
            name = f"{base}_{seen[base]}"
            seen[base] += 1
        seen[name] += 1
        node.name = name


def convert_to_fp16(src: str | os.PathLike, dst: str | os.PathLike, artifact: Artifact | None = None) -> Path:
    """Convert the FP32 ONNX ``src`` to FP16 at ``dst`` (atomic write). Its artifact (``src``'s own
    when not given) is kept with precision "fp16"."""
    src, dst = Path(src), Path(dst)
    try:
        model = onnx.load(src)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise ExportError(f"{src}: not a readable ONNX model: {first_line(exc, 160)}") from None
    artifact = (artifact or artifact_of(model, src)).replace(precision="fp16")
    _unique_node_names(model.graph)
    with warnings.catch_warnings():
        # The converter warns about every value it clamps into FP16 range; the verification step
        # measures the effect of that on real outputs instead.
        warnings.simplefilter("ignore", UserWarning)
        half = convert_float_to_float16(model, keep_io_types=True)
    _unique_node_names(half.graph)  # the inserted Casts must not collide either
    write_artifact(half, artifact)
    pin_ir_version(half)
    try:
        save_atomic(half, dst)
    except OSError as exc:
        raise ExportError(f"{dst}: cannot write: {exc.strerror or exc}") from None
    log.info("wrote %s (FP16 weights and compute, FP32 input/output)", dst)
    return dst
