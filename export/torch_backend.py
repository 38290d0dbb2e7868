"""PyTorch as one more backend: the reference of export verification and a row of the benchmarks.

It lives in ``export/`` because ``runtime/`` never imports torch. ``run`` returns probabilities,
like every exported file: the sigmoid of the fused map (and of the side maps, by name, in
``run_outputs``), computed by the model in eval mode at any input size.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from export.onnx import SIDE_NAMES, project_version
from runtime.artifact import PRIMARY_OUTPUT, Artifact
from runtime.backends.base import Backend
from runtime.preprocess import PreprocessSpec
from train.model import U2Net

_MAX_BATCH = 64


class TorchBackend(Backend):
    """``model`` on ``device``; ``half``/``channels_last``/``compile_mode`` are the benchmark's variants.

    ``memoize`` keeps each distinct input's outputs, so several files checked against one model
    (FP32 and FP16) run PyTorch once per input.
    """

    name = "pytorch"

    def __init__(
        self,
        model: U2Net,
        spec: PreprocessSpec,
        variant: str = "unknown",
        *,
        device: str = "cpu",
        half: bool = False,
        channels_last: bool = False,
        compile_mode: str | None = None,
        memoize: bool = False,
    ) -> None:
        precision = "fp16" if half else "fp32"
        artifact = Artifact(variant=variant, precision=precision, spec=spec, dynamic_hw=True,
                            outputs=(PRIMARY_OUTPUT, *SIDE_NAMES), version=project_version())  # fmt: skip
        super().__init__(f"{variant}.pth", artifact)
        self.output_names = artifact.outputs
        self.max_batch = _MAX_BATCH
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model
        self._deployed = copy.deepcopy(model).eval().to(self.device, self.dtype, memory_format=self.memory_format)
        # "reduce-overhead" captures CUDA graphs: the launch overhead of U²-Net's ~200 small kernels goes away.
        self._fused = torch.compile(self._deployed, mode=compile_mode) if compile_mode else self._deployed
        self._memo: dict[tuple, list[np.ndarray]] | None = {} if memoize else None

    @property
    def preferred_batch(self) -> int:
        return 1 if self.device.type == "cpu" else super().preferred_batch

    def _engine_text(self) -> str:
        return f"PyTorch {torch.__version__} ({self.device.type})"

    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        if names == (self.primary_output,) and self._memo is None:
            return [self.run_staged(self.stage(batch)).float().cpu().numpy()]
        maps = self._all_maps(batch)
        return [maps[self.output_names.index(name)] for name in names]

    def _all_maps(self, batch: np.ndarray) -> list[np.ndarray]:
        key = (batch.shape, hashlib.sha1(batch.tobytes()).hexdigest())
        if self._memo is not None and key in self._memo:
            return self._memo[key]
        with torch.inference_mode():
            logits = self._deployed.forward_logits(self.stage(batch))
            maps = [torch.sigmoid(m).float().cpu().numpy() for m in logits]
        if self._memo is not None:
            self._memo[key] = maps
        return maps

    def stage(self, batch: np.ndarray) -> Any:
        checked = self.check_batch(batch)
        return torch.from_numpy(checked).to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def run_staged(self, staged: Any) -> Any:
        with torch.inference_mode():
            out = self._fused(staged)
            if self.device.type == "cuda":
                out = out.clone()  # CUDA-graph outputs are overwritten by the next replay
                torch.cuda.synchronize()
        return out

    def _close(self) -> None:
        self._deployed = self._fused = None
        self._memo = None
