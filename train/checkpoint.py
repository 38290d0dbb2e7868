"""One checkpoint loader for training, export and benchmarks.

The format this project writes (``format: u2net-toolkit/2``), like nanoGPT's ``model_args``, carries what is
needed to rebuild and feed the network as plain dicts next to the weights::

    {"format": "u2net-toolkit/2", "variant": "u2netp",
     "model_args": {"name": "u2netp", "out_ch": 1, "encoder": [{"height": 7, "in_ch": 3, ...}, ...], "decoder": [...]},
     "preprocess": {"size": 320, "mean": [...], "std": [...], "divide_by_max": true},
     "model": state_dict, "meta": {...}, "optimizer": ..., "scaler": ..., "iteration": ..., "rng": ...}

Also accepted: an official raw state_dict (``u2net.pth``; the variant is inferred from tensor shapes),
this project's first format (no ``model_args``; preprocessing as loose ``meta`` keys ``input_size``,
``mean``, ``std``, ``divide_by_max``) and keys prefixed by ``module.`` (DataParallel / DDP) or
``_orig_mod.`` (torch.compile). Files are read with ``weights_only=True``: pickled code in an untrusted
file is refused, never run.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_path
from runtime.errors import first_line
from runtime.preprocess import PreprocessSpec
from train.model import MODEL_NAMES, U2Net, build_model, build_model_from_args

CHECKPOINT_FORMAT = "u2net-toolkit/2"  # /1 had no model_args and flattened the spec into meta
_LEGACY_SPEC_KEYS = {"input_size": "size", "mean": "mean", "std": "std", "divide_by_max": "divide_by_max"}
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file."""


@dataclass
class LoadedCheckpoint:
    model: U2Net  # rebuilt from the file's model_args (or the inferred variant), weights loaded, eval mode
    variant: str
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole file (optimizer, scaler...)
    spec: PreprocessSpec | None = None  # None: the file does not say (official raw state dicts)
    model_args: dict[str, Any] = field(default_factory=dict)  # what rebuilds ``model`` (model.model_args())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _expected_shapes(model_args: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model_from_args(model_args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _variant_args(variant: str) -> dict[str, Any]:
    with torch.device("meta"):
        return build_model(variant).model_args()


def _mismatch(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]
              ) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, wrong


def _first(items: list[str], n: int = 3) -> str:
    more = f", ... (+{len(items) - n})" if len(items) > n else ""
    return ", ".join(items[:n]) + more


@cache
def _variant_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    return _expected_shapes(_variant_args(variant))


def infer_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The variant whose parameter names and shapes the state dict matches exactly, if any."""
    for variant in MODEL_NAMES:
        if not any(_mismatch(state, _variant_shapes(variant))):
            return variant
    return None


def _read(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        detail = f" ({lines[0][:160]})" if lines else ""
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects other than tensors, which could run code{detail}"
        ) from None
    except Exception as exc:  # torch raises many types for garbage input; all mean "unreadable"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {first_line(exc, 160)}"
        ) from None


def _state_dict_of(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or training checkpoint")
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key], obj
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CheckpointError(f"{path}: a dict without model weights (keys: {_first(sorted(map(str, obj)), 5)})")


def _describe(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches ({_first(wrong, 2)})")
    return "; ".join(parts)


def _args_from_file(wrapper: dict[str, Any], state: dict[str, torch.Tensor], model: str, path: Path
                    ) -> dict[str, Any]:
    """The file's own ``model_args``, checked against its weights (and against ``--model``)."""
    args = wrapper["model_args"]
    try:
        expected = _expected_shapes(args)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unusable model_args: {exc}") from None
    if model != "auto" and args["name"] != model:
        raise CheckpointError(f"{path}: does not match --model {model} (it holds {args['name']} weights)")
    problems = _mismatch(state, expected)
    if any(problems):
        raise CheckpointError(f"{path}: weights do not match its own model_args: {_describe(*problems)}")
    return dict(args)


def _args_from_shapes(state: dict[str, torch.Tensor], model: str, path: Path) -> dict[str, Any]:
    """Files without ``model_args`` (official, format /1): the variant named or inferred from tensor shapes."""
    variant = infer_variant(state) if model == "auto" else model
    if variant is None:
        # Report against the closer variant so the message says what actually differs.
        closest = min(MODEL_NAMES, key=lambda v: sum(map(len, _mismatch(state, _variant_shapes(v)))))
        problems = _mismatch(state, _variant_shapes(closest))
        raise CheckpointError(f"{path}: not a U²-Net or U²-NetP checkpoint: {_describe(*problems)}")
    problems = _mismatch(state, _variant_shapes(variant))
    if any(problems):
        other = infer_variant(state)
        hint = f" (it holds {other} weights)" if other else ""
        raise CheckpointError(f"{path}: does not match --model {variant}{hint}: {_describe(*problems)}")
    return _variant_args(variant)


def _legacy_spec_dict(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """Format /1 kept the spec as loose meta keys (``input_size``...); None when there are none."""
    found = {new: meta[old] for old, new in _LEGACY_SPEC_KEYS.items() if old in meta}
    return found or None


def _spec_of(wrapper: dict[str, Any], meta: dict[str, Any], path: Path) -> PreprocessSpec | None:
    raw = wrapper.get("preprocess")
    if raw is None:
        raw = _legacy_spec_dict(meta)
    if raw is None:
        return None
    try:
        return PreprocessSpec.from_dict(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad preprocessing spec: {exc}") from None


def load_checkpoint(path: str | os.PathLike, model: str = "auto") -> LoadedCheckpoint:
    """Load any supported checkpoint into a fresh model (in eval mode).

    ``model`` is ``"auto"`` (the file's ``model_args``, else inferred from tensor shapes) or a name from
    ``MODEL_NAMES`` that the file must hold. Raises ``CheckpointError`` with a one-line message on any problem.
    """
    path = Path(path)
    if model != "auto" and model not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown --model {model!r}; choose auto, {', '.join(MODEL_NAMES)}")
    state, wrapper = _state_dict_of(_read(path), path)
    state = _strip_prefixes(state)
    if "model_args" in wrapper:
        model_args = _args_from_file(wrapper, state, model, path)
    else:
        model_args = _args_from_shapes(state, model, path)
    meta = wrapper.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    spec = _spec_of(wrapper, meta, path)
    net = build_model_from_args(model_args)
    net.load_state_dict(state, strict=True)
    net.eval()
    return LoadedCheckpoint(model=net, variant=model_args["name"], meta=meta, raw=wrapper, spec=spec,
                            model_args=model_args)


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    variant: str,
    meta: dict[str, Any] | None = None,
    *,
    spec: PreprocessSpec | None = None,
    **extra: Any,
) -> None:
    """Write a checkpoint atomically (temp file, then rename): weights, ``model_args``, ``preprocess``, ``meta``.

    ``model`` may be wrapped (DDP's ``module``, torch.compile's ``_orig_mod``). ``spec`` defaults to the one
    described by format-/1 ``meta`` keys, if any. ``extra`` holds optional training state (``optimizer``,
    ``scaler``, ``iteration``, ``rng``...); keep it to tensors, numbers, strings, lists and dicts so
    ``weights_only`` loading accepts it.
    """
    path = Path(path)
    net = getattr(model, "module", model)
    net = getattr(net, "_orig_mod", net)
    model_args = net.model_args() if isinstance(net, U2Net) else _variant_args(variant)
    if model_args["name"] != variant:
        raise ValueError(f"save_checkpoint: the model is {model_args['name']}, not {variant}")
    meta = dict(meta or {})
    if spec is None and (legacy := _legacy_spec_dict(meta)) is not None:
        spec = PreprocessSpec.from_dict(legacy)
    payload = {"format": CHECKPOINT_FORMAT, "variant": variant, "model_args": model_args,
               **({"preprocess": spec.to_dict()} if spec is not None else {}),
               "model": _strip_prefixes(net.state_dict()), "meta": meta, **extra}
    with atomic_path(path) as tmp:  # a failed save leaves neither a partial file nor a temporary
        torch.save(payload, tmp)
