"""Data layouts, the pre-training check, the validation split rule and the training transforms."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime.preprocess import PreprocessSpec, normalize, preprocess, resize_to_input
from train.data import (
    DataError,
    EvalDataset,
    Pair,
    TrainDataset,
    collate_eval,
    collect_pairs,
    find_folders,
    read_mask,
    split_pairs,
)
from train.synthetic import make_sample


def write_pair(images: Path, masks: Path, stem: str, seed: int = 0, size: int = 48) -> None:
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    image, mask = make_sample(seed, size)
    cv2.imwrite(str(images / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(masks / f"{stem}.png"), mask)


def test_layouts(tmp_path):
    write_pair(tmp_path / "generic/images", tmp_path / "generic/masks", "a")
    assert find_folders(tmp_path / "generic") == (tmp_path / "generic/images", tmp_path / "generic/masks")
    duts = tmp_path / "DUTS"
    write_pair(duts / "DUTS-TR/DUTS-TR-Image", duts / "DUTS-TR/DUTS-TR-Mask", "tr")
    write_pair(duts / "DUTS-TE/DUTS-TE-Image", duts / "DUTS-TE/DUTS-TE-Mask", "te")
    assert find_folders(duts / "DUTS-TR")[0].name == "DUTS-TR-Image"
    assert find_folders(duts, "train")[1] == duts / "DUTS-TR/DUTS-TR-Mask"
    assert find_folders(duts, "val")[0] == duts / "DUTS-TE/DUTS-TE-Image"


def test_missing_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        find_folders(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        find_folders(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images/ \\+ masks/"):
        find_folders(tmp_path / "empty")
    (tmp_path / "bare/images").mkdir(parents=True)
    (tmp_path / "bare/masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        collect_pairs(tmp_path / "bare")


def test_check_lists_every_problem_by_name(tmp_path):
    images, masks = tmp_path / "d/images", tmp_path / "d/masks"
    for i in range(4):
        write_pair(images, masks, f"ok{i}", seed=i)
    write_pair(images, masks, "nomask")
    (masks / "nomask.png").unlink()
    write_pair(images, masks, "orphan")
    (images / "orphan.jpg").unlink()
    (images / "garbage.jpg").write_bytes(b"not an image at all")
    (masks / "garbage.png").write_bytes(b"\x89PNG")
    write_pair(images, masks, "truncated")
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_pair(images, masks, "badmask")
    (masks / "badmask.png").write_bytes((masks / "ok0.png").read_bytes()[:40])
    write_pair(images, masks, "small")
    cv2.imwrite(str(masks / "small.png"), np.zeros((20, 30), np.uint8))

    report = collect_pairs(tmp_path / "d", workers=2, progress=False)
    assert sorted(p.image.stem for p in report.pairs) == ["ok0", "ok1", "ok2", "ok3"]
    assert report.problems["without mask"] == ["nomask.jpg"]
    unreadable = " ".join(report.problems["unreadable"])
    assert "garbage.jpg" in unreadable and "truncated.jpg: truncated JPEG" in unreadable
    assert "badmask.png" in unreadable
    assert report.problems["size mismatch"] == ["small.jpg: image 48x48, mask 30x20"]
    assert report.notes["masks without image"] == ["orphan.png"]
    assert report.n_problems == 5
    text = "\n".join(report.summary())
    assert "4 usable pairs" in text and "1 without mask" in text and "3 unreadable" in text
    assert "nomask.jpg" in text and "orphan.png" in text


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images/a.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable image/mask pairs.*1 without mask"):
        collect_pairs(tmp_path, progress=False)


def test_split_rule_every_fifth_by_name():
    pairs = [Pair(Path(f"i/{n:03d}.jpg"), Path(f"m/{n:03d}.png")) for n in range(23)]
    train, val = split_pairs(list(reversed(pairs)), 0.2)  # input order does not matter
    assert [p.image.stem for p in val] == ["004", "009", "014", "019"]
    assert len(train) == 19 and not {p.name for p in train} & {p.name for p in val}
    train3, val3 = split_pairs(pairs, 0.3)
    assert len(val3) == 6 and len(train3) == 17  # floor(23 * 0.3) = 6, spread evenly
    with pytest.raises(ValueError):
        split_pairs(pairs, 1.5)


def test_read_mask_scales_zero_one_labels(tmp_path):
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.array([[0, 1], [1, 0]], np.uint8))
    assert read_mask(path).tolist() == [[0, 255], [255, 0]]


@pytest.fixture
def pairs(tmp_path) -> list[Pair]:
    for i in range(3):
        write_pair(tmp_path / "images", tmp_path / "masks", f"p{i}", seed=i, size=48)
    return collect_pairs(tmp_path, progress=False).pairs


def test_train_transforms(pairs):
    ds = TrainDataset(pairs, size=40, crop=32, seed=3)
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y.shape == (1, 32, 32)
    assert x.dtype == torch.float32 and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert torch.equal(ds[1][0], x)  # same (seed, epoch, index): same crop and flip
    crops = set()
    for epoch in range(8):
        ds.epoch = epoch
        crops.add(ds[1][0].numpy().tobytes())
    assert len(crops) > 1  # new crops/flips every epoch


def test_train_normalisation_is_the_runtimes(pairs):
    ds = TrainDataset(pairs, size=40, crop=40, flip=False)
    image = cv2.cvtColor(cv2.imread(str(pairs[0].image)), cv2.COLOR_BGR2RGB)
    expected = normalize(resize_to_input(image, 40), PreprocessSpec(size=40))
    assert np.allclose(ds[0][0].numpy(), expected)


def test_flip_is_horizontal(pairs):
    ds = TrainDataset(pairs, size=48, crop=48, seed=0)
    mask = read_mask(pairs[0].mask).astype(np.float32) / 255.0
    seen = set()
    for epoch in range(12):
        ds.epoch = epoch
        y = ds[0][1][0].numpy()
        if np.allclose(y, mask):
            seen.add("plain")
        elif np.allclose(y, mask[:, ::-1]):
            seen.add("horizontal")
        else:
            raise AssertionError("neither the mask nor its mirror image")
    assert seen == {"plain", "horizontal"}


def test_a_file_going_bad_mid_run_is_replaced(pairs, caplog):
    ds = TrainDataset(pairs, size=40, crop=32)
    pairs[1].image.write_bytes(b"broken after the check")
    x, y = ds[1]  # does not raise: the next pair stands in
    assert x.shape == (3, 32, 32)
    assert "p1.jpg" in caplog.text


def test_eval_dataset_matches_runtime_preprocess(pairs):
    spec = PreprocessSpec(size=40)
    ds = EvalDataset(pairs, spec)
    x, mask, name = ds[2]
    image = cv2.cvtColor(cv2.imread(str(pairs[2].image)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(x.numpy(), preprocess([image], spec)[0])
    assert mask.shape == (48, 48) and name == "p2.jpg"
    pairs[0].mask.write_bytes(b"")
    batch = collate_eval([ds[0], ds[1], ds[2]])  # the unreadable sample is dropped, not fatal
    assert batch is not None and batch[0].shape == (2, 3, 40, 40) and batch[2] == ["p1.jpg", "p2.jpg"]


def test_real_sod_folder_checks_clean_and_splits(sod_dir):
    report = collect_pairs(sod_dir, workers=2, progress=False)
    assert report.n_problems == 0 and len(report.pairs) == 300
    train, val = split_pairs(report.pairs, 0.2)
    assert (len(train), len(val)) == (240, 60)
    names = sorted(p.name for p in report.pairs)
    assert [p.name for p in val][:2] == [names[4], names[9]]
