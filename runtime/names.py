"""Where engines are and what the files derived from them are called: the conventions, each in one place.

An engine is a file (``u2netp.onnx``, ``u2netp.plan``) or a server URL (``grpc://host:8001/u2netp``).
Exports derive their other files by name from the FP32 ONNX file ``X.onnx``:

| file | what it is | written by |
| --- | --- | --- |
| ``X.fp16.onnx`` | FP16 weights and compute | ``export.to_onnx --fp16`` |
| ``X.int8.onnx`` | INT8 Q/DQ, symmetric s8/s8 (TensorRT, OpenVINO) | ``export.to_onnx --int8`` |
| ``X.int8-ort.onnx`` | INT8 Q/DQ, u8/s8 (ONNX Runtime and OpenVINO on a CPU) | ``export.to_onnx --int8`` |
| ``X.plan`` + ``X.plan.json`` | TensorRT engine and its side file (the ``Artifact``) | ``export.to_trt`` |
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# Tags of the derived ONNX files, the longest first (".int8" also ends ".int8-ort"'s stem).
INT8_TAGS = {"symmetric": ".int8", "ort": ".int8-ort"}
DERIVED_TAGS = (".int8-ort", ".int8", ".fp16")
SIDE_SUFFIX = ".json"  # X.plan -> X.plan.json
ENGINE_SUFFIX = ".plan"


def is_url(engine: str | os.PathLike) -> bool:
    """Whether ``engine`` names a server (``scheme://...``) rather than a file."""
    return isinstance(engine, str) and _URL.match(engine) is not None


def engine_location(engine: str | os.PathLike) -> str | Path:
    """A URL stays a string (a ``Path`` would fold its ``//``); anything else is a ``Path``."""
    return engine if is_url(engine) else Path(engine)


def url_scheme(engine: str) -> str:
    """``grpc://h:1/m`` -> ``grpc``."""
    return engine.split("://", 1)[0].lower()


def fp16_path(onnx: Path) -> Path:
    """``X.onnx`` -> ``X.fp16.onnx``."""
    return onnx.with_name(f"{onnx.stem}.fp16{onnx.suffix}")


def int8_path(onnx: Path, form: str) -> Path:
    """``X.onnx`` -> ``X.int8.onnx`` (form "symmetric") or ``X.int8-ort.onnx`` (form "ort": u8/s8)."""
    tag = INT8_TAGS["symmetric" if form == "symmetric" else "ort"]
    return onnx.with_name(f"{onnx.stem}{tag}{onnx.suffix}")


def base_stem(source: Path) -> str:
    """The ``X`` of ``X.pth``, ``X.onnx``, ``X.fp16.onnx``, ``X.int8.onnx`` and ``X.int8-ort.onnx``."""
    stem = source.stem
    if source.suffix.lower() == ".onnx":
        for tag in DERIVED_TAGS:
            if stem.endswith(tag):
                return stem[: -len(tag)]
    return stem


def sibling_onnx(source: Path) -> Path:
    """The FP32 ``X.onnx`` beside any file of the family."""
    return source.with_name(base_stem(source) + ".onnx")


def plan_path(source: Path) -> Path:
    """``X.pth`` / ``X.onnx`` / ``X.fp16.onnx`` / ``X.int8.onnx`` -> ``X.plan`` beside it."""
    return source.with_name(base_stem(source) + ENGINE_SUFFIX)


def side_file(engine: str | os.PathLike) -> Path:
    """``X.plan`` -> ``X.plan.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + SIDE_SUFFIX)


__all__ = [
    "DERIVED_TAGS", "ENGINE_SUFFIX", "INT8_TAGS", "SIDE_SUFFIX", "base_stem", "engine_location", "fp16_path",
    "int8_path", "is_url", "plan_path", "sibling_onnx", "side_file", "url_scheme",
]  # fmt: skip
