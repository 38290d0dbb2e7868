"""Synthetic salient-object data: coloured, textured objects over cluttered grey-ish backgrounds.

Each sample is a pure function of its seed, so a data set is reproducible from ``(seed, n, size)``
alone. Objects (ellipses, polygons, blobs) are saturated and larger than the background clutter,
which is desaturated: appearance, not position, tells them apart, so a network has to learn it.
Edges are soft (anti-aliased and slightly blurred) in both image and mask, like real matting masks.

    python -m train.synthetic --out data/synth --n 500 --seed 0 --size 320
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime.atomic import atomic_path
from runtime.logs import setup_logging

log = logging.getLogger(__name__)

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly: smooth outlines at every size
_SHAPES = ("ellipse", "polygon", "blob")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One colour, h/s/v in 0..1 -> float RGB in 0..1."""
    pixel = np.array([[[h * 179.0, s * 255.0, v * 255.0]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in 0..1: a cells×cells random grid, upsampled smoothly to size×size."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size×size modulation map around 0 (about ±0.5): stripes, checks, noise or flat."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # stripes at a random angle and frequency
        angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 14)
        return 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    if kind == 1:  # soft checkerboard
        freq = rng.uniform(3, 10)
        return 0.5 * np.sin(2 * np.pi * freq * xx) * np.sin(2 * np.pi * freq * yy)
    if kind == 2:  # blotchy noise
        return _smooth_noise(rng, size, int(rng.integers(4, 16))) - 0.5
    return np.zeros((size, size), np.float32)


def _shape_points(rng: np.random.Generator, kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Outline of one shape (float x, y points) centred at (cx, cy) with radius about r."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        a, b = r, r * rng.uniform(0.45, 1.0)
        rot = rng.uniform(0, np.pi)
        x, y = a * np.cos(t), b * np.sin(t)
        px, py = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        # Evenly spread corners with jitter: no slivers, so every polygon has a visible area.
        t = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
        rad = r * rng.uniform(0.6, 1.0, n)
        px, py = rad * np.cos(t), rad * np.sin(t)
    else:  # blob: radius as a random low-order Fourier series of the angle
        t = np.linspace(0, 2 * np.pi, 128, endpoint=False)
        rad = np.ones_like(t)
        for k in range(2, 6):
            rad += rng.uniform(0, 0.35 / k * 2) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        rad = r * rad / rad.max()
        px, py = rad * np.cos(t), rad * np.sin(t)
    return np.stack([cx + px, cy + py], axis=1)


def _fill(points: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased filled outline as float 0..1 coverage."""
    canvas = np.zeros((size, size), np.uint8)
    pts = np.round(points * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas.astype(np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered, textured, mostly desaturated background (float RGB 0..1)."""
    base = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.8))
    tint = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.2, 0.9))
    mix = _smooth_noise(rng, size, int(rng.integers(2, 5)))[..., None]
    img = base * (1 - mix) + tint * mix
    img = img + 0.12 * _texture(rng, size)[..., None]
    # Clutter: many small, low-saturation shapes and lines, so edges alone do not mark the object.
    for _ in range(int(rng.integers(6, 20))):
        colour = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.15, 0.95))
        if rng.random() < 0.35:
            p0, p1 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            layer = np.zeros((size, size), np.uint8)
            thickness = max(1, int(size * rng.uniform(0.004, 0.02)))
            cv2.line(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 255, thickness, cv2.LINE_AA)
            alpha = layer.astype(np.float32) / 255.0
        else:
            kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
            pts = _shape_points(rng, kind, *rng.uniform(0, size, 2), size * rng.uniform(0.02, 0.08))
            alpha = _fill(pts, size)
        alpha = alpha[..., None] * rng.uniform(0.5, 1.0)
        img = img * (1 - alpha) + colour * alpha
    return img


def _object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One salient object: (float RGB appearance over the whole canvas, float 0..1 alpha)."""
    kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
    r = size * rng.uniform(0.12, 0.3)
    margin = r * 0.6  # objects may be cut by the border, but most of each stays inside
    cx, cy = rng.uniform(margin, size - margin, 2)
    alpha = _fill(_shape_points(rng, kind, cx, cy, r), size)
    sigma = size * rng.uniform(0.001, 0.006)  # soft edge, a pixel or two at 320 px
    if sigma > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    # Saturated colour with its own texture and a second hue, plus simple shading.
    c1 = _hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    c2 = _hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    pattern = (_texture(rng, size) + 0.5).clip(0, 1)[..., None] * rng.uniform(0.0, 0.6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shade = 1.0 - 0.25 * np.hypot(xx - cx + 0.3 * r, yy - cy + 0.3 * r) / (2 * r)
    look = (c1 * (1 - pattern) + c2 * pattern) * shade.clip(0.6, 1.0)[..., None]
    return look, alpha


def make_sample(seed: int, size: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask: (RGB uint8 size×size×3, uint8 size×size 0..255)."""
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    mask = np.zeros((size, size), np.float32)
    n_objects = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    for _ in range(n_objects):
        look, alpha = _object(rng, size)
        img = img * (1 - alpha[..., None]) + look * alpha[..., None]
        mask = np.maximum(mask, alpha)
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)  # sensor noise
    image8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    mask8 = np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image8, mask8


def sample_seed(seed: int, index: int) -> int:
    """Seed of the index-th sample of a data set: independent streams per (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _write_atomic(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:  # keeps the suffix: OpenCV picks the codec by it
        if not cv2.imwrite(str(tmp), image, params or []):
            raise OSError(f"{path}: could not write image")


def write_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 320) -> Path:
    """Write n samples as ``out_dir/images/NNNNN.jpg`` and ``out_dir/masks/NNNNN.png``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n - 1)))
    for i in tqdm(range(n), desc="synthetic", unit="img", disable=n < 50):
        image, mask = make_sample(sample_seed(seed, i), size)
        name = f"{i:0{width}d}"
        _write_atomic(out / "images" / f"{name}.jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                      [cv2.IMWRITE_JPEG_QUALITY, 95])
        _write_atomic(out / "masks" / f"{name}.png", mask)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.synthetic",
        description="Write a synthetic salient-object data set (images/*.jpg + masks/*.png), reproducible by seed.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (images/ and masks/ inside)")
    parser.add_argument("--n", required=True, type=int, help="number of image/mask pairs")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default 0); use another for held-out data")
    parser.add_argument("--size", type=int, default=320, help="square image side in pixels (default 320)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.n < 1 or args.size < 16:
        print("error: --n must be >= 1 and --size >= 16", file=sys.stderr)
        return 2
    try:
        out = write_dataset(args.out, args.n, seed=args.seed, size=args.size)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("wrote %d pairs to %s", args.n, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
