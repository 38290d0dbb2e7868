"""SOD metrics against small cases worked out by hand, plus the degenerate masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from train.metrics import (
    EMeasure,
    FMeasure,
    SODMetrics,
    centred_prior,
    prepare,
    s_measure,
    weighted_f,
)

KEYS = {"max_f", "mean_f", "adaptive_f", "mae", "s_measure", "e_measure", "max_e", "adaptive_e", "weighted_f", "n_images"}


def f13(p: float, r: float) -> float:
    return 1.3 * p * r / (0.3 * p + r)


def test_mae_and_input_conventions():
    m = SODMetrics()
    m.step(np.array([[0, 255], [255, 255]], np.uint8), np.array([[0, 255], [0, 255]], np.uint8))
    m.step(np.array([[0.0, 1.0], [0.5, 1.0]]), np.array([[False, True], [False, True]]))
    res = m.results()
    assert set(res) == KEYS and res["n_images"] == 2
    assert res["mae"] == pytest.approx((0.25 + 0.125) / 2)


def test_f_measure_by_hand():
    # pred quantises to 0, 102, 204, 255; the last two pixels are salient.
    pred = np.array([[0.0, 0.4, 0.8, 1.0]])
    gt = np.array([[0, 0, 255, 255]], np.uint8)
    f = FMeasure()
    f.step(pred, gt)
    # t = 0: all positive (P 1/2, R 1); t = 1..102: three positive (P 2/3, R 1);
    # t = 103..204: exactly the object (F 1); t = 205..255: one pixel (P 1, R 1/2).
    expected = [f13(0.5, 1)] + [f13(2 / 3, 1)] * 102 + [1.0] * 102 + [f13(1, 0.5)] * 51
    assert np.allclose(f.curve(), expected)
    res = f.results()
    assert res["max_f"] == pytest.approx(1.0)
    assert res["mean_f"] == pytest.approx(np.mean(expected))
    # Adaptive threshold min(2 * 0.55, 1) = 1 keeps only the last pixel.
    assert res["adaptive_f"] == pytest.approx(f13(1, 0.5))
    precision, recall = f.pr_curve()
    assert precision[150] == pytest.approx(1.0) and recall[0] == pytest.approx(1.0)


def test_s_measure_by_hand():
    pred = np.array([[1.0, 0.5], [0.0, 0.0]])
    gt = np.array([[1, 1], [0, 0]], bool)
    # Object term: foreground [1, .5] -> mean .75, std (n-1) .35355 -> 1.5 / (.5625 + 1 + .35355);
    # background 1 - [0, 0] -> 1. Weighted by the foreground share 1/2.
    s_object = 0.5 * 1.5 / (0.5625 + 1 + np.sqrt(0.125)) + 0.5 * 1.0
    # Region term: centroid column 0.5 rounds (MATLAB-style, 1-based 1.5 -> 2) to the full width, so
    # the blocks are the top row (SSIM 0: the truth is constant while pred varies) and the bottom
    # row (both constant and equal: SSIM 1), each half the area.
    s_region = 0.5 * 0.0 + 0.5 * 1.0
    assert s_measure(*prepare(pred, gt)) == pytest.approx(0.5 * s_object + 0.5 * s_region)
    # A perfect prediction scores 1.
    perfect = np.zeros((6, 6), bool)
    perfect[1:4, 2:5] = True
    assert s_measure(*prepare(perfect, perfect)) == pytest.approx(1.0)


def test_e_measure_by_hand():
    pred = np.array([[255, 255, 0, 0]], np.uint8)
    gt = np.array([[1, 0, 0, 0]], bool)
    e = EMeasure()
    e.step(pred, gt)
    # t >= 1: prediction [1, 1, 0, 0] (mean .5), truth mean .25. Centred pairs and their
    # enhanced alignment ((2ab / (a² + b²) + 1)² / 4): TP (.5, .75), FP (.5, -.25), TN twice (-.5, -.25).
    def enhanced(a, b):
        return (2 * a * b / (a * a + b * b) + 1) ** 2 / 4

    at_t = (enhanced(0.5, 0.75) + enhanced(0.5, -0.25) + 2 * enhanced(-0.5, -0.25)) / 4
    assert at_t == pytest.approx((0.924556213 + 0.01 + 2 * 0.81) / 4)
    # t = 0: everything positive, so the centred prediction is 0 everywhere: alignment 0 -> 1/4.
    res = e.results()
    assert res["max_e"] == pytest.approx(at_t)
    assert res["e_measure"] == pytest.approx((0.25 + 255 * at_t) / 256)
    assert res["adaptive_e"] == pytest.approx(at_t)  # threshold min(2 * .5, 1) = 1


def test_weighted_f_by_hand():
    gt = np.zeros((10, 10), bool)
    gt[:2, :2] = True
    pred = gt.astype(np.float64)
    assert weighted_f(*prepare(pred, gt)) == pytest.approx(1.0)
    # One false positive 5 px from the object: error weight 2 - 0.5 ** (5 / 5) = 1.5,
    # so Pw = 4 / (4 + 1.5), Rw = 1 and Fw (β² = 1) = 2 Pw / (1 + Pw).
    pred[0, 6] = 1.0
    pw = 4 / 5.5
    assert weighted_f(*prepare(pred, gt)) == pytest.approx(2 * pw / (1 + pw))
    # The farther away, the heavier the penalty.
    far = gt.astype(np.float64)
    far[9, 9] = 1.0
    assert weighted_f(*prepare(far, gt)) < weighted_f(*prepare(pred, gt))


@pytest.mark.parametrize(("pred_value", "gt_value"), list(itertools.product([0, 255], [0, 255])))
def test_empty_and_full_masks_give_no_nans(pred_value, gt_value):
    m = SODMetrics()
    m.step(np.full((8, 8), pred_value, np.uint8), np.full((8, 8), gt_value, np.uint8))
    res = m.results()
    assert all(np.isfinite(v) for v in res.values())
    assert all(0.0 <= res[k] <= 1.0 for k in KEYS - {"n_images"})
    right = pred_value == gt_value
    assert res["mae"] == (0.0 if right else 1.0)
    assert res["s_measure"] == pytest.approx(1.0 if right else 0.0)
    assert res["adaptive_f"] == pytest.approx(1.0 if right else 0.0)
    assert res["adaptive_e"] == pytest.approx(1.0 if right else 0.0)
    assert res["weighted_f"] == pytest.approx(1.0 if right else 0.0)
    if right:
        assert res["max_f"] == pytest.approx(1.0) and res["max_e"] == pytest.approx(1.0)
    if not gt_value and pred_value:  # everything predicted, nothing there
        assert res["max_f"] == 0.0 and res["max_e"] == 0.0


def test_mixed_truth_with_empty_prediction():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:5, 2:6] = 255
    m = SODMetrics()
    m.step(np.zeros((8, 8), np.uint8), gt)
    res = m.results()
    assert all(np.isfinite(v) for v in res.values())
    assert res["adaptive_f"] == 0.0  # nothing predicted
    assert res["max_f"] == pytest.approx(f13(12 / 64, 1))  # only t = 0 predicts anything


def test_bad_inputs_are_refused():
    m = SODMetrics()
    with pytest.raises(ValueError, match="same size"):
        m.step(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="0..1"):
        m.step(np.full((4, 4), 3.0), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no images"):
        SODMetrics().results()


def test_better_predictions_score_better():
    rng = np.random.default_rng(0)
    gt = np.zeros((48, 48), np.uint8)
    gt[10:30, 14:40] = 255
    scores = []
    for noise in (0.05, 0.3, 0.6):
        pred = np.clip(gt / 255.0 + rng.normal(0, noise, gt.shape), 0, 1)
        m = SODMetrics()
        m.step(pred, gt)
        scores.append(m.results())
    for key in ("max_f", "mean_f", "s_measure", "e_measure", "weighted_f"):
        assert scores[0][key] > scores[1][key] > scores[2][key], key
    assert scores[0]["mae"] < scores[1]["mae"] < scores[2]["mae"]


def test_centred_prior():
    prior = centred_prior(30, 40)
    assert prior.shape == (30, 40) and prior.dtype == np.float32
    assert prior[15, 20] > 0.99 and prior[0, 0] == 0.0
    assert np.allclose(prior, prior[::-1, ::-1], atol=1e-6)  # symmetric about the centre
    # On a centred ellipse it is nearly perfect; on an off-centre object it is poor.
    yy, xx = np.mgrid[0:30, 0:40]
    centred = ((yy - 14.5) / 8) ** 2 + ((xx - 19.5) / 11) ** 2 <= 1
    corner = np.zeros((30, 40), bool)
    corner[:8, :8] = True
    on_centre, off_centre = FMeasure(), FMeasure()
    on_centre.step(prior, centred)
    off_centre.step(prior, corner)
    assert on_centre.results()["max_f"] > 0.95
    assert off_centre.results()["max_f"] < 0.3
