"""Photos for checks, calibration and benchmarks: real ones when they are here, synthetic ones otherwise.

The one home of "N sample photos, else synthetic": export verification, INT8 calibration, the
TensorRT engine check and the benchmarks all take their images from here, and every file is read
with ``runtime.io.read_image``, the reader the runtime itself uses (EXIF orientation, 8-bit RGB),
so a check sees a photo exactly as inference will.

``SOD_DIR`` is the 300-photo salient-object set beside the repository (``../shared/data/SOD``, or
``$U2NET_SOD_DIR``): ``images/*.jpg`` with ``masks/*.png`` of the same stem.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from export.errors import ExportError
from runtime.io import IMAGE_SUFFIXES, ImageError, read_image

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SOD_DIR = Path(os.environ.get("U2NET_SOD_DIR", REPO.parent / "shared" / "data" / "SOD"))
DEFAULT_IMAGES = 3


def synthetic_images(count: int, size: int = 256) -> list[np.ndarray]:
    """``count`` RGB uint8 synthetic scenes (``train.synthetic``), the same for the same count."""
    from train.synthetic import make_sample

    return [make_sample(seed, size=size)[0] for seed in range(count)]


def photo_files(folder: Path, count: int | None = None) -> list[Path]:
    """Image files below ``folder`` in name order; with ``count``, that many spread evenly over them
    (a folder's first shots are often alike)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if count is not None and len(files) > count:
        files = [files[round(i * (len(files) - 1) / max(count - 1, 1))] for i in range(count)]
    return files


def read_photos(files: list[Path], count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB uint8 images from ``files``; an unreadable file is skipped with one line."""
    images = []
    for path in files:
        try:
            images.append(read_image(path)[0])
        except ImageError as exc:
            log.warning("%s; skipped", exc)
            continue
        if len(images) == count:
            break
    return images


def sod_photos(count: int | None = None, sod_dir: Path = SOD_DIR) -> list[Path]:
    """The SOD set's photos in name order (the first ``count``); empty when the set is not here."""
    images = sod_dir / "images"
    files = sorted(images.glob("*.jpg")) if images.is_dir() else []
    return files if count is None else files[:count]


def sod_mask(photo: Path) -> Path:
    """The ground-truth mask of a SOD photo."""
    return photo.parent.parent / "masks" / f"{photo.stem}.png"


def sample_images(n: int = DEFAULT_IMAGES, sod_dir: Path = SOD_DIR) -> tuple[list[np.ndarray], str]:
    """``n`` RGB uint8 images and where they came from: SOD photos when the set is here, else synthetic."""
    images = read_photos(sod_photos(sod_dir=sod_dir), n)
    if len(images) == n:
        return images, "SOD photos"
    return synthetic_images(n), "synthetic images"


def calibration_images(folder: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` RGB uint8 images spread evenly over ``folder`` (searched recursively), or synthetic ones
    when ``folder`` is None. Unreadable files are skipped with a warning; a folder with no readable image
    is an ``ExportError``."""
    if folder is None:
        return synthetic_images(count), "synthetic"
    if not folder.is_dir():
        raise ExportError(f"{folder}: calibration folder does not exist")
    images = read_photos(photo_files(folder, count), count)
    if not images:
        raise ExportError(f"{folder}: no readable calibration images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images, str(folder)


__all__ = [
    "DEFAULT_IMAGES", "SOD_DIR", "calibration_images", "photo_files", "read_photos", "sample_images", "sod_mask",
    "sod_photos", "synthetic_images",
]  # fmt: skip
