"""FP32 ONNX -> INT8 Q/DQ ONNX, calibrated on photos through the runtime's own preprocessing.

Two forms, named by the engines they serve:

- ``X.int8.onnx``: symmetric s8 activations and s8 per-channel weights, every zero point 0. This is
  what TensorRT's explicit quantization reads (TensorRT 11 has no calibrators). ONNX Runtime runs it
  accurately but slowly; OpenVINO 2026.4 ran it fast but lost accuracy (measured, docs/backends.md).
- ``X.int8-ort.onnx``: u8 (asymmetric) activations, s8 per-channel weights: the CPU form, fast and
  accurate in both ONNX Runtime and OpenVINO.

Calibration uses ``onnxruntime.quantization.quantize_static``. The method and the layers kept in
FP32 were chosen by measured accuracy on held-out SOD photos (docs/backends.md, "Backends and precisions on a
CPU") and are recorded in each file's metadata (``u2net.int8.*``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.errors import ExportError
from export.onnx import artifact_of, load_onnx, pin_ir_version, save_atomic, write_artifact
from export.samples import SOD_DIR, calibration_images
from runtime import atomic
from runtime.errors import first_line
from runtime.preprocess import PreprocessSpec, preprocess

log = logging.getLogger(__name__)

FORMS = ("symmetric", "ort")
METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.9  # measured: 99.999 left the symmetric U²-Net file 4x further from FP32 (docs/backends.md)
DEFAULT_CALIB_COUNT = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Kept in FP32: the 1x1 fusion of the six side maps and the sigmoid after it. The side logits span a
# wide range that one 8-bit scale resolves poorly, and the fused map *is* the output.
DEFAULT_EXCLUDE_OPS = ("fuse",)


@dataclass(frozen=True)
class Calibration:
    """How an INT8 file was calibrated; written to its metadata."""

    method: str = DEFAULT_METHOD
    count: int = DEFAULT_CALIB_COUNT
    source: str = "synthetic"
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE_OPS


def calibration_set(folder: str | os.PathLike | None, count: int, method: str) -> tuple[list[np.ndarray], Calibration]:
    """The calibration photos (default: the SOD photos when present, else synthetic) and how to use them."""
    if method not in METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")
    if folder is None and (SOD_DIR / "images").is_dir():  # the real photos beat synthetic ones
        folder = SOD_DIR / "images"
    images, source = calibration_images(Path(folder) if folder is not None else None, count)
    log.info("INT8 calibration: %d images from %s, %s", len(images), source, method)
    return images, Calibration(method=method, count=len(images), source=source)


class _Batches:
    """``CalibrationDataReader``: one preprocessed photo at a time, as the runtime feeds the model."""

    def __init__(self, images: Sequence[np.ndarray], spec: PreprocessSpec, input_name: str) -> None:
        self._items: Iterator[np.ndarray] = (preprocess([img], spec) for img in images)
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._items, None)
        return None if batch is None else {self.input_name: batch}


def excluded_nodes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """Node names kept in FP32. ``fuse``: the last Conv before the output's Sigmoid (the 6 -> 1 fusion)."""
    names: list[str] = []
    if "fuse" in exclude:
        producers = {out: node for node in model.graph.node for out in node.output}
        head = producers.get(model.graph.output[0].name)
        if head is not None and head.op_type == "Sigmoid":
            conv = producers.get(head.input[0])
            if conv is not None and conv.op_type == "Conv":
                names.append(conv.name)
            names.append(head.name)
    names += [name for name in exclude if name != "fuse"]
    return names


class _DropPreprocessAdvice(logging.Filter):
    """quantize_static logs 'consider pre-processing' on the root logger for every model: not actionable here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def _quantize(src: Path, dst: Path, reader: _Batches | None, form: str, calib: Calibration, nodes: list[str],
              cache: Path | None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib.method]
    symmetric = form == "symmetric"
    quiet = _DropPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_static(
            str(src), dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes, calibrate_method=method, calibration_providers=["CPUExecutionProvider"],
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           "CalibPercentile": DEFAULT_PERCENTILE},
            calibration_cache_path=cache,
        )  # fmt: skip
    finally:
        logging.getLogger().removeFilter(quiet)


def convert_to_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    images: Sequence[np.ndarray],
    *,
    form: str = "symmetric",
    calibration: Calibration | None = None,
    cache: str | os.PathLike | None = None,
) -> Path:
    """Quantize the FP32 ONNX ``src`` to a Q/DQ ONNX at ``dst`` (atomic), calibrated on ``images``.

    ``cache``: a JSON file of tensor ranges; written by the first call, read by the next, so both forms
    come from one calibration pass (the ranges are collected asymmetric; the symmetric form widens them).
    """
    src, dst = Path(src), Path(dst)
    calib = calibration or Calibration(count=len(images))
    if form not in FORMS:
        raise ExportError(f"{dst}: unknown INT8 form {form!r}; choose {', '.join(FORMS)}")
    if calib.method not in METHODS:
        raise ExportError(f"{dst}: unknown calibration method {calib.method!r}; choose {', '.join(METHODS)}")
    if not images:
        raise ExportError(f"{dst}: INT8 calibration needs at least one image")
    model = load_onnx(src)
    artifact = artifact_of(model, src)
    spec = artifact.spec
    nodes = excluded_nodes(model, calib.exclude)
    staged = dst.with_name(atomic.temp_name(".onnx"))
    try:
        cache = Path(cache) if cache is not None else None
        reader = None if cache is not None and cache.is_file() else _Batches(images, spec, model.graph.input[0].name)
        _quantize(src, staged, reader, form, calib, nodes, cache)
        quantized = onnx.load(staged)
    except ExportError:
        raise
    except Exception as exc:  # quantize_static raises many types (ORT errors, numpy errors)
        raise ExportError(f"{dst}: INT8 quantization failed: {first_line(exc)}") from None
    finally:
        staged.unlink(missing_ok=True)
    write_artifact(quantized, artifact.replace(precision="int8", int8={
        "form": "s8s8-symmetric" if form == "symmetric" else "u8s8",
        "calibration": calib.method + (f"-{DEFAULT_PERCENTILE:g}" if calib.method == "percentile" else ""),
        "calibration_images": len(images),
        "calibration_source": Path(calib.source).name or calib.source,
        "fp32_nodes": nodes,
        "engines": ["tensorrt"] if form == "symmetric" else ["onnxruntime", "openvino"],
    }))
    pin_ir_version(quantized)
    try:
        save_atomic(quantized, dst)
    except OSError as exc:
        raise ExportError(f"{dst}: cannot write: {exc.strerror or exc}") from None
    log.debug("wrote %s (INT8 Q/DQ %s, %s calibration on %d images)", dst, form, calib.method, len(images))
    return dst
