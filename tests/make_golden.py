"""Regenerate ``tests/data/golden_u2netp_64.npz``: the published U²-NetP's fused map for a seeded input.

The fixture pins this project's model (and its ONNX export and runtime) to the *official* architecture:
``tests/test_golden.py`` rebuilds the same seeded weights and input (``tests/golden_seeded.py``) and checks
that our code reproduces the official outputs. The official model definition is NOT part of this repository
and is not needed to run the tests; only this script needs it. To regenerate:

    git clone https://github.com/xuebinqin/U-2-Net /tmp/U-2-Net     # or any copy of model/u2net.py
    PYTHONPATH=$PWD python tests/make_golden.py /tmp/U-2-Net/model/u2net.py

The script loads the seeded state dict into the official ``U2NETP`` with ``strict=True`` (so every name and
shape must match), runs it in eval mode on the seeded 64×64 image preprocessed by ``runtime/preprocess.py``,
and writes the fused probabilities as float16 (8 KB) with the source file's SHA-256 for provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_seeded import FIXTURE, SEED, SIZE, seeded_image, seeded_state_dict  # noqa: E402

from runtime.atomic import atomic_path  # noqa: E402
from runtime.preprocess import PreprocessSpec, preprocess  # noqa: E402


def load_official(path: Path):
    spec = importlib.util.spec_from_file_location("official_u2net", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: {path}: cannot import as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_fused(official_file: Path) -> np.ndarray:
    """(1, SIZE, SIZE) float32 fused probabilities of the official U2NETP under the seeded weights."""
    net = load_official(official_file).U2NETP(3, 1)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in seeded_state_dict(shapes).items()}
    net.load_state_dict(state, strict=True)
    net.eval()
    x = torch.from_numpy(preprocess([seeded_image()], PreprocessSpec(size=SIZE)))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the official code calls the deprecated F.upsample / F.sigmoid
        fused = net(x)[0]
    return fused[:, 0].numpy().astype(np.float32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("official", type=Path, help="the official repository's model/u2net.py")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data" / FIXTURE)
    args = p.parse_args()
    if not args.official.is_file():
        print(f"error: {args.official}: no such file", file=sys.stderr)
        return 2
    fused = official_fused(args.official)
    print(f"fused map: min {fused.min():.4f} max {fused.max():.4f} mean {fused.mean():.4f} std {fused.std():.4f}")
    sha = hashlib.sha256(args.official.read_bytes()).hexdigest()
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, fused=fused.astype(np.float16), seed=np.int64(SEED), size=np.int64(SIZE),
                            source=np.array(f"xuebinqin/U-2-Net model/u2net.py sha256 {sha}"),
                            torch=np.array(torch.__version__))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
