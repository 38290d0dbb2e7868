"""This project's U²-NetP, its ONNX export and the runtime reproduce the published architecture's outputs.

``data/golden_u2netp_64.npz`` holds the fused map that the official ``model/u2net.py`` (xuebinqin/U-2-Net)
computes for a seeded 64×64 image under seeded weights; ``make_golden.py`` made it and says how to remake it.
The weights are rebuilt here by parameter name and shape (``golden_seeded.py``), so no state dict is stored
and the official code is not needed to run these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from golden_seeded import FIXTURE, SEED, SIZE, seeded_image, seeded_state_dict

from runtime.preprocess import PreprocessSpec, postprocess, preprocess
from train.model import build_model

TESTS = Path(__file__).resolve().parent
# float16 storage rounds probabilities below 1 by at most 2.4e-4; float32 reorderings add ~1e-6.
TOLERANCE = 5e-4


@pytest.fixture(scope="module")
def golden() -> np.ndarray:
    data = np.load(TESTS / "data" / FIXTURE, allow_pickle=False)
    assert int(data["seed"]) == SEED and int(data["size"]) == SIZE  # the fixture matches the recipe here
    fused = data["fused"].astype(np.float32)
    assert fused.shape == (1, SIZE, SIZE)
    assert fused.std() > 0.05 and fused.max() - fused.min() > 0.5  # a spread of values, not a flat map
    return fused


@pytest.fixture(scope="module")
def seeded_model() -> torch.nn.Module:
    model = build_model("u2netp")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in seeded_state_dict(shapes).items()}, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def seeded_input() -> np.ndarray:
    return preprocess([seeded_image()], PreprocessSpec(size=SIZE))


def test_model_reproduces_the_official_fused_map(golden, seeded_model, seeded_input):
    with torch.no_grad():
        fused = seeded_model(torch.from_numpy(seeded_input))[:, 0].numpy()
    assert np.abs(fused - golden).max() < TOLERANCE


def test_training_mode_logits_give_the_same_map(golden, seeded_model, seeded_input):
    # Training and export read forward_logits; eval mode's sigmoid of its first map is the fused output.
    with torch.no_grad():
        fused_logits = seeded_model.forward_logits(torch.from_numpy(seeded_input))[0]
    assert np.abs(torch.sigmoid(fused_logits)[:, 0].numpy() - golden).max() < TOLERANCE


def test_onnx_export_and_runtime_reproduce_it(tmp_path, golden, seeded_model, seeded_input):
    from export.onnx import export_onnx, onnx_artifact
    from runtime.api import Remover
    from runtime.backends import open_backend

    spec = PreprocessSpec(size=SIZE)
    onnx_path = export_onnx(seeded_model, tmp_path / "golden.onnx", onnx_artifact("u2netp", spec))
    backend = open_backend(onnx_path, backend="onnxruntime", provider="cpu")  # FP32, whatever the CPU default
    try:
        probs = backend.run(seeded_input)
    finally:
        backend.close()
    assert probs.shape == (1, 1, SIZE, SIZE)
    assert np.abs(probs[:, 0] - golden).max() < TOLERANCE
    # The whole runtime path: image in, uint8 mask out, against the official map through the same postprocess.
    with Remover(onnx_path, backend="onnxruntime", provider="cpu") as remover:  # FP32, whatever the CPU default
        mask = remover.mask(seeded_image())
    expected = postprocess(golden, (SIZE, SIZE))
    assert mask.shape == (SIZE, SIZE)
    assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1  # float16 fixture: one grey level


def test_the_official_model_file_is_not_in_the_repository():
    # make_golden.py imports it from a path given on its command line; nothing here may define it.
    repo, needle = TESTS.parent, "class " + "U2NETP("  # split so this file does not match itself
    packages = [repo / name for name in ("train", "export", "runtime", "benchmarks", "tests")]
    for path in [p for package in packages for p in package.rglob("*.py")]:
        assert needle not in path.read_text(encoding="utf-8"), path
