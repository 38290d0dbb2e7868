"""What an exported model is, described once: ``Artifact``.

Every file this project produces carries one: the checkpoint's metadata (``to_dict``), the ONNX
file's ``metadata_props`` (``to_onnx_props``: the ``u2net.*`` keys, JSON-encoded, the same keys
files have always had) and the TensorRT side file ``X.plan.json`` (``to_side_file``). Export stages
``replace`` the fields they change and pass it on; backends read it back and describe themselves
from it. Anything unreadable or inconsistent is one ``BackendError`` line naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import metadata as importlib_metadata
from typing import Any

from runtime.errors import BackendError
from runtime.preprocess import PreprocessSpec

PRODUCER = "u2net-toolkit"  # the distribution name: ONNX producer_name, User-Agent, `u2net --version`
METADATA_PREFIX = "u2net."  # ONNX metadata_props keys (and Triton config parameters)
PRIMARY_OUTPUT = "mask"
SIDE_FORMAT = "u2net-plan/2"  # side files before this key existed hold the ONNX props under "metadata"
# Fields of old side files that belong to the TensorRT build (everything else was duplicated metadata).
_OLD_BUILD_KEYS = ("strongly_typed", "profile", "workspace_bytes", "onnx", "tensorrt_version", "gpu_name",
                   "compute_capability", "build_seconds", "built_at")  # fmt: skip


def project_version() -> str:
    """The installed toolkit's version (``Artifact.version`` of what it writes)."""
    try:
        return importlib_metadata.version(PRODUCER)
    except importlib_metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class TensorRTBuild:
    """What only a built engine knows: the ``"tensorrt"`` object of its side file, typed and checked.

    Every field is optional (side files of older builds lack some); unknown keys are ignored.
    ``profile`` is the input's optimisation profile: ``{"input": name, "min": [N,C,H,W], "opt": ..., "max": ...}``.
    """

    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None  # "8.9"
    strongly_typed: bool | None = None
    profile: Mapping[str, Any] | None = None
    workspace_bytes: int | None = None
    onnx: str | None = None  # the ONNX file it was built from (a name beside the engine)
    build_seconds: float | None = None
    built_at: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | os.PathLike = "side file") -> TensorRTBuild:
        """BackendError naming ``where`` for a field of the wrong type."""
        kinds = {"tensorrt_version": str, "gpu_name": str, "compute_capability": str, "strongly_typed": bool,
                 "profile": Mapping, "workspace_bytes": int, "onnx": str, "build_seconds": (int, float),
                 "built_at": str}  # fmt: skip
        values = {k: v for k, v in data.items() if k in kinds and v is not None}
        for name, value in values.items():
            if not isinstance(value, kinds[name]) or (kinds[name] is int and isinstance(value, bool)):
                raise BackendError(f"{where}: metadata tensorrt.{name} is {value!r}, of the wrong type")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v, Mapping) else v)
                for f in fields(self) if (v := getattr(self, f.name)) is not None}  # fmt: skip

    @property
    def batch_profile(self) -> tuple[int, int, int] | None:
        """(min, opt, max) batch of the profile, None when the side file has no usable one."""
        try:
            return tuple(int(self.profile[k][0]) for k in ("min", "opt", "max"))  # type: ignore[index,return-value]
        except (KeyError, TypeError, ValueError, IndexError):
            return None

    @property
    def input_name(self) -> str:
        return str((self.profile or {}).get("input", "image"))


@dataclass(frozen=True)
class Artifact:
    """A U²-Net model file: what it computes, from what, and how its input must be prepared."""

    variant: str = "unknown"  # "u2net", "u2netp"
    precision: str = "fp32"  # what the file's weights and compute are: "fp32", "fp16" or "int8" (Q/DQ)
    spec: PreprocessSpec = field(default_factory=PreprocessSpec)
    opset: int | None = None
    outputs: tuple[str, ...] = (PRIMARY_OUTPUT,)
    dynamic_hw: bool = False
    source: str | None = None  # the checkpoint's file name
    source_sha256: str | None = None  # sha256 of that checkpoint file
    version: str | None = None  # the toolkit version that exported it
    tensorrt: TensorRTBuild | None = field(default=None, compare=False)  # build facts, engines only
    # INT8 Q/DQ files only: form ("s8s8-symmetric" / "u8s8"), calibration method, images, FP32 nodes
    int8: Mapping[str, Any] | None = field(default=None, compare=False)

    def replace(self, **changes: Any) -> Artifact:
        return replace(self, **changes)

    # -- dict form: checkpoints and side files ---------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; ``tensorrt`` only when there is one."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "spec":
                value = value.to_dict()
            elif f.name == "outputs":
                value = list(value)
            elif f.name == "tensorrt":
                if value is None:
                    continue
                value = value.to_dict()
            elif f.name == "int8":
                if value is None:
                    continue
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | os.PathLike = "artifact") -> Artifact:
        """Inverse of ``to_dict``; missing keys keep their defaults, wrong types are a BackendError."""
        if not isinstance(data, Mapping):
            raise BackendError(f"{where}: artifact description is {type(data).__name__}, not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "spec" in values:
            values["spec"] = _spec(values["spec"], where)
        return _checked(values, where)

    # -- ONNX metadata_props -----------------------------------------------------------------
    def to_onnx_props(self) -> dict[str, str]:
        """``u2net.<field>`` -> JSON text; the spec's fields flattened (``u2net.size``, ``u2net.mean``...)."""
        props = {METADATA_PREFIX + key: json.dumps(value) for key, value in self.spec.to_dict().items()}
        for key, value in self.to_dict().items():
            if key not in ("spec", "tensorrt") and value is not None:
                props[METADATA_PREFIX + key] = json.dumps(value)
        return props

    @classmethod
    def from_onnx_props(cls, props: Mapping[str, str], where: str | os.PathLike = "ONNX file") -> Artifact:
        """Inverse of ``to_onnx_props``; reads every file this project ever wrote (absent keys: defaults)."""
        decoded: dict[str, Any] = {}
        for key, raw in props.items():
            if not key.startswith(METADATA_PREFIX):
                continue
            try:
                decoded[key[len(METADATA_PREFIX) :]] = json.loads(raw)
            except (TypeError, ValueError):
                raise BackendError(f"{where}: metadata {key} is not valid JSON: {str(raw)[:60]!r}") from None
        spec_keys = {f.name for f in fields(PreprocessSpec)}
        values = {k: v for k, v in decoded.items() if k not in spec_keys and k in {f.name for f in fields(cls)}}
        values.pop("tensorrt", None)
        values["spec"] = _spec({k: v for k, v in decoded.items() if k in spec_keys}, where)
        return _checked(values, where)

    # -- TensorRT side file ------------------------------------------------------------------
    def to_side_file(self) -> dict[str, Any]:
        """The ``X.plan.json`` object: each field once, the build facts under ``"tensorrt"``."""
        return {"format": SIDE_FORMAT, **self.to_dict()}

    @classmethod
    def from_side_file(cls, data: Any, where: str | os.PathLike) -> Artifact:
        """Reads both the current layout and the old one (ONNX props under ``"metadata"``, build facts
        and a second copy of precision/size/normalisation at the top level)."""
        if not isinstance(data, Mapping):
            raise BackendError(f"{where}: side file holds {type(data).__name__}, not an object")
        if data.get("format") == SIDE_FORMAT:
            return cls.from_dict({k: v for k, v in data.items() if k != "format"}, where)
        if not isinstance(data.get("metadata"), Mapping):
            raise BackendError(f'{where}: side file has no "metadata" object')
        props = {str(k): str(v) for k, v in data["metadata"].items()}
        artifact = cls.from_onnx_props(props, where)
        build = {k: data[k] for k in _OLD_BUILD_KEYS if k in data}
        precision = data.get("precision", artifact.precision)  # the engine's, which the old writer set too
        return _checked({**_fields_of(artifact), "precision": precision, "tensorrt": build or None}, where)

    # -- reading -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The name a server gives the model: the variant, and "u2net" for a file that does not say
        (an ONNX file from elsewhere runs as the official U²-Net it most likely is)."""
        return "u2net" if self.variant == "unknown" else self.variant

    def summary(self) -> str:
        """``u2netp fp16 320x320`` (``HxW`` when the size is dynamic)."""
        size = self.spec.size
        return f"{self.variant} {self.precision} {size}x{size}" + (" (any HxW)" if self.dynamic_hw else "")


def _fields_of(artifact: Artifact) -> dict[str, Any]:
    return {f.name: getattr(artifact, f.name) for f in fields(artifact)}


def _spec(value: Any, where: str | os.PathLike) -> PreprocessSpec:
    if isinstance(value, PreprocessSpec):
        return value
    try:
        return PreprocessSpec.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"{where}: bad preprocessing metadata: {exc}") from None


def _checked(values: dict[str, Any], where: str | os.PathLike) -> Artifact:
    """An Artifact from decoded values, after checking each one's type (one line naming the file)."""

    def bad(name: str, expected: str) -> BackendError:
        return BackendError(f"{where}: metadata {name} is {values[name]!r}, expected {expected}")

    for name in ("variant", "precision", "source", "source_sha256", "version"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise bad(name, "a string")
    if values.get("variant") is None:
        values.pop("variant", None)
    if values.get("precision") is None:
        values.pop("precision", None)
    if values.get("opset") is not None and (type(values["opset"]) is not int or values["opset"] < 1):
        raise bad("opset", "a positive whole number")
    if "dynamic_hw" in values and not isinstance(values["dynamic_hw"], bool):
        raise bad("dynamic_hw", "true or false")
    if "outputs" in values:
        outputs = values["outputs"]
        if not isinstance(outputs, list | tuple) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise bad("outputs", "a non-empty list of names")
        values["outputs"] = tuple(outputs)
    for name in ("tensorrt", "int8"):
        if values.get(name) is not None and not isinstance(values[name], Mapping | TensorRTBuild):
            raise bad(name, "an object")
    if isinstance(values.get("tensorrt"), Mapping):
        values["tensorrt"] = TensorRTBuild.from_dict(values["tensorrt"], where)
    return Artifact(**values)


__all__ = ["METADATA_PREFIX", "PRIMARY_OUTPUT", "PRODUCER", "Artifact", "BackendError", "TensorRTBuild",
           "project_version"]
