"""Shared fixtures: the one random U²-NetP artifact and the location of the SOD photos."""

from __future__ import annotations

from pathlib import Path

import pytest
from random_u2netp import RandomU2NetP, build_random_u2netp

from export.samples import SOD_DIR  # the one definition (honours U2NET_SOD_DIR)


@pytest.fixture(scope="session")
def sod_dir() -> Path:
    if not (SOD_DIR / "images").is_dir():
        pytest.skip(f"SOD photos not found at {SOD_DIR}")
    return SOD_DIR


@pytest.fixture(scope="session")
def random_u2netp(tmp_path_factory) -> RandomU2NetP:
    """``random_u2netp.RandomU2NetP``: model, checkpoint and verified FP32/FP16 ONNX, built once."""
    pytest.importorskip("torch")
    return build_random_u2netp(tmp_path_factory.mktemp("random_u2netp"))
