"""runtime.matting.estimate_foreground on composites whose foreground, background and alpha are known."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.matting import estimate_foreground, work_scale

GREEN = (0, 255, 0)


def textured_foreground(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour waves plus fine noise: a foreground whose colour really varies under the edge."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = 160 / max(height, width)  # the same pattern at every size
    y, x = y * scale, x * scale
    waves = np.stack([130 + 70 * np.sin(x / 9), 110 + 60 * np.cos(y / 7), 150 + 50 * np.sin((x + y) / 11)], -1)
    noise = np.random.default_rng(seed).normal(0, 6, waves.shape)
    return np.clip(waves + noise, 0, 255).round().astype(np.uint8)


def ramp_alpha(height: int, width: int, ramp: float) -> np.ndarray:
    """A disc, opaque inside, fading to 0 over ``ramp`` pixels (as a blurred or upscaled mask does)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot(y - height / 2, x - width / 2)
    edge = 0.3 * min(height, width)
    return np.clip((edge + ramp / 2 - distance) / ramp * 255, 0, 255).round().astype(np.uint8)


def composite(f: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float32) / 255
    return (a * f + (1 - a) * b).round().astype(np.uint8)


def edge_error(estimate: np.ndarray, truth: np.ndarray, alpha: np.ndarray) -> float:
    """Mean |a*F^ - a*F| over the soft band in levels: the error a re-composite over any background shows."""
    band = (alpha > 0) & (alpha < 255)
    a = alpha[band][:, None].astype(np.float32) / 255
    return float(np.mean(a * np.abs(estimate[band].astype(np.float32) - truth[band].astype(np.float32))))


@pytest.fixture(scope="module")
def green_screen() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true foreground, alpha, photographed image) over pure green, 160 x 200, a 12-pixel ramp."""
    f = textured_foreground(160, 200)
    alpha = ramp_alpha(160, 200, 12)
    return f, alpha, composite(f, np.full_like(f, GREEN), alpha)


def test_soft_band_error_is_well_below_keeping_the_photo(green_screen):
    f, alpha, image = green_screen
    kept = edge_error(image, f, alpha)  # no decontamination: the green stays in the edge
    cleaned = edge_error(estimate_foreground(image, alpha), f, alpha)
    assert kept > 20  # the test means something: green really bleeds in
    assert cleaned < 0.1 * kept


def test_large_image_takes_the_work_grid_path_and_still_cleans(tmp_path):
    """1600 x 1200 is shrunk 4x for the smooth estimates: the upsampling and tiling must line up."""
    f = textured_foreground(1200, 1600)
    alpha = ramp_alpha(1200, 1600, 80)  # the same disc as the small one, scaled
    image = composite(f, np.full_like(f, GREEN), alpha)
    assert work_scale(*alpha.shape) == 4
    out = estimate_foreground(image, alpha)
    assert edge_error(out, f, alpha) < 0.1 * edge_error(image, f, alpha)
    np.testing.assert_array_equal(out[alpha == 255], image[alpha == 255])


def test_working_only_near_the_soft_band_changes_nothing(monkeypatch):
    """The narrow passes run on a window around the soft pixels: the same result as on the whole grid."""
    from runtime import matting

    f = textured_foreground(600, 800)
    alpha = ramp_alpha(600, 800, 40)
    image = composite(f, np.full_like(f, GREEN), alpha)
    windowed = estimate_foreground(image, alpha)
    monkeypatch.setattr(matting, "_window", lambda runs, k, shape: (0, shape[0], 0, shape[1]))
    np.testing.assert_array_equal(estimate_foreground(image, alpha), windowed)


def test_opaque_pixels_come_back_bit_for_bit():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    alpha = rng.choice(np.array([0, 1, 77, 128, 254, 255], np.uint8), size=(90, 130))
    out = estimate_foreground(image, alpha)
    opaque = alpha == 255
    assert opaque.sum() > 1000
    np.testing.assert_array_equal(out[opaque], image[opaque])


def test_shape_dtype_and_inputs_left_alone(green_screen):
    _, alpha, image = green_screen
    image_before, alpha_before = image.copy(), alpha.copy()
    out = estimate_foreground(image, alpha)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(alpha, alpha_before)


def test_channel_order_does_not_matter(green_screen):
    """The channels are treated alike; only float rounding of the sum over them may differ (by 1 level)."""
    _, alpha, image = green_screen
    bgr = np.ascontiguousarray(image[..., ::-1])
    difference = np.abs(estimate_foreground(bgr, alpha)[..., ::-1].astype(int) - estimate_foreground(image, alpha))
    assert difference.max() <= 1 and np.count_nonzero(difference) < 1e-3 * difference.size


@pytest.mark.parametrize("value", [0, 255])
def test_alpha_all_transparent_or_all_opaque_returns_the_image(value):
    image = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = estimate_foreground(image, np.full((40, 50), value, np.uint8))
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (3, 3), (2000, 3), (3, 2000)])
def test_tiny_and_thin_images(shape):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, shape, dtype=np.uint8)
    out = estimate_foreground(image, alpha)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[alpha == 255], image[alpha == 255])


IMAGE = np.zeros((8, 10, 3), np.uint8)
ALPHA = np.zeros((8, 10), np.uint8)


@pytest.mark.parametrize(("image", "alpha", "words"), [
    (IMAGE.astype(np.float32), ALPHA, "uint8"),
    (IMAGE, ALPHA.astype(np.uint16), "uint8"),
    (IMAGE, ALPHA.astype(bool), "uint8"),
    (IMAGE[..., 0], ALPHA, "H x W x 3"),
    (np.zeros((8, 10, 4), np.uint8), ALPHA, "H x W x 3"),
    (IMAGE, ALPHA[:, :9], "8x10"),
    (IMAGE, ALPHA[..., None], "8x10"),
    (IMAGE.tolist(), ALPHA, "numpy"),
    (IMAGE, None, "numpy"),
])  # fmt: skip
def test_bad_input_is_one_clear_value_error(image, alpha, words):
    with pytest.raises(ValueError, match=words) as caught:
        estimate_foreground(image, alpha)
    assert "\n" not in str(caught.value)


def test_no_worse_than_pymatting_as_rembg_calls_it(green_screen):
    """rembg's ``decontaminate=True`` runs pymatting's estimate_foreground_ml on 0..1 floats."""
    ml = pytest.importorskip("pymatting.foreground.estimate_foreground_ml")
    f, alpha, image = green_screen
    theirs = ml.estimate_foreground_ml(image / 255.0, alpha / 255.0)
    theirs = np.clip(theirs * 255, 0, 255).astype(np.uint8)  # as rembg rounds it
    assert edge_error(estimate_foreground(image, alpha), f, alpha) <= edge_error(theirs, f, alpha)
