"""The benchmark rows: which backends this machine can run, each made on demand.

Every row makes a ``runtime.backends.base.Backend`` (PyTorch through ``export.torch_backend``), so
the benchmarks never branch on backends: ``stage`` puts a preprocessed batch where the model reads
it (device memory for GPU PyTorch), ``run_staged`` runs the network alone and waits for it
(model-only time), ``run`` goes from a host array to a host array (host<->device copies included,
as end-to-end time needs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE_DIR
from runtime.backends import Backend, open_backend
from runtime.names import fp16_path, int8_path
from runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


@dataclass
class RowSpec:
    """A benchmark row before it runs: what it is and how to open its backend."""

    model: str
    backend: str
    precision: str
    device: str
    make: Callable[[], Backend]


def torch_backend(model: Any, spec: PreprocessSpec, variant: str = "unknown", device: str = "cpu",
                  **options: Any) -> Backend:  # fmt: skip
    from export.torch_backend import TorchBackend

    return TorchBackend(model, spec, variant, device=device, **options)


def load_torch_model(variant: str, ckpt: Path | None) -> Any:
    """The checkpoint's model, or a seeded random one (enough where only speed matters)."""
    import torch

    from train.model import build_model

    if ckpt is not None:
        from train.checkpoint import load_checkpoint

        return load_checkpoint(ckpt, model=variant).model
    torch.manual_seed(0)
    return build_model(variant).eval()


def cached_onnx(variant: str, size: int, ckpt: Path | None, fp16: bool = False) -> Path:
    """Export (once) and return an ONNX file for ``variant`` at ``size``; cached by weights and size."""
    tag = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12] if ckpt else "random"
    folder = CACHE_DIR / f"{variant}_{size}_{tag}"
    fp32_path = folder / f"{variant}.onnx"
    half_path = fp16_path(fp32_path)
    if not fp32_path.exists():
        from export.onnx import export_onnx, onnx_artifact

        folder.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s (%s weights) to %s", variant, tag, fp32_path)
        export_onnx(load_torch_model(variant, ckpt), fp32_path, onnx_artifact(variant, PreprocessSpec(size=size)))
    if fp16 and not half_path.exists():
        from export.fp16 import convert_to_fp16

        convert_to_fp16(fp32_path, half_path)
    return half_path if fp16 else fp32_path


def cached_int8(variant: str, size: int, ckpt: Path | None, form: str) -> Path:
    """Calibrate (once) an INT8 Q/DQ file of ``form`` ("symmetric" or "ort") beside the cached FP32 file.

    Min-max on 8 sample photos: enough for timing, which does not depend on the ranges.
    """
    from export.int8 import Calibration, convert_to_int8
    from export.samples import sample_images

    fp32 = cached_onnx(variant, size, ckpt)
    path = int8_path(fp32, form)
    if not path.exists():
        images, source = sample_images(8)
        log.info("calibrating %s INT8 (%s) for timing", variant, form)
        convert_to_int8(fp32, path, images, form=form, calibration=Calibration("minmax", len(images), source),
                        cache=fp32.with_name("ranges.json"))
    return path


def cached_engine(variant: str, size: int, ckpt: Path | None, max_batch: int) -> Path:
    """Build (once) a TensorRT FP16 engine with a profile up to ``max_batch``."""
    onnx_path = cached_onnx(variant, size, ckpt, fp16=True)
    plan = onnx_path.with_name(f"{variant}.b{max_batch}.plan")
    if not plan.exists():
        from export.to_trt import main as to_trt

        status = to_trt([str(onnx_path), "-o", str(plan), "--max-batch", str(max_batch), "--size", str(size)])
        if status != 0:
            raise RuntimeError(f"TensorRT build for {variant} failed (exit {status})")
    return plan


def available_rows(variants: list[str], size: int, ckpt: Path | None, max_batch: int,
                   backends: set[str] | None = None) -> list[RowSpec]:
    """Every backend this machine can run, for each variant; ``backends`` filters by name."""
    spec = PreprocessSpec(size=size)
    has_torch = importlib.util.find_spec("torch") is not None
    cuda = False
    if has_torch:
        import torch

        cuda = torch.cuda.is_available()
    import onnxruntime as ort

    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    has_openvino = importlib.util.find_spec("openvino") is not None
    has_trt = cuda and importlib.util.find_spec("tensorrt") is not None

    rows: list[RowSpec] = []
    for v in variants:
        def torch_row(backend: str, precision: str, device: str, v: str = v, **kw: Any) -> RowSpec:
            return RowSpec(v, backend, precision, device,
                           lambda: torch_backend(load_torch_model(v, ckpt), spec, v, device, **kw))

        def ort_row(provider: str, precision: str, v: str = v) -> RowSpec:
            return RowSpec(v, "onnxruntime", precision, provider, lambda: open_backend(
                cached_onnx(v, size, ckpt, fp16=precision == "fp16"), backend="onnxruntime", provider=provider))

        if has_trt:
            rows.append(RowSpec(v, "tensorrt", "fp16", "cuda",
                                lambda v=v: open_backend(cached_engine(v, size, ckpt, max_batch), backend="tensorrt")))
        if ort_cuda:
            rows += [ort_row("cuda", "fp32"), ort_row("cuda", "fp16")]
        rows.append(ort_row("cpu", "fp32"))
        rows.append(RowSpec(v, "onnxruntime", "int8 (u8s8)", "cpu", lambda v=v: open_backend(
            cached_int8(v, size, ckpt, "ort"), backend="onnxruntime", provider="cpu")))
        if has_openvino:
            rows += openvino_rows(v, size, ckpt)
        if cuda:
            rows += [
                torch_row("pytorch", "fp32", "cuda"),
                torch_row("pytorch", "fp16+channels_last", "cuda", half=True, channels_last=True),
                torch_row("pytorch+compile", "fp16+cudagraphs", "cuda", half=True, channels_last=True,
                          compile_mode="reduce-overhead"),
            ]
        if has_torch:
            rows.append(torch_row("pytorch", "fp32", "cpu"))
    if backends:
        rows = [r for r in rows if r.backend in backends or f"{r.backend}-{r.device}" in backends]
    return rows



def openvino_rows(variant: str, size: int, ckpt: Path | None) -> list[RowSpec]:
    """OpenVINO FP32, BF16 (where the CPU has it natively) and both INT8 Q/DQ forms."""
    from runtime.cpu_info import native_bf16

    def row(precision: str, label: str, path: Callable[[], Path]) -> RowSpec:
        return RowSpec(variant, "openvino", label, "cpu",
                       lambda: open_backend(path(), backend="openvino", precision=precision))

    rows = [row("fp32", "fp32", lambda: cached_onnx(variant, size, ckpt))]
    if native_bf16():
        rows.append(row("bf16", "bf16", lambda: cached_onnx(variant, size, ckpt)))
    rows += [row("int8", "int8 (u8s8)", lambda: cached_int8(variant, size, ckpt, "ort")),
             row("int8", "int8 (s8s8)", lambda: cached_int8(variant, size, ckpt, "symmetric"))]
    return rows
