"""The seeded weights and input behind the golden fixture, rebuilt identically by its generator and its test.

Nothing here imports a model: weights are drawn from a numpy RNG by parameter *name and shape* alone, so
the official ``U2NETP`` (in ``tests/make_golden.py``) and this project's model (in ``tests/test_golden.py``)
receive the same numbers whenever their parameter names and shapes agree, which ``load_state_dict(strict=True)``
checks on both sides.
"""

from __future__ import annotations

import zlib

import numpy as np

SEED = 20200502  # arbitrary; part of the fixture's definition
SIZE = 64
FIXTURE = "golden_u2netp_64.npz"  # in tests/data


def _rng_for(name: str) -> np.random.Generator:
    # One stream per parameter, keyed by its name: independent of the order a model lists its parameters in.
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def seeded_array(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The value of one state-dict entry. Convolutions get He-scaled normals (so activations neither vanish
    nor explode through 6 stages; side heads scaled down), batch norms random affine terms and running statistics (so the eval-mode
    statistics are really used, not the identity)."""
    rng = _rng_for(name)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    is_bn = ".bn_" in name
    if leaf == "weight" and len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        # The side heads read unnormalised features (std ~10 here): scaled down so the fused map is a
        # spread of probabilities, not a saturated 0/1 image that would hide small differences.
        gain = 0.05 if name.startswith("side") else 1.0
        values = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
    elif is_bn and leaf == "weight":
        values = rng.uniform(0.5, 1.5, shape)
    elif is_bn and leaf == "running_var":
        values = rng.uniform(0.5, 2.0, shape)
    elif leaf in ("bias", "running_mean"):
        values = rng.normal(0.0, 0.1, shape)
    else:
        raise ValueError(f"no seeding rule for state-dict entry {name} {shape}")
    return values.astype(np.float32)


def seeded_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``{name: array}`` for every ``{name: shape}`` of a model's state dict."""
    return {name: seeded_array(name, tuple(shape)) for name, shape in shapes.items()}


def seeded_image() -> np.ndarray:
    """An RGB uint8 SIZE×SIZE image with structure (a bright disc on a gradient) plus noise."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    disc = ((yy - 0.55 * SIZE) ** 2 + (xx - 0.45 * SIZE) ** 2) < (0.25 * SIZE) ** 2
    base = np.stack([xx * 2.0, yy * 1.5, np.full_like(xx, 60.0)], axis=-1) + 120.0 * disc[..., None]
    noisy = base + rng.normal(0.0, 12.0, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
