"""U²-Net and U²-NetP (Qin et al., 2020), built from one stage table.

Parameter names match the official checkpoints (``stage1.rebnconvin.conv_s1.weight``,
``stage5d.rebnconv1d.bn_s1.running_mean``, ``side6.bias``, ``outconv.weight``...), so the
official ``u2net.pth`` / ``u2netp.pth`` load with ``strict=True`` and no key remapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StageSpec:
    """One RSU stage: an RSU-``height`` block (RSU-4F when ``dilated``)."""

    height: int
    in_ch: int
    mid_ch: int
    out_ch: int
    dilated: bool = False


# Encoder stages stage1..stage6, then decoder stages stage5d..stage1d (REFERENCE.md).
MODEL_CONFIGS: dict[str, dict[str, tuple[StageSpec, ...]]] = {
    "u2net": {
        "encoder": (
            StageSpec(7, 3, 32, 64),
            StageSpec(6, 64, 32, 128),
            StageSpec(5, 128, 64, 256),
            StageSpec(4, 256, 128, 512),
            StageSpec(4, 512, 256, 512, dilated=True),
            StageSpec(4, 512, 256, 512, dilated=True),
        ),
        "decoder": (
            StageSpec(4, 1024, 256, 512, dilated=True),
            StageSpec(4, 1024, 128, 256),
            StageSpec(5, 512, 64, 128),
            StageSpec(6, 256, 32, 64),
            StageSpec(7, 128, 16, 64),
        ),
    },
    "u2netp": {
        "encoder": (
            StageSpec(7, 3, 16, 64),
            StageSpec(6, 64, 16, 64),
            StageSpec(5, 64, 16, 64),
            StageSpec(4, 64, 16, 64),
            StageSpec(4, 64, 16, 64, dilated=True),
            StageSpec(4, 64, 16, 64, dilated=True),
        ),
        "decoder": (
            StageSpec(4, 128, 16, 64, dilated=True),
            StageSpec(4, 128, 16, 64),
            StageSpec(5, 128, 16, 64),
            StageSpec(6, 128, 16, 64),
            StageSpec(7, 128, 16, 64),
        ),
    },
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CONFIGS)


def _upsample_like(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x  # the official code skips this resize too; it keeps the ONNX graph smaller
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ConvBNReLU(nn.Module):
    """The official REBNCONV: 3×3 conv (dilated), batch norm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block RSU-L; with ``dilated`` the RSU-4F variant (dilations, no pooling).

    Layers: ``rebnconvin``, encoder ``rebnconv1..rebnconv{L-1}``, bottom ``rebnconv{L}``,
    decoder ``rebnconv{L-1}d..rebnconv1d``; output = decoder output + ``rebnconvin`` output.
    """

    def __init__(self, spec: StageSpec) -> None:
        super().__init__()
        height, mid = spec.height, spec.mid_ch
        self.height, self.dilated = height, spec.dilated
        # Encoder dilation of layer i (1-based); decoder layer i reuses it.
        if spec.dilated:
            dilation = [2 ** i for i in range(height)]  # 1, 2, 4, 8
        else:
            dilation = [1] * (height - 1) + [2]
        self.rebnconvin = ConvBNReLU(spec.in_ch, spec.out_ch)
        for i in range(1, height + 1):
            self.add_module(f"rebnconv{i}", ConvBNReLU(spec.out_ch if i == 1 else mid, mid, dilation[i - 1]))
        for i in range(height - 1, 0, -1):
            self.add_module(f"rebnconv{i}d", ConvBNReLU(2 * mid, spec.out_ch if i == 1 else mid, dilation[i - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = []
        hx = hxin
        for i in range(1, self.height):
            hx = getattr(self, f"rebnconv{i}")(hx)
            skips.append(hx)
            if not self.dilated and i < self.height - 1:
                hx = _pool(hx)
        hx = getattr(self, f"rebnconv{self.height}")(hx)
        for i in range(self.height - 1, 0, -1):
            skip = skips[i - 1]
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((_upsample_like(hx, skip.shape[2:]), skip), 1))
        return hx + hxin


class U2Net(nn.Module):
    """U²-Net built from a stage table: ``MODEL_CONFIGS[name]`` unless ``config`` gives another.

    Training mode returns the seven maps as logits: fused first, then side 1-6.
    Eval mode returns only the fused probability map, shape (N, 1, H, W).
    """

    def __init__(self, name: str = "u2net", out_ch: int = 1,
                 config: Mapping[str, tuple[StageSpec, ...]] | None = None) -> None:
        super().__init__()
        if config is None and name not in MODEL_CONFIGS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
        self.name, self.out_ch = name, out_ch
        cfg = self.config = dict(config) if config is not None else MODEL_CONFIGS[name]
        if len(cfg["decoder"]) != len(cfg["encoder"]) - 1:
            raise ValueError(f"{len(cfg['encoder'])} encoder stages need {len(cfg['encoder']) - 1} decoder stages, "
                             f"not {len(cfg['decoder'])}")
        self.depth = len(cfg["encoder"])
        for i, spec in enumerate(cfg["encoder"], start=1):
            self.add_module(f"stage{i}", RSU(spec))
        for i, spec in zip(range(self.depth - 1, 0, -1), cfg["decoder"], strict=True):
            self.add_module(f"stage{i}d", RSU(spec))
        # Side heads read De1..De5 and En6 (stage6 doubles as the deepest decoder level).
        side_in = [getattr(self, f"stage{i}d").rebnconvin.conv_s1.out_channels for i in range(1, self.depth)]
        side_in.append(cfg["encoder"][-1].out_ch)
        for i, ch in enumerate(side_in, start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(self.depth * out_ch, out_ch, 1)

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All seven maps as logits at the input's size: (fused, side1, ..., side6)."""
        skips = []
        hx = x
        for i in range(1, self.depth + 1):
            hx = getattr(self, f"stage{i}")(hx)
            skips.append(hx)
            if i < self.depth:
                hx = _pool(hx)
        levels = [hx]  # decoder features, deepest first: En6, De5, ..., De1
        for i in range(self.depth - 1, 0, -1):
            skip = skips[i - 1]
            hx = getattr(self, f"stage{i}d")(torch.cat((_upsample_like(hx, skip.shape[2:]), skip), 1))
            levels.append(hx)
        size = x.shape[2:]
        sides = [
            _upsample_like(getattr(self, f"side{i}")(feat), size)
            for i, feat in enumerate(reversed(levels), start=1)
        ]
        fused = self.outconv(torch.cat(sides, 1))
        return (fused, *sides)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        maps = self.forward_logits(x)
        if self.training:
            return maps
        return torch.sigmoid(maps[0])


    def model_args(self) -> dict[str, Any]:
        """Everything ``build_model_from_args`` needs to rebuild this network, as plain values
        (what checkpoints store, so they do not depend on this file's tables)."""
        return {"name": self.name, "out_ch": self.out_ch,
                **{part: [asdict(stage) for stage in self.config[part]] for part in ("encoder", "decoder")}}


def build_model(name: str) -> U2Net:
    """Build ``u2net`` or ``u2netp`` with fresh (random) weights."""
    return U2Net(name)


_STAGE_TYPES = {f.name: (bool if f.name == "dilated" else int) for f in fields(StageSpec)}


def _stage_from_dict(value: Any, where: str) -> StageSpec:
    if not isinstance(value, Mapping) or set(value) != set(_STAGE_TYPES):
        raise ValueError(f"{where} must have exactly the keys {', '.join(_STAGE_TYPES)}")
    for key, kind in _STAGE_TYPES.items():
        v = value[key]
        if type(v) is not kind or (kind is int and not 1 <= v <= 4096) or (key == "height" and not 2 <= v <= 9):
            raise ValueError(f"{where}.{key} is {v!r}: not a valid {kind.__name__}")
    return StageSpec(**value)


def build_model_from_args(args: Mapping[str, Any]) -> U2Net:
    """Inverse of ``U2Net.model_args``; ValueError naming the first bad entry (a checkpoint is untrusted input)."""
    if not isinstance(args, Mapping):
        raise ValueError(f"model_args is a {type(args).__name__}, not a dict")
    name, out_ch = args.get("name"), args.get("out_ch", 1)
    if not isinstance(name, str) or type(out_ch) is not int or not 1 <= out_ch <= 16:
        raise ValueError(f"model_args name {name!r} / out_ch {out_ch!r} are not a name and a small count")
    config = {}
    for part in ("encoder", "decoder"):
        stages = args.get(part)
        if not isinstance(stages, list | tuple) or not 1 <= len(stages) <= 8:
            raise ValueError(f"model_args {part} is not a list of 1 to 8 stages")
        config[part] = tuple(_stage_from_dict(s, f"model_args {part}[{i}]") for i, s in enumerate(stages))
    return U2Net(name, out_ch=out_ch, config=config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
