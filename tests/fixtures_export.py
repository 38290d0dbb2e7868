"""Exported U²-NetP ONNX files for tests; import the fixtures into a test module to use them.

The model is random but not trivial: batch-norm statistics and affine parameters are randomised
(so folding BN into the convolutions is really exercised) and the fuse layer is scaled so the
mask spans most of 0..1 (so FP16 and tampering errors show up in the probabilities).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TEST_SIZE = 64


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
        probe = torch.rand(2, 3, TEST_SIZE, TEST_SIZE) * 4 - 2
        fused = model.forward_logits(probe)[0]
        # Rescale the 1x1 fuse conv so the fused logits have a spread of about 3: probabilities use 0..1.
        model.outconv.weight.mul_(3.0 / float(fused.std().clamp_min(1e-6)))
        model.outconv.bias.sub_(float(model.forward_logits(probe)[0].mean()))
    return model


@pytest.fixture(scope="session")
def u2netp_test_model():
    """``make_test_model()``, built once; tests must not change its weights."""
    return make_test_model()


@pytest.fixture(scope="session")
def u2netp_test_ckpt(u2netp_test_model, tmp_path_factory) -> Path:
    """``make_test_model`` saved as a training checkpoint with ``input_size`` = ``TEST_SIZE``."""
    from train.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("export_ckpt") / "u2netp_test.pth"
    save_checkpoint(path, u2netp_test_model, "u2netp", meta={"input_size": TEST_SIZE})
    return path


@pytest.fixture(scope="session")
def u2netp_onnx(u2netp_test_ckpt, tmp_path_factory) -> tuple[Path, Path]:
    """(FP32, FP16) ONNX of ``u2netp_test_ckpt``: static 64x64, dynamic batch, verified by the exporter."""
    from export.to_onnx import export_checkpoint

    out = tmp_path_factory.mktemp("export_onnx") / "u2netp.onnx"
    fp32, fp16 = export_checkpoint(u2netp_test_ckpt, out, fp16=True)
    return fp32, fp16
