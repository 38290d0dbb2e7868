"""Shared fixtures: a small random U²-NetP checkpoint and the location of the SOD photos."""

from __future__ import annotations

from pathlib import Path

import pytest

# Exported-model fixtures (u2netp_test_model, u2netp_test_ckpt, u2netp_onnx) for every test module.
from fixtures_export import u2netp_onnx, u2netp_test_ckpt, u2netp_test_model  # noqa: F401

from export.verify import SOD_DIR  # the one definition (honours U2NET_SOD_DIR)


@pytest.fixture(scope="session")
def sod_dir() -> Path:
    if not (SOD_DIR / "images").is_dir():
        pytest.skip(f"SOD photos not found at {SOD_DIR}")
    return SOD_DIR


@pytest.fixture(scope="session")
def u2netp_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised U²-NetP in the project's training-checkpoint format."""
    torch = pytest.importorskip("torch")
    from train.checkpoint import save_checkpoint
    from train.model import build_model

    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    path = tmp_path_factory.mktemp("ckpt") / "u2netp_random.pth"
    save_checkpoint(path, model, "u2netp", meta={"input_size": 320, "note": "random init for tests"})
    return path
