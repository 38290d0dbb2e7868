"""Image/mask pairs: finding them, checking them, splitting them, and feeding them to training.

Layouts (the folder given to ``--data`` / ``--val``):

- generic: ``images/`` + ``masks/``, matched by file stem (ECSSD, DUT-OMRON, HKU-IS, PASCAL-S, SOD,
  and what ``python -m train.synthetic`` writes);
- DUTS style: ``NAME-Image/`` + ``NAME-Mask/`` (``DUTS-TR``, ``DUTS-TE``), or their parent folder
  (``DUTS/``), where training uses ``*-TR`` and validation ``*-TE``.

Every pair is decoded once before training (``collect_pairs``): images without masks, unreadable or
truncated files and masks whose size differs from their image are reported by name and left out.
Training then never meets a bad file; if one goes bad mid-run anyway, the sample is replaced.

Validation split rule (``split_pairs``): pairs sorted by name; pair i (0-based) goes to validation when
floor((i + 1)·f) > floor(i·f). For f = 0.2 that is every 5th pair (i = 4, 9, 14, ...).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from runtime import io as runtime_io
from runtime.preprocess import PreprocessSpec, normalize, preprocess, resize_to_input

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")  # lossless first when a stem has two
_LIST_LIMIT = 20  # names listed per kind of problem; the count is always complete


class DataError(Exception):
    """A data folder that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.name


def _files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """stem -> file; when a stem has several files, the first suffix in ``suffixes`` wins."""
    rank = {s: i for i, s in enumerate(suffixes)}
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        if suffix in rank and path.is_file() and not path.name.startswith("."):
            old = found.get(path.stem)
            if old is None or rank[suffix] < rank[old.suffix.lower()]:
                found[path.stem] = path
    return found


def find_folders(root: str | os.PathLike, role: str = "train") -> tuple[Path, Path]:
    """(images folder, masks folder) of a data set; ``role`` picks ``*-TR`` or ``*-TE`` in a DUTS parent."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return root / "images", root / "masks"
    image_dirs = sorted(p for p in root.glob("*-Image") if p.is_dir())
    for images in image_dirs:
        masks = images.with_name(images.name[: -len("Image")] + "Mask")
        if masks.is_dir():
            return images, masks
    tag = "-TR" if role == "train" else "-TE"
    for sub in sorted(p for p in root.glob(f"*{tag}") if p.is_dir()):
        try:
            return find_folders(sub, role)
        except DataError:
            continue
    raise DataError(f"{root}: no images/ + masks/ or DUTS-style NAME-Image/ + NAME-Mask/ folders inside")


def _read(path: Path, order: str) -> np.ndarray:
    """The project's one image reader (``runtime.io.read_image``); its one-line errors as DataError."""
    try:
        return runtime_io.read_image(path, order=order)[0]
    except runtime_io.ImageError as exc:
        message, full = str(exc), str(path)
        raise DataError(path.name + message[len(full):] if message.startswith(full) else message) from None


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 H×W×3; raises ``DataError`` for unreadable, truncated or non-regular files."""
    return _read(path, "rgb")


def read_mask(path: Path) -> np.ndarray:
    """uint8 H×W mask, 0..255; raises ``DataError`` for unreadable files."""
    mask = _read(path, "gray")
    if mask.max() == 1:  # some data sets store 0/1 labels; they mean 0/255
        mask = mask * np.uint8(255)
    return mask


@dataclass
class DataReport:
    """Outcome of ``collect_pairs``: the usable pairs and every problem found, by kind."""

    root: Path
    pairs: list[Pair]
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind -> ["name: detail", ...]
    notes: dict[str, list[str]] = field(default_factory=dict)  # harmless oddities (masks without images)

    @property
    def n_problems(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def summary(self) -> list[str]:
        """Human-readable lines: one headline, then names per kind (at most ``_LIST_LIMIT`` each)."""
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.problems.items() if v) or "no problems"
        lines = [f"{self.root}: {len(self.pairs)} usable pairs; {counts}"]
        for kind, items in [*self.problems.items(), *self.notes.items()]:
            if not items:
                continue
            shown = ", ".join(items[:_LIST_LIMIT])
            more = f" ... (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
            lines.append(f"  {kind} ({len(items)}): {shown}{more}")
        return lines


def _check(pair: Pair) -> tuple[str, str] | None:
    """(kind, "name: detail") of the pair's problem, or None when it is usable."""
    try:
        image = read_image(pair.image)
    except DataError as exc:
        return "unreadable", str(exc)
    try:
        mask = read_mask(pair.mask)
    except DataError as exc:
        return "unreadable", f"{exc} (mask of {pair.name})"
    if image.shape[:2] != mask.shape:
        h, w = image.shape[:2]
        return "size mismatch", f"{pair.name}: image {w}x{h}, mask {mask.shape[1]}x{mask.shape[0]}"
    return None


def collect_pairs(root: str | os.PathLike, role: str = "train", workers: int = 4, progress: bool = True) -> DataReport:
    """Find and check every image/mask pair under ``root``. Raises ``DataError`` only when none is usable."""
    images_dir, masks_dir = find_folders(root, role)
    images, masks = _files(images_dir, IMAGE_SUFFIXES), _files(masks_dir, MASK_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    report = DataReport(root=Path(root), pairs=[])
    report.problems = {"without mask": [], "unreadable": [], "size mismatch": []}
    report.notes = {"masks without image": sorted(masks[s].name for s in masks.keys() - images.keys())}
    report.problems["unreadable"] = [  # named, never silently skipped
        f"{path.name}: {path.suffix[1:].upper()} is a format the image reader cannot decode"
        for path in sorted(images_dir.iterdir()) if path.suffix.lower() in runtime_io.UNDECODABLE_SUFFIXES
    ]
    candidates = []
    for stem in sorted(images):
        if stem in masks:
            candidates.append(Pair(images[stem], masks[stem]))
        else:
            report.problems["without mask"].append(images[stem].name)
    # Decoding releases the GIL inside OpenCV, so threads check files in parallel.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(_check, candidates)
        bar = tqdm(results, total=len(candidates), desc=f"checking {Path(root).name}", unit="pair",
                   disable=not progress or len(candidates) < 200, leave=False)
        for pair, problem in zip(candidates, bar, strict=True):
            if problem is None:
                report.pairs.append(pair)
            else:
                report.problems[problem[0]].append(problem[1])
    if not report.pairs:
        raise DataError(f"{root}: no usable image/mask pairs ({report.summary()[0].split('; ', 1)[1]})")
    return report


def split_pairs(pairs: Sequence[Pair], fraction: float) -> tuple[list[Pair], list[Pair]]:
    """(train, validation) by the fixed rule in the module docstring; deterministic, no copying."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    f = Fraction(fraction).limit_denominator(1000)  # exact arithmetic: 0.2 means exactly 1/5
    ordered = sorted(pairs, key=lambda p: p.name)
    train, val = [], []
    for i, pair in enumerate(ordered):
        (val if math.floor((i + 1) * f) > math.floor(i * f) else train).append(pair)
    return train, val


class TrainDataset(Dataset):
    """Published training recipe: resize to ``size``, random ``crop``, horizontal flip, runtime normalisation.

    Randomness comes from (seed, epoch, index), not from worker RNG state, so a resumed run sees the
    same crops and flips whatever the number of workers. Set ``epoch`` before each epoch's loader.
    """

    def __init__(self, pairs: Sequence[Pair], size: int = 320, crop: int = 288, flip: bool = True,
                 spec: PreprocessSpec | None = None, seed: int = 0) -> None:
        if crop > size:
            raise ValueError(f"crop {crop} is larger than size {size}")
        self.pairs, self.size, self.crop, self.flip = list(pairs), size, crop, flip
        self.spec = spec or PreprocessSpec(size=size)
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # A file that went bad after the check is replaced by the next pair, never fatal.
        for attempt in range(len(self.pairs)):
            pair = self.pairs[(index + attempt) % len(self.pairs)]
            try:
                image, mask = read_image(pair.image), read_mask(pair.mask)
                if image.shape[:2] == mask.shape:
                    return image, mask
                log.warning("%s: image and mask sizes differ now; using another pair", pair.name)
            except DataError as exc:
                log.warning("%s; using another pair", exc)
        raise DataError("no readable pair left in the training set")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask = self._load(index)
        image, mask = resize_to_input(image, self.size), resize_to_input(mask, self.size)
        top, left = rng.integers(0, self.size - self.crop + 1, size=2)
        image = image[top : top + self.crop, left : left + self.crop]
        mask = mask[top : top + self.crop, left : left + self.crop]
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]  # horizontal: objects are rarely upside down
        x = torch.from_numpy(normalize(image, self.spec))  # ÷ crop max, then ImageNet mean/std
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32) / 255.0)[None]
        return x, y


class EvalDataset(Dataset):
    """Validation exactly as deployed: runtime ``preprocess`` at ``spec.size``; masks at full resolution."""

    def __init__(self, pairs: Sequence[Pair], spec: PreprocessSpec) -> None:
        self.pairs, self.spec = list(pairs), spec

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, str] | None:
        pair = self.pairs[index]
        try:
            image, mask = read_image(pair.image), read_mask(pair.mask)
        except DataError as exc:
            log.warning("%s; skipped in validation", exc)
            return None
        return torch.from_numpy(preprocess([image], self.spec)[0]), mask, pair.name


def collate_eval(items: list) -> tuple[torch.Tensor, list[np.ndarray], list[str]] | None:
    """Stack the inputs; keep the masks (different sizes) as a list; drop skipped samples."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    return torch.stack([x for x, _, _ in items]), [m for _, m, _ in items], [n for _, _, n in items]
