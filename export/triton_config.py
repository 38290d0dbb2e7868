"""Triton Inference Server ``config.pbtxt`` for one model: rendered as text, checked with Triton's own protobuf.

The text is written by hand (no dependency needed to export) and, where ``tritonclient`` is installed,
parsed with ``tritonclient.grpc.model_config_pb2.ModelConfig`` so a misspelled field or enum fails
before the repository is published. Preprocessing metadata goes into ``parameters`` as the same JSON
strings the ONNX file and the engine side file hold, so a client reads the spec back from the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Triton's platform per artifact kind (model file name in the version folder is the backend default).
PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "plan": "model.plan", "openvino": "model.onnx"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# ONNX TensorProto element types -> Triton data types (the ones an image model can have at its I/O).
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16", 2: "TYPE_UINT8",
                  3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}  # fmt: skip


class ConfigError(ValueError):
    """A generated config that Triton would refuse; the message is one line."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # "TYPE_FP32"
    dims: tuple[int, ...]  # without the batch dimension when max_batch_size > 0


@dataclass(frozen=True)
class TritonModel:
    """Everything ``config.pbtxt`` says about one model."""

    name: str
    kind: str  # "onnx" | "plan" | "openvino": which backend serves the file
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # 0: the model has no batch dimension Triton may use
    instance_kind: str = "gpu"
    instances: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_delay_us: int = 1000
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_FILES:
            raise ConfigError(f"unknown model kind {self.kind!r}; expected one of {', '.join(MODEL_FILES)}")
        if self.instance_kind not in KINDS:
            raise ConfigError(f"unknown instance kind {self.instance_kind!r}; expected gpu or cpu")
        if self.kind == "plan" and self.instance_kind != "gpu":
            raise ConfigError("a TensorRT plan runs only on a GPU (--kind gpu)")
        if self.instances < 1 or self.max_batch_size < 0 or self.queue_delay_us < 0:
            raise ConfigError("instances must be >= 1, max_batch_size and queue delay >= 0")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= max(self.max_batch_size, 1)]
        if bad:
            raise ConfigError(f"preferred batch sizes {bad} are outside 1..max_batch_size {self.max_batch_size}")

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.kind]


def _quote(text: str) -> str:
    """A protobuf text-format string literal: UTF-8 as is, quotes, backslashes and control bytes escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _tensor(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    return f"  {{\n    name: {_quote(spec.name)}\n    data_type: {spec.data_type}\n    dims: [ {dims} ]\n  }}"


def _tensors(label: str, specs: Sequence[TensorSpec]) -> list[str]:
    return [f"{label} [", ",\n".join(_tensor(s) for s in specs), "]"]


def render_config(model: TritonModel) -> str:
    """The ``config.pbtxt`` text for ``model``."""
    lines = [f"name: {_quote(model.name)}"]
    if model.kind == "openvino":
        lines.append('backend: "openvino"')
    else:
        lines.append(f"platform: {_quote(PLATFORMS[model.kind])}")
    lines.append(f"max_batch_size: {model.max_batch_size}")
    lines += _tensors("input", model.inputs)
    lines += _tensors("output", model.outputs)
    if model.max_batch_size > 0:
        lines.append("dynamic_batching {")
        if model.preferred_batch_sizes:
            sizes = ", ".join(str(b) for b in model.preferred_batch_sizes)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines += [f"  max_queue_delay_microseconds: {model.queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {model.instances}", f"    kind: {KINDS[model.instance_kind]}",
              "  }", "]"]  # fmt: skip
    for key, value in sorted(model.parameters.items()):
        lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def parse_config(text: str):  # -> tritonclient.grpc.model_config_pb2.ModelConfig
    """Parse ``config.pbtxt`` text with Triton's own ``ModelConfig`` message; ConfigError on any mistake.

    Raises ImportError when ``tritonclient`` is not installed (pip install '.[triton]').
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"not a valid Triton model config: {exc}") from None
    check_semantics(config)
    return config


def check_semantics(config) -> None:
    """What the protobuf cannot say but Triton checks when it loads the model."""
    if not config.name:
        raise ConfigError("the config has no model name")
    if not config.input or not config.output:
        raise ConfigError(f"model {config.name}: needs at least one input and one output")
    for tensor in (*config.input, *config.output):
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            raise ConfigError(f"model {config.name}: tensor {tensor.name} has bad dims {list(tensor.dims)}")
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        raise ConfigError(f"model {config.name}: dynamic batching needs max_batch_size > 0")
    for size in batching.preferred_batch_size:
        if not 1 <= size <= config.max_batch_size:
            raise ConfigError(f"model {config.name}: preferred batch size {size} > max_batch_size")


def config_parameters(config) -> dict[str, str]:
    """The ``parameters`` map of a parsed config as plain strings (what the client backend reads)."""
    return {key: value.string_value for key, value in config.parameters.items()}
