"""The one random U²-NetP artifact of the test suite: model, training checkpoint, FP32 and FP16 ONNX.

The model is random but not trivial: batch-norm statistics and affine parameters are randomised
(so folding BN into the convolutions is really exercised) and the fuse layer is scaled so the
mask spans most of 0..1 (so FP16 and tampering errors show up in the probabilities). The
checkpoint records ``input_size`` = ``SIZE``; the ONNX files are this project's own export of it
(static 64x64, dynamic batch, verified against PyTorch by the exporter). conftest.py builds it
once per session as the ``random_u2netp`` fixture.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZE = 64  # any size works for the architecture; small keeps the tests fast


@dataclass(frozen=True)
class RandomU2NetP:
    model: Any  # train.model.U2Net in eval mode; tests must not change its weights
    ckpt: Path  # the model as a training checkpoint (meta input_size = SIZE)
    fp32: Path  # export.to_onnx of ckpt
    fp16: Path  # its FP16 conversion
    size: int = SIZE

    @property
    def onnx(self) -> tuple[Path, Path]:
        return self.fp32, self.fp16


def make_test_model(variant: str = "u2netp", seed: int = 0):
    """A deterministic random U²-Net(P) in eval mode with informative outputs."""
    import torch

    from train.model import build_model

    torch.manual_seed(seed)
    model = build_model(variant)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
        model.eval()
        probe = torch.rand(2, 3, SIZE, SIZE) * 4 - 2
        fused = model.forward_logits(probe)[0]
        # Rescale the 1x1 fuse conv so the fused logits have a spread of about 3: probabilities use 0..1.
        model.outconv.weight.mul_(3.0 / float(fused.std().clamp_min(1e-6)))
        model.outconv.bias.sub_(float(model.forward_logits(probe)[0].mean()))
    return model


def build_random_u2netp(folder: Path) -> RandomU2NetP:
    """Model -> checkpoint -> verified FP32 and FP16 ONNX, in ``folder``."""
    from export.to_onnx import export_checkpoint
    from train.checkpoint import save_checkpoint

    model = make_test_model()
    ckpt = folder / "u2netp_test.pth"
    save_checkpoint(ckpt, model, "u2netp", meta={"input_size": SIZE})
    with one_torch_thread():
        fp32, fp16 = export_checkpoint(ckpt, folder / "u2netp.onnx", fp16=True)
    return RandomU2NetP(model, ckpt, fp32, fp16)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run ~40x slower on a busy 2-core machine when torch's OpenMP threads fight for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
