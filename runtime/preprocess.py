"""Pre- and postprocessing of the official U²-Net test pipeline, defined once.

Used by the runtime, by export verification, by the benchmarks and by the training data
pipeline, so every consumer feeds the model exactly the same numbers. numpy + OpenCV only.

Input:  RGB uint8 image -> resize to the model's size -> divide by the image's max
        -> (x - ImageNet mean) / std -> float32 CHW.
Output: fused probability map -> min-max normalised per image -> resized back (bilinear).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
METADATA_PREFIX = "u2net."


@dataclass(frozen=True)
class PreprocessSpec:
    """What a model expects as input; travels with every checkpoint, ONNX file and engine."""

    size: int = 320
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    divide_by_max: bool = True  # the official pipeline divides by the image's max, not by 255

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, e.g. for checkpoints and engine side files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Inverse of ``to_dict``; absent keys keep their defaults. ValueError saying which value is
        wrong (a size that is not a positive whole number, a mean that is not three finite numbers...)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected an object, not {type(data).__name__}")
        values: dict[str, Any] = {}
        if data.get("size") is not None:
            size = data["size"]
            if type(size) is not int or size < 1:
                raise ValueError(f"size is {size!r}, expected a positive whole number")
            values["size"] = size
        for name in ("mean", "std"):
            if data.get(name) is not None:
                triple = data[name]
                if not isinstance(triple, list | tuple) or len(triple) != 3 or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in triple
                ):
                    raise ValueError(f"{name} is {triple!r}, expected three numbers")
                values[name] = tuple(float(v) for v in triple)
        if "std" in values and min(values["std"]) <= 0:
            raise ValueError(f"std is {list(values['std'])}, expected three positive numbers")
        if data.get("divide_by_max") is not None:
            if not isinstance(data["divide_by_max"], bool):
                raise ValueError(f"divide_by_max is {data['divide_by_max']!r}, expected true or false")
            values["divide_by_max"] = data["divide_by_max"]
        return cls(**values)

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` (``u2net.size``...)."""
        return {f"{METADATA_PREFIX}{k}": json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> PreprocessSpec:
        """Inverse of ``to_metadata``; keys that are absent keep their defaults. ValueError when a
        value is not JSON or not what it should be."""
        values = {}
        for name in cls.__dataclass_fields__:
            raw = props.get(f"{METADATA_PREFIX}{name}")
            if raw is not None:
                try:
                    values[name] = json.loads(raw)
                except ValueError:
                    raise ValueError(f"{METADATA_PREFIX}{name} is not valid JSON: {raw[:60]!r}") from None
        return cls.from_dict(values)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, RGB, RGBA, 8- or 16-bit) as 8-bit, 3-channel RGB.

    Arrays given to the public API are taken as RGB(A), as numpy users expect.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 2:
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def resize_to_input(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size×size; area averaging when shrinking stands in for skimage's anti-aliasing."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    shrinking = h * w > size * size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalize(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC RGB (uint8 or float) -> CHW float32: ÷ image max (or 255), then mean/std."""
    x = image.astype(np.float32)
    if spec.divide_by_max:
        peak = float(x.max())
        x /= peak if peak > 0 else 1.0  # an all-black image stays zero instead of dividing by 0
    else:
        x /= 255.0
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """RGB uint8 images of any sizes -> one float32 batch (N, 3, size, size)."""
    return np.stack([normalize(resize_to_input(to_rgb8(img), spec.size), spec) for img in images])


def postprocess(prediction: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One fused map ((1, h, w) or (h, w), probabilities) -> uint8 mask of ``size`` = (height, width).

    Min-max normalised per image and made 8-bit, then resized bilinearly: the official test script's
    order, and resizing uint8 rather than float32 is ~15x cheaper on a 12 MP photo.
    """
    pred = np.asarray(prediction, dtype=np.float32).reshape(prediction.shape[-2:])
    lo, hi = float(pred.min()), float(pred.max())
    pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
    mask = np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8)
    height, width = size
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return mask
