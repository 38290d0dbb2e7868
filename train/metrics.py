"""Salient-object-detection metrics (numpy + OpenCV), shared by training validation and benchmarks.

Definitions follow the SOD literature:

- MAE: mean absolute difference between the prediction (0..1) and the binary ground truth.
- Fβ (β² = 0.3) at 256 thresholds: the prediction is quantised to 0..255 and binarised with
  ``pred >= t`` for t = 0..255. Per image one curve; the data-set curve is the mean over images;
  ``max_f`` / ``mean_f`` are its maximum / mean. ``adaptive_f`` binarises each image at
  min(2 · mean(pred), 1) (Achanta et al. 2009) and averages over images.
- S-measure (Fan et al. 2017, α = 0.5): object-aware plus region-aware (4-block SSIM) structure similarity.
- E-measure (Fan et al. 2018): enhanced-alignment matrix of the binarised prediction, at the same
  256 thresholds (``e_measure`` = mean, ``max_e`` = max of the mean curve) and at the adaptive threshold.
- Weighted Fβ (Margolin et al. 2014, β² = 1 as in the reference code): errors spread by a 7×7 Gaussian
  (σ = 5) over the foreground and weighted by distance from the object in the background.

Degenerate masks never give NaN. Conventions where a ratio is 0/0: precision is 1 when nothing is
predicted salient, recall is 1 when the ground truth is empty (so an empty prediction of an empty mask
scores F = 1, any error scores 0); an all-zero prediction is never salient, whatever the threshold
rule; weighted F of an empty (full) ground truth is 1 − mean(pred) (mean(pred)), as for the S-measure. E-measure is divided
by h·w (the MATLAB reference divides by h·w − 1, a difference of one pixel's share).

Inputs: ``pred`` uint8 0..255 or float 0..1 (bool accepted); ``gt`` bool, or numbers where > 127
(integers) or > 0.5 (floats up to 1) mean salient. Both H×W and the same size.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

EPS = float(np.finfo(np.float64).eps)  # the MATLAB eps the reference code adds to denominators
N_THRESHOLDS = 256
BETA2 = 0.3


def _as_pred(pred: np.ndarray) -> np.ndarray:
    a = np.asarray(pred)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    if a.size and (a.min() < -1e-3 or a.max() > 1.0 + 1e-3):
        raise ValueError(f"float predictions must lie in 0..1, got {a.min():.3g}..{a.max():.3g}")
    return np.clip(a, 0.0, 1.0)


def _as_gt(gt: np.ndarray) -> np.ndarray:
    a = np.asarray(gt)
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.floating) and (a.size == 0 or a.max() <= 1.0):
        return a > 0.5
    return a > 127


def prepare(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 prediction in 0..1, bool ground truth), checked to be 2-D and the same shape."""
    p, g = _as_pred(pred), _as_gt(gt)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} must be H×W arrays of the same size")
    if p.size == 0:
        raise ValueError("empty image")
    return p, g


def _quantise(p: np.ndarray) -> np.ndarray:
    return np.rint(p * 255.0).astype(np.int64)


def _counts_at_thresholds(q: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of ``q >= t`` for every t in 0..255, from two histograms."""
    fg = np.bincount(q[g], minlength=N_THRESHOLDS).astype(np.float64)
    bg = np.bincount(q[~g], minlength=N_THRESHOLDS).astype(np.float64)
    return np.cumsum(fg[::-1])[::-1], np.cumsum(bg[::-1])[::-1]


def _adaptive_binary(p: np.ndarray) -> np.ndarray:
    threshold = min(2.0 * float(p.mean()), 1.0)
    return (p >= threshold) & (p > 0)  # an all-zero map predicts nothing, not everything


def precision_recall(tp: np.ndarray, fp: np.ndarray, n_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall arrays with the 0/0 conventions of this module."""
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    recall = tp / n_pos if n_pos > 0 else np.ones_like(tp)
    return precision, recall


def f_beta(precision: np.ndarray, recall: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """(1 + β²)·P·R / (β²·P + R); 0 where both are 0."""
    precision, recall = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    denom = beta2 * precision + recall
    return np.divide((1 + beta2) * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)


class _Metric:
    """``step(pred, gt)`` per image, ``results()`` for the data set."""

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.update(*prepare(pred, gt))

    def update(self, p: np.ndarray, g: np.ndarray) -> None:  # p, g as returned by ``prepare``
        raise NotImplementedError

    @staticmethod
    def _need(values: list[Any]) -> None:
        if not values:
            raise ValueError("no images were scored: call step() first")


class MAE(_Metric):
    def __init__(self) -> None:
        self.values: list[float] = []

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        self.values.append(float(np.abs(p - g).mean()))

    def results(self) -> dict[str, float]:
        self._need(self.values)
        return {"mae": float(np.mean(self.values))}


class FMeasure(_Metric):
    """Max, mean and adaptive Fβ, plus the mean precision-recall curve over 256 thresholds."""

    def __init__(self, beta2: float = BETA2) -> None:
        self.beta2 = beta2
        self.precisions: list[np.ndarray] = []
        self.recalls: list[np.ndarray] = []
        self.curves: list[np.ndarray] = []
        self.adaptive: list[float] = []

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        n_pos = float(g.sum())
        precision, recall = precision_recall(*_counts_at_thresholds(_quantise(p), g), n_pos)
        self.precisions.append(precision)
        self.recalls.append(recall)
        self.curves.append(f_beta(precision, recall, self.beta2))
        binary = _adaptive_binary(p)
        ap, ar = precision_recall(np.sum(binary & g), np.sum(binary & ~g), n_pos)
        self.adaptive.append(float(f_beta(ap, ar, self.beta2)))

    def curve(self) -> np.ndarray:
        """Data-set Fβ at thresholds 0..255 (mean over images)."""
        self._need(self.curves)
        return np.mean(self.curves, axis=0)

    def results(self) -> dict[str, Any]:
        curve = self.curve()
        return {
            "max_f": float(curve.max()),
            "mean_f": float(curve.mean()),
            "adaptive_f": float(np.mean(self.adaptive)),
        }

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean precision and mean recall at thresholds 0..255, for PR plots."""
        self._need(self.curves)
        return np.mean(self.precisions, axis=0), np.mean(self.recalls, axis=0)


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    """The S-measure's single-window SSIM of one block (Fan et al. 2017)."""
    n = x.size
    if n == 0:
        return 0.0
    mx, my = float(x.mean()), float(y.mean())
    if n > 1:
        dx, dy = x - mx, y - my
        sx, sy, sxy = float((dx * dx).sum()) / (n - 1), float((dy * dy).sum()) / (n - 1), float((dx * dy).sum()) / (n - 1)
    else:
        sx = sy = sxy = 0.0
    a = 4.0 * mx * my * sxy
    b = (mx * mx + my * my) * (sx + sy)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


def _object_score(x: np.ndarray) -> float:
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def s_measure(p: np.ndarray, g: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure of one prepared image pair."""
    y = float(g.mean())
    if y == 0:
        return 1.0 - float(p.mean())
    if y == 1:
        return float(p.mean())
    s_object = y * _object_score(p[g]) + (1 - y) * _object_score(1.0 - p[~g])
    # Region term: split at the ground truth's centroid (1-based rounding as in the reference, so the
    # top/left blocks contain the centroid's row/column), SSIM per block, weighted by block area.
    h, w = g.shape
    ys, xs = np.nonzero(g)
    cx = min(int(np.floor(xs.mean() + 0.5)) + 1, w)
    cy = min(int(np.floor(ys.mean() + 0.5)) + 1, h)
    gf = g.astype(np.float64)
    s_region = 0.0
    for rows in (slice(0, cy), slice(cy, h)):
        for cols in (slice(0, cx), slice(cx, w)):
            block = p[rows, cols]
            s_region += block.size / (h * w) * _ssim(block, gf[rows, cols])
    return alpha * s_object + (1 - alpha) * s_region


class SMeasure(_Metric):
    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha
        self.values: list[float] = []

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        self.values.append(s_measure(p, g, self.alpha))

    def results(self) -> dict[str, float]:
        self._need(self.values)
        return {"s_measure": float(np.mean(self.values))}


def _enhanced_alignment(tp: np.ndarray, fp: np.ndarray, n_pos: float, n: float) -> np.ndarray:
    """E-measure of binary maps given only their confusion counts (arrays over thresholds).

    After centring, a pixel's alignment depends only on its (prediction, truth) pair, so the
    enhanced-alignment sum is four counts times four values.
    """
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    if n_pos == 0:
        return (n - tp - fp) / n  # enhanced = 1 - FM: the true negatives
    if n_pos == n:
        return tp / n  # enhanced = FM
    fn, tn = n_pos - tp, (n - n_pos) - fp
    p_fm, p_gt = (tp + fp) / n, n_pos / n  # means of the binary prediction and the truth

    def enhanced(a: np.ndarray, b: float) -> np.ndarray:
        align = 2.0 * a * b / (a * a + b * b + EPS)
        return (align + 1.0) ** 2 / 4.0

    total = (
        tp * enhanced(1 - p_fm, 1 - p_gt)
        + fp * enhanced(1 - p_fm, -p_gt)
        + fn * enhanced(-p_fm, 1 - p_gt)
        + tn * enhanced(-p_fm, -p_gt)
    )
    return total / n


class EMeasure(_Metric):
    def __init__(self) -> None:
        self.curves: list[np.ndarray] = []
        self.adaptive: list[float] = []

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        n_pos, n = float(g.sum()), float(g.size)
        self.curves.append(_enhanced_alignment(*_counts_at_thresholds(_quantise(p), g), n_pos, n))
        binary = _adaptive_binary(p)
        self.adaptive.append(float(_enhanced_alignment(np.sum(binary & g), np.sum(binary & ~g), n_pos, n)))

    def results(self) -> dict[str, float]:
        self._need(self.curves)
        curve = np.mean(self.curves, axis=0)
        return {"e_measure": float(curve.mean()), "max_e": float(curve.max()), "adaptive_e": float(np.mean(self.adaptive))}


def _gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    r = (size - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return k / k.sum()


def weighted_f(p: np.ndarray, g: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted Fβ of one prepared image pair (Margolin et al. 2014)."""
    if not g.any():
        return 1.0 - float(p.mean())
    if g.all():  # no background: the reference's zero-padded blur would reward even an empty prediction
        return float(p.mean())
    err = np.abs(p - g)
    not_gt = (~g).astype(np.uint8)  # zero on the object: distances are to the nearest object pixel
    dist = cv2.distanceTransform(not_gt, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    # Which object pixel is nearest: OpenCV labels every zero pixel; map each label to its pixel.
    _, labels = cv2.distanceTransformWithLabels(not_gt, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL)
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[labels[g]] = np.flatnonzero(g)
    err_t = err.copy()
    err_t[~g] = err.ravel()[lookup[labels[~g]]]  # background pixels take the error of their nearest object pixel
    # Zero padding at the border, like MATLAB's imfilter default used by the reference code.
    err_a = cv2.filter2D(err_t, cv2.CV_64F, _gaussian_kernel(), borderType=cv2.BORDER_CONSTANT)
    min_err = np.where(g & (err_a < err), err_a, err)
    weight = np.ones_like(err)
    weight[~g] = 2.0 - np.exp(np.log(0.5) / 5.0 * dist[~g])
    err_w = min_err * weight
    tp_w = float(g.sum()) - float(err_w[g].sum())
    fp_w = float(err_w[~g].sum())
    recall = 1.0 - float(err_w[g].mean())
    precision = tp_w / (tp_w + fp_w + EPS)
    return (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)


class WeightedFMeasure(_Metric):
    def __init__(self, beta2: float = 1.0) -> None:
        self.beta2 = beta2
        self.values: list[float] = []

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        self.values.append(weighted_f(p, g, self.beta2))

    def results(self) -> dict[str, float]:
        self._need(self.values)
        return {"weighted_f": float(np.mean(self.values))}


class SODMetrics:
    """All metrics at once: ``step(pred, gt)`` per image, ``results()`` -> dict of floats."""

    def __init__(self) -> None:
        self.mae = MAE()
        self.f = FMeasure()
        self.s = SMeasure()
        self.e = EMeasure()
        self.wf = WeightedFMeasure()
        self.n_images = 0

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        p, g = prepare(pred, gt)  # converted once, shared by every metric
        for metric in (self.mae, self.f, self.s, self.e, self.wf):
            metric.update(p, g)
        self.n_images += 1

    def results(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for metric in (self.f, self.mae, self.s, self.e, self.wf):
            out.update(metric.results())
        out["n_images"] = self.n_images
        return out


def centred_prior(height: int, width: int) -> np.ndarray:
    """The centre-bias baseline: a soft ellipse inscribed in the image, float32 0..1.

    Value 1 − r², r the normalised elliptical radius, so thresholding it at t gives the centred
    ellipse with semi-axes √(1 − t)·(w/2, h/2): maxFβ of this map is that of the best centred ellipse.
    """
    y = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    x = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    return np.clip(1.0 - r2, 0.0, 1.0).astype(np.float32)
