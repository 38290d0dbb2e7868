"""Turn the project's artifacts into a model repository for the official Triton Inference Server container.

    python -m export.to_triton models/u2netp.onnx -o model_repository              # ONNX Runtime backend, GPU
    python -m export.to_triton models/u2net.plan -o model_repository --instances 2  # TensorRT backend
    python -m export.to_triton models/u2netp.onnx -o repo --kind cpu --backend openvino --name u2netp_cpu

Layout: ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/<version>/model.onnx|model.plan``. Exporting into a
model that already exists adds the next version (Triton serves the newest by default) and replaces its
config; another backend under the same name is refused. Everything is staged inside the repository and
renamed into place, so Triton (which may poll the folder) never sees half a model.

Exit status: 0 written; 1 an artifact could not be exported (one line each, the others still are).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from export.errors import ExportError
from export.triton_config import (
    KINDS,
    ONNX_TO_TRITON,
    PLATFORMS,
    ConfigError,
    TensorSpec,
    TritonModel,
    parse_config,
    render_config,
)
from runtime import atomic
from runtime.argtypes import positive_int
from runtime.artifact import METADATA_PREFIX, PRIMARY_OUTPUT, Artifact, TensorRTBuild
from runtime.errors import BackendError
from runtime.logs import setup_logging

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8  # ONNX files have a dynamic batch axis and no profile: this bounds it
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ModelFile:
    """What a model file says about itself: I/O, batch range and the ``u2net.*`` metadata."""

    path: Path
    kind: str  # "onnx" | "plan"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifact: Artifact
    dynamic_batch: bool
    profile: tuple[int, int, int] | None = None  # TensorRT (min, opt, max) batch

    @property
    def metadata(self) -> dict[str, str]:
        """The ``u2net.*`` keys as the ONNX file spells them (Triton's config parameters)."""
        return self.artifact.to_onnx_props()

    @property
    def variant(self) -> str:
        """The default model name: a file without metadata is served as plain ``u2net``."""
        return self.artifact.model_name


def read_artifact(path: Path) -> ModelFile:
    """Describe an ``.onnx`` file or a TensorRT ``.plan`` (from its side file); ExportError otherwise."""
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _read_onnx(path)
    if suffix in (".plan", ".engine", ".trt"):
        return _read_plan(path)
    raise ExportError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected .onnx or .plan")


def _onnx_tensor(value_info, path: Path) -> tuple[TensorSpec, bool]:
    """One ONNX graph input/output -> (spec without batch dim, whether the batch dim is dynamic)."""
    tensor_type = value_info.type.tensor_type
    data_type = ONNX_TO_TRITON.get(tensor_type.elem_type)
    if data_type is None:
        raise ExportError(f"{path}: tensor {value_info.name} has an element type Triton cannot carry")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    if len(dims) < 2:
        raise ExportError(f"{path}: tensor {value_info.name} has shape {dims}; expected (N, C, H, W)")
    return TensorSpec(value_info.name, data_type, tuple(dims[1:])), dims[0] == -1


def _read_onnx(path: Path) -> ModelFile:
    try:
        import onnx
    except ImportError:
        raise ExportError(f"{path}: reading ONNX needs the onnx package (pip install '.[export]')") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in initializers]
    if len(graph_inputs) != 1 or not graph.output:
        raise ExportError(f"{path}: expected one input and at least one output; is this a U²-Net export?")
    inp, dynamic = _onnx_tensor(graph_inputs[0], path)
    outputs = tuple(_onnx_tensor(o, path)[0] for o in graph.output)
    try:
        artifact = Artifact.from_onnx_props({p.key: p.value for p in model.metadata_props}, path)
    except BackendError as exc:
        raise ExportError(str(exc)) from None
    spec = artifact.spec
    inp = replace(inp, dims=tuple(spec.size if d == -1 else d for d in inp.dims))  # dynamic H/W run at the spec size
    outputs = tuple(replace(o, dims=tuple(spec.size if d == -1 else d for d in o.dims)) for o in outputs)
    return ModelFile(path, "onnx", (inp,), outputs, artifact, dynamic)


def _read_plan(path: Path) -> ModelFile:
    from runtime.backends.trt import read_side_file

    try:
        artifact = read_side_file(path)
    except BackendError as exc:
        raise ExportError(str(exc)) from None
    build = artifact.tensorrt or TensorRTBuild()  # the build facts: profile, source ONNX, TensorRT version
    if build.batch_profile is None:
        raise ExportError(f"{path}: its side file has no batch profile (min/opt/max); rebuild with export.to_trt")
    lo, opt, hi = build.batch_profile
    source = path.with_name(build.onnx or "")
    if build.onnx and source.is_file() and source.suffix == ".onnx":
        onnx_side = _read_onnx(source)  # the engine has the I/O of the ONNX it was built from
        inputs, outputs = onnx_side.inputs, onnx_side.outputs
    else:
        size = artifact.spec.size
        inputs = (TensorSpec(build.input_name, "TYPE_FP32", (3, size, size)),)
        outputs = (TensorSpec(PRIMARY_OUTPUT, "TYPE_FP32", (1, size, size)),)
    return ModelFile(path, "plan", inputs, outputs, artifact, True, (lo, opt, hi))


def batch_limits(artifact: ModelFile, max_batch: int | None) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred batch sizes) for ``artifact``; the engine's profile bounds a plan."""
    if not artifact.dynamic_batch:
        if max_batch not in (None, 0):
            log.warning("%s: fixed batch dimension; Triton cannot batch it (ignoring --max-batch)", artifact.path)
        return 0, ()
    if artifact.profile is None:
        return (max_batch or DEFAULT_MAX_BATCH), ()
    lo, opt, hi = artifact.profile
    if max_batch is not None and max_batch > hi:
        raise ExportError(f"{artifact.path}: --max-batch {max_batch} exceeds the engine's profile maximum {hi}")
    if lo > 1:  # Triton sends whatever batch it formed, down to 1: the engine would refuse the small ones
        raise ExportError(f"{artifact.path}: the engine's profile starts at batch {lo}; Triton needs 1 (rebuild with "
                          "--min-batch 1)")  # fmt: skip
    top = max_batch or hi
    return top, tuple(sorted({b for b in (opt, top) if 1 < b <= top}))


def model_for(artifact: ModelFile, name: str, args: argparse.Namespace) -> TritonModel:
    """The Triton model description for one artifact and the command's options."""
    kind = artifact.kind
    if args.backend == "openvino":
        if kind != "onnx":
            raise ExportError(f"{artifact.path}: the OpenVINO backend reads ONNX files, not TensorRT plans")
        kind = "openvino"
    instance_kind = args.kind or ("cpu" if kind == "openvino" else "gpu")
    max_batch, preferred = batch_limits(artifact, args.max_batch)
    inputs, outputs = artifact.inputs, artifact.outputs
    if max_batch == 0:  # no batching: the dims Triton sees include the fixed batch axis
        inputs = tuple(replace(t, dims=(1, *t.dims)) for t in inputs)
        outputs = tuple(replace(t, dims=(1, *t.dims)) for t in outputs)
    params = dict(artifact.metadata)
    params[f"{METADATA_PREFIX}artifact"] = json.dumps(artifact.path.name)
    try:
        return TritonModel(name=name, kind=kind, inputs=inputs, outputs=outputs, max_batch_size=max_batch,
                           instance_kind=instance_kind, instances=args.instances, preferred_batch_sizes=preferred,
                           queue_delay_us=args.queue_delay_us, parameters=params)  # fmt: skip
    except ConfigError as exc:
        raise ExportError(f"{artifact.path}: {exc}") from None


def validated(model: TritonModel, source: Path) -> str:
    """Render and parse the config with Triton's protobuf when tritonclient is installed."""
    text = render_config(model)
    try:
        parse_config(text)
    except ImportError:
        log.warning("tritonclient is not installed: %s/config.pbtxt was not checked against Triton's ModelConfig "
                    "(pip install '.[triton]')", model.name)  # fmt: skip
    except ConfigError as exc:
        raise ExportError(f"{source}: generated config for {model.name} is invalid: {exc}") from None
    return text


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def existing_kind(model_dir: Path) -> str | None:
    """``platform``/``backend`` line of an existing config, to refuse mixing backends under one name."""
    try:
        text = (model_dir / "config.pbtxt").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r'^\s*(?:platform|backend)\s*:\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else None


def write_model(repo: Path, model: TritonModel, artifact: ModelFile, config_text: str) -> Path:
    """Stage ``NAME/config.pbtxt`` + ``NAME/<version>/<file>`` in the repository, then rename into place."""
    model_dir = repo / model.name
    wanted = "openvino" if model.kind == "openvino" else PLATFORMS[model.kind]
    old = existing_kind(model_dir)
    if old is not None and old != wanted:
        raise ExportError(f"{model_dir}: already holds a {old} model; choose another --name for this {wanted} one")
    version = (existing_versions(model_dir) or [0])[-1] + 1
    atomic.remove_stale(repo)
    atomic.remove_stale(model_dir)
    try:
        with atomic.staged_dir(repo) as stage:
            staged_version = stage / str(version)
            staged_version.mkdir()
            shutil.copyfile(artifact.path, staged_version / model.model_file)
            (stage / "config.pbtxt").write_text(config_text, encoding="utf-8")
            if model_dir.is_dir():  # a new version, then the config that names it
                atomic.publish([(staged_version, model_dir / str(version)),
                                (stage / "config.pbtxt", model_dir / "config.pbtxt")])  # fmt: skip
            else:
                atomic.publish([(stage, model_dir)])  # the whole model appears at once
    except OSError as exc:
        raise ExportError(f"{model_dir}: cannot write: {exc.strerror or exc}") from None
    return model_dir / str(version) / model.model_file


def model_names(artifacts: Sequence[ModelFile], name: str | None, backend: str) -> list[str]:
    """One name per artifact: --name or the variant; artifacts that would share one get the backend as suffix."""
    names = [name or a.variant for a in artifacts]
    for n in names:
        if not NAME_PATTERN.match(n):
            raise ExportError(f"model name {n!r}: use letters, digits, '_', '-' or '.' (at most 128)")
    suffix = {"onnx": "openvino" if backend == "openvino" else "onnx", "plan": "trt"}
    if len(set(names)) < len(names):
        names = [f"{n}_{suffix[a.kind]}" if names.count(n) > 1 else n for n, a in zip(names, artifacts, strict=True)]
    if len(set(names)) < len(names):
        raise ExportError(f"two artifacts would both be model {names[0]!r}; export them one at a time with --name")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.to_triton", description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", type=Path, help=".onnx files or TensorRT .plan engines "
                   "(with their .plan.json side files)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL_REPOSITORY",
                   help="model repository folder (created if needed)")
    p.add_argument("--name", help="model name (default: the artifact's variant, u2net or u2netp; with several "
                   "artifacts of one variant, _onnx/_trt is appended)")  # fmt: skip
    p.add_argument("--max-batch", type=positive_int, metavar="N", help="max_batch_size (default: the engine "
                   f"profile's maximum for a plan, {DEFAULT_MAX_BATCH} for ONNX; a plan's profile caps it)")
    p.add_argument("--instances", type=positive_int, default=1, metavar="N", help="model instances per device")
    p.add_argument("--kind", choices=tuple(KINDS), help="instance kind (default: gpu; cpu for --backend openvino)")
    p.add_argument("--backend", choices=("default", "openvino"), default="default",
                   help="ONNX files: Triton's ONNX Runtime backend (default) or its OpenVINO backend")
    p.add_argument("--queue-delay-us", type=int, default=1000, metavar="US",
                   help="dynamic batching: longest wait for a fuller batch, in microseconds (default: 1000)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    failed = 0
    artifacts = []
    for path in args.artifacts:
        try:
            artifacts.append(read_artifact(path))
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    try:
        names = model_names(artifacts, args.name, args.backend)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for artifact, name in zip(artifacts, names, strict=True):
        try:
            model = model_for(artifact, name, args)
            written = write_model(args.output, model, artifact, validated(model, artifact.path))
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"wrote {written} (model {name}, {model.kind}, max_batch_size {model.max_batch_size}, "
              f"{model.instances}x {model.instance_kind})")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
