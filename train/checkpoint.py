"""One checkpoint loader for training, export and benchmarks.

Accepts an official raw state_dict (``u2net.pth``), this project's training checkpoint
(``{"model": ..., "optimizer": ..., "meta": ...}``) and keys prefixed by ``module.``
(DataParallel / DDP) or ``_orig_mod.`` (torch.compile). Files are read with
``weights_only=True``: pickled code in an untrusted file is refused, never run.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_path
from train.model import MODEL_NAMES, U2Net, build_model

CHECKPOINT_FORMAT = "u2net-toolkit/1"
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file."""


@dataclass
class LoadedCheckpoint:
    model: U2Net
    variant: str
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole file (optimizer, scaler...)


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


def _expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(variant)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _mismatch(state: dict[str, torch.Tensor], variant: str) -> tuple[list[str], list[str], list[str]]:
    expected = _expected_shapes(variant)
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


def infer_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The variant whose parameter names and shapes the state dict matches exactly, if any."""
    for variant in MODEL_NAMES:
        if not any(_mismatch(state, variant)):
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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {first[:160]}"
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


def load_checkpoint(path: str | os.PathLike, model: str = "auto") -> LoadedCheckpoint:
    """Load any supported checkpoint into a fresh model (in eval mode).

    ``model`` is ``"auto"`` (infer from tensor shapes) or a name from ``MODEL_NAMES``.
    Raises ``CheckpointError`` with a one-line message on any problem.
    """
    path = Path(path)
    if model != "auto" and model not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown --model {model!r}; choose auto, {', '.join(MODEL_NAMES)}")
    obj = _read(path)
    state, wrapper = _state_dict_of(obj, path)
    state = _strip_prefixes(state)
    variant = infer_variant(state) if model == "auto" else model
    if variant is None:
        # Report against the closer variant so the message says what actually differs.
        scored = sorted(MODEL_NAMES, key=lambda v: sum(map(len, _mismatch(state, v))))
        variant_hint = scored[0]
        missing, unexpected, wrong = _mismatch(state, variant_hint)
        raise CheckpointError(f"{path}: not a U²-Net or U²-NetP checkpoint: {_describe(missing, unexpected, wrong)}")
    missing, unexpected, wrong = _mismatch(state, variant)
    if missing or unexpected or wrong:
        other = infer_variant(state)
        hint = f" (it holds {other} weights)" if other else ""
        raise CheckpointError(f"{path}: does not match --model {variant}{hint}: {_describe(missing, unexpected, wrong)}")
    net = build_model(variant)
    net.load_state_dict(state, strict=True)
    net.eval()
    meta = dict(wrapper.get("meta") or {}) if wrapper else {}
    return LoadedCheckpoint(model=net, variant=variant, meta=meta, raw=wrapper)


def _describe(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches ({_first(wrong, 2)})")
    return "; ".join(parts)


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    variant: str,
    meta: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Write a training checkpoint atomically (temp file, then rename).

    ``extra`` holds optional training state (``optimizer``, ``scaler``, ``iteration``, ``rng``...);
    keep it to tensors, numbers, strings, lists and dicts so ``weights_only`` loading accepts it.
    """
    path = Path(path)
    state = _strip_prefixes(model.state_dict())
    payload = {"format": CHECKPOINT_FORMAT, "variant": variant, "model": state, "meta": dict(meta or {}), **extra}
    with atomic_path(path) as tmp:  # a failed save leaves neither a partial file nor a temporary
        torch.save(payload, tmp)
