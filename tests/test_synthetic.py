"""Synthetic data: deterministic by seed, valid masks, objects that differ from the background."""

from __future__ import annotations

import cv2
import numpy as np

from train.synthetic import main, make_sample, sample_seed, write_dataset


def test_make_sample_is_deterministic_and_well_formed():
    image, mask = make_sample(7, size=96)
    again_image, again_mask = make_sample(7, size=96)
    other_image, _ = make_sample(8, size=96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (96, 96) and mask.dtype == np.uint8
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)
    assert not np.array_equal(image, other_image)


def test_masks_have_objects_and_soft_edges():
    fractions, soft = [], []
    for seed in range(20):
        _, mask = make_sample(seed, size=128)
        fractions.append((mask > 127).mean())
        soft.append(((mask > 0) & (mask < 255)).any())
    assert min(fractions) > 0.005  # every sample has a visible object
    assert max(fractions) < 0.9  # and background around it
    assert all(soft)  # anti-aliased / blurred edges, not a hard 0/255 step


def test_objects_are_more_saturated_than_background():
    # The cue a network can learn: object pixels are, on average, far more colourful.
    gaps = []
    for seed in range(20):
        image, mask = make_sample(seed, size=128)
        sat = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        gaps.append(sat[mask > 200].mean() - sat[mask < 50].mean())
    assert np.median(gaps) > 60


def test_positions_vary_across_samples():
    centres = []
    for seed in range(30):
        _, mask = make_sample(seed, size=64)
        ys, xs = np.nonzero(mask > 127)
        centres.append((xs.mean(), ys.mean()))
    assert np.std(np.array(centres), axis=0).min() > 6  # not always in the middle


def test_write_dataset_and_cli(tmp_path):
    out = write_dataset(tmp_path / "a", 3, seed=5, size=64)
    images = sorted((out / "images").glob("*.jpg"))
    masks = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in images] == [p.stem for p in masks] == ["00000", "00001", "00002"]
    assert not list(out.rglob(".*"))  # no temp files left behind
    mask = cv2.imread(str(masks[1]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask, make_sample(sample_seed(5, 1), 64)[1])  # PNG masks are lossless

    assert main(["--out", str(tmp_path / "b"), "--n", "3", "--seed", "5", "--size", "64"]) == 0
    again = cv2.imread(str(tmp_path / "b" / "masks" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(again, mask)
    assert main(["--out", str(tmp_path / "c"), "--n", "0"]) == 2
