"""Shared pieces of the runtime tests: a tiny real ONNX model and image-file writers (the random
U²-NetP is ``random_u2netp``, the session fixture of conftest.py).

The tiny model is a genuine ONNX graph run by ONNX Runtime: mask = sigmoid(mean over the
normalised RGB channels), so bright pixels get high mask values and every output is checkable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from runtime.preprocess import PreprocessSpec

TINY_SIZE = 64


def make_tiny_onnx(
    path: Path,
    size: int = TINY_SIZE,
    *,
    batch: int | str = "batch",
    out_channels: int = 1,
) -> Path:
    """Write the tiny brightness model with the project's metadata contract; returns ``path``."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["prob"]),
    ]
    if out_channels == 1:
        nodes.append(helper.make_node("Identity", ["prob"], ["mask"]))
    else:  # a deliberately incompatible model: several output channels
        nodes.append(helper.make_node("Concat", ["prob"] * out_channels, ["mask"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny_brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, out_channels, size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    # Only the first contract's keys (the spec, variant, precision), as the earliest exports wrote them.
    first_keys = {**PreprocessSpec(size=size).to_dict(), "variant": "tiny", "precision": "fp32"}
    for key, value in {f"u2net.{k}": json.dumps(v) for k, v in first_keys.items()}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def scene(height: int = 48, width: int = 72, seed: int = 0) -> np.ndarray:
    """RGB uint8: a dark, textured background with a bright square in the upper left quarter."""
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 60, (height, width, 3), dtype=np.uint8)
    img[height // 8 : height // 2, width // 8 : width // 2] = rng.integers(200, 255, 3, dtype=np.uint8)
    return img


def save(path: Path, rgb: np.ndarray, fmt: str | None = None, **kwargs) -> Path:
    """Write an RGB (or L/RGBA/I;16 via ``kwargs['mode']``) array with Pillow, like a camera or editor would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = kwargs.pop("mode", None)
    image = Image.fromarray(rgb) if mode is None else Image.fromarray(rgb, mode)
    image.save(path, fmt, **kwargs)
    return path


def encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()
