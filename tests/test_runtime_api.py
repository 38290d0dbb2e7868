"""runtime.api: Remover on real ONNX Runtime sessions (a tiny hand-built model and an exported U²-NetP)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from random_u2netp import one_torch_thread
from runtime_helpers import TINY_SIZE, encoded, make_tiny_onnx, save, scene

from runtime.api import Remover, apply_composite, apply_cutout, check_color, fit_background, parse_color
from runtime.backends import BackendError
from runtime.preprocess import PreprocessSpec, normalize, postprocess, preprocess, resize_to_input


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


@pytest.fixture(scope="module")
def remover(tiny):
    with Remover(tiny, provider="cpu", threads=1) as r:
        yield r


@pytest.mark.parametrize("spec", [PreprocessSpec(), PreprocessSpec(divide_by_max=False),
                                  PreprocessSpec(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))])
@pytest.mark.parametrize("top", [256, 37, 1])  # full range, a dark image, an all-black one
def test_normalize_of_uint8_is_the_float_arithmetic_bit_for_bit(spec, top):
    """The 256-entry table normalize uses for uint8 images gives exactly the official steps' numbers."""
    image = np.random.default_rng(top).integers(0, top, (33, 47, 3), dtype=np.uint8)
    x = image.astype(np.float32)
    x /= (float(x.max()) or 1.0) if spec.divide_by_max else 255.0
    x = ((x - np.float32(spec.mean)) / np.float32(spec.std)).transpose(2, 0, 1)
    out = normalize(image, spec)
    assert out.dtype == np.float32 and out.shape == (3, 33, 47) and out.flags.c_contiguous
    assert np.array_equal(out, x)
    assert np.array_equal(normalize(image.astype(np.float32), spec), x)  # the float path: same numbers


def _photo(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth colour regions with sensor-like noise: what a resize has to keep and what it has to drop."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(96, 150), (64, 180), (150, 96), (190, 190), (80, 70)])
def test_resize_is_the_official_skimage_resize(shape):
    """u2net_test.py resizes with skimage.transform.resize(image, (S, S), mode="constant"), anti-aliased:
    the same numbers up to the rounding to 8 bits, for shrinks up to SKIMAGE_RECIPE_UP_TO (and growth)."""
    transform = pytest.importorskip("skimage.transform")
    image = _photo(*shape)
    official = transform.resize(image, (64, 64), mode="constant", anti_aliasing=True) * 255
    diff = np.abs(resize_to_input(image, 64) - official)
    assert diff.mean() < 0.35 and diff.max() < 1.5  # OpenCV's fixed-point filters: a level at worst
    area = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)  # what stood in for it before
    assert np.abs(area - official).mean() > 2 * diff.mean()  # so this test tells the two apart


def test_resize_averages_areas_past_large_shrinks():
    """Beyond a 3x shrink skimage's Gaussian would cost 10x area averaging on a 12 MP photo: that is used."""
    image = _photo(300, 400)
    np.testing.assert_array_equal(resize_to_input(image, 64), cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))
    square = np.ascontiguousarray(image[:64, :64])
    assert resize_to_input(square, 64) is square  # already the model's size: untouched


def test_postprocess_makes_8_bit_as_the_official_script_does():
    """u2net_test.py saves Image.fromarray(normPRED(map) * 255).convert("RGB"): Pillow truncates."""
    from PIL import Image

    prediction = np.random.default_rng(0).uniform(0.1, 0.9, (1, 31, 29)).astype(np.float32)
    lo, hi = prediction.min(), prediction.max()
    official = np.asarray(Image.fromarray((prediction[0] - lo) / (hi - lo) * 255).convert("RGB"))[..., 0]
    mask = postprocess(prediction, (31, 29))
    np.testing.assert_array_equal(mask, official)
    rounded = np.clip((prediction[0] - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
    assert (mask != rounded).mean() > 0.3  # the test tells truncation from rounding
    assert mask.min() == 0 and mask.max() == 255


def test_mask_finds_the_bright_object(remover):
    img = scene(48, 72)
    mask = remover.mask(img)
    assert mask.dtype == np.uint8 and mask.shape == (48, 72)
    inside, outside = mask[10:20, 14:30], mask[30:, 40:]
    assert inside.min() > 200 and outside.max() < 60
    assert mask.min() <= 5 and mask.max() >= 250  # min-max normalised per image (then resized)


def test_mask_is_the_official_pipeline_on_the_engine(remover, tiny):
    """The API feeds the engine exactly preprocess(...) and returns exactly postprocess(...)."""
    import onnxruntime as ort

    img = scene(90, 60, seed=3)
    session = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"])
    prob = session.run(["mask"], {"image": preprocess([img], PreprocessSpec(size=TINY_SIZE))})[0][0]
    np.testing.assert_array_equal(remover.mask(img), postprocess(prob, (90, 60)))


def test_cutout_is_straight_alpha_with_original_colours(remover):
    img = scene(40, 50, seed=1)
    rgba = remover.cutout(img)
    assert rgba.shape == (40, 50, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], img)
    np.testing.assert_array_equal(rgba[..., 3], remover.mask(img))


def test_composite_over_colour_and_image(remover, tmp_path):
    img = scene(40, 50, seed=2)
    mask = remover.mask(img).astype(np.float32)[..., None] / 255
    out = remover.composite(img, "#00ff00")
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    expected = img * mask + np.array([0, 255, 0], np.float32) * (1 - mask)
    assert np.abs(out - expected).max() <= 1

    bg = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for background in (bg, save(tmp_path / "bg.png", bg), encoded(bg)):
        out = remover.composite(img, background)
        assert np.abs(out - (img * mask + bg * (1 - mask))).max() <= 1
    assert remover.composite(img, (10, 20, 30)).shape == (40, 50, 3)


def test_inputs_paths_bytes_and_odd_arrays(remover, tmp_path):
    img = scene(30, 40)
    reference = remover.mask(img)
    np.testing.assert_array_equal(remover.mask(save(tmp_path / "x.png", img)), reference)
    np.testing.assert_array_equal(remover.mask(str(tmp_path / "x.png")), reference)
    np.testing.assert_array_equal(remover.mask(encoded(img)), reference)
    np.testing.assert_array_equal(remover.mask(bytearray(encoded(img))), reference)
    np.testing.assert_array_equal(remover.mask(memoryview(encoded(img))), reference)
    assert remover.cutout(memoryview(encoded(img))).shape == (30, 40, 4)
    np.testing.assert_array_equal(remover.mask(np.dstack([img, np.zeros((30, 40), np.uint8)])), reference)
    np.testing.assert_array_equal(remover.mask(img.astype(np.uint16) << 8), reference)
    assert remover.mask(img[..., 0]).shape == (30, 40)  # gray array
    with pytest.raises(TypeError, match="expected an RGB array"):
        remover.mask(42)


def test_batches_equal_single_images(tiny):
    images = [scene(30 + 7 * i, 40 + 5 * i, seed=i) for i in range(5)]
    with Remover(tiny, batch_size=1) as one, Remover(tiny, batch_size=3) as three:
        assert three.batch_size == 3
        for a, b in zip(one.masks(images), three.masks(images), strict=True):
            np.testing.assert_array_equal(a, b)


def test_fixed_batch_engine_caps_the_batch(tmp_path):
    engine = make_tiny_onnx(tmp_path / "b1.onnx", batch=1)
    with Remover(engine, batch_size=8) as r:
        assert r.batch_size == 1
        assert [m.shape for m in r.masks([scene(), scene(20, 30)])] == [(48, 72), (20, 30)]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("missing.onnx", {}, "missing.onnx: no such engine file"),
        ("model.txt", {}, "model.txt: unknown engine type '.txt'"),
        ("tiny.onnx", {"provider": "cuda"}, "tiny.onnx: provider 'cuda' is not available"),
        ("tiny.onnx", {"provider": "gpu"}, "tiny.onnx: unknown provider 'gpu'"),
    ],
)
def test_engine_errors_are_one_line(tiny, name, kwargs, message):
    import onnxruntime as ort

    if "cuda" in str(kwargs) and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError) as err:
        Remover(tiny.with_name(name), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_corrupt_and_incompatible_engines(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(BackendError, match="corrupt.onnx: cannot load ONNX model"):
        Remover(corrupt)
    two = make_tiny_onnx(tmp_path / "two.onnx", out_channels=2)
    with pytest.raises(BackendError, match=r"two.onnx: engine returns shape \(1, 2, 64, 64\)"):
        Remover(two)


def test_colours_and_backgrounds():
    assert parse_color("white") == (255, 255, 255)
    assert parse_color(" Green ") == (0, 255, 0)
    assert parse_color("#1A2b3C") == (26, 43, 60)
    assert parse_color("#fa0") == (255, 170, 0)
    assert parse_color("1, 2,3") == (1, 2, 3)
    for bad in ("chartreuse-ish", "#12345", "1,2", "1,2,300", "\u0663,0,0", "\u00b2,0,0", "+1,2,3", "1_0,2,3"):
        with pytest.raises(ValueError, match="not a colour"):  # only ASCII digits: not '٣' (3) nor '²'
            parse_color(bad)
    for bad in ((True, False, True), (1.0, 2, 3), (1, 2), (-1, 0, 0), "255,0,0"):
        with pytest.raises(ValueError, match="not a colour"):
            check_color(bad)
    assert check_color((np.uint8(1), 2, np.int64(3))) == (1, 2, 3)
    # Cover without distortion: a 10x40 strip onto 20x20 is scaled x2 and centre-cropped.
    strip = np.zeros((10, 40, 3), np.uint8)
    strip[:, 18:22] = 255  # -> columns 36..44 of 80, i.e. 6..14 of the centre crop
    fitted = fit_background(strip, (20, 20))
    assert fitted.shape == (20, 20, 3) and fitted[:, 0].max() == 0 and fitted[:, 10].min() == 255


def test_helpers_on_bgr_order():
    """The helpers are channel-order agnostic: the file pipeline uses them on BGR."""
    bgr = scene()[..., ::-1].copy()
    mask = np.zeros(bgr.shape[:2], np.uint8)
    mask[:10] = 255
    mask[10:20] = 128
    rgba = apply_cutout(bgr, mask, colours="exact")
    np.testing.assert_array_equal(rgba[:20, :, :3], bgr[:20])
    assert rgba[20:].max() == 0  # invisible pixels stored as (0, 0, 0, 0)
    over = apply_composite(bgr, mask, (1, 2, 3))
    np.testing.assert_array_equal(over[:10], bgr[:10])
    assert (over[20:] == (1, 2, 3)).all()


def _over(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """What a viewer shows: straight-alpha ``rgba`` over ``background``, before rounding."""
    alpha = rgba[..., 3:].astype(np.float64) / 255
    return rgba[..., :3] * alpha + background * (1 - alpha)


def test_visible_colours_composite_within_one_level_of_the_exact_ones():
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = np.tile(np.arange(256, dtype=np.uint8), (256, 1))  # every alpha, every colour per alpha
    exact = apply_cutout(colour, mask, colours="exact")
    visible = apply_cutout(colour, mask, colours="visible")
    np.testing.assert_array_equal(visible[..., 3], mask)  # the alpha is never touched
    np.testing.assert_array_equal(visible[:, 255, :3], colour[:, 255])  # opaque pixels keep every bit
    assert visible[:, 0].max() == 0  # fully transparent ones keep none
    for background in (np.zeros(3), np.full(3, 255.0), rng.integers(0, 256, (256, 256, 3)).astype(np.float64)):
        assert np.abs(_over(visible, background) - _over(exact, background)).max() < 0.89
    # Fewer distinct colours where alpha is low is what makes the files smaller.
    assert len(np.unique(visible[:, 1, :3])) == 2 and len(np.unique(visible[:, 3, :3])) == 4
    np.testing.assert_array_equal(visible[:, 128:, :3], colour[:, 128:])  # alpha >= 128: all 8 bits show


def test_apply_cutout_names_the_colour_choices():
    with pytest.raises(ValueError, match="original, exact, visible"):
        apply_cutout(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), colours="premultiplied")


def test_exported_u2netp_matches_pytorch(random_u2netp):
    import torch

    u2netp_model, u2netp_file = random_u2netp.model, random_u2netp.fp32
    images = [scene(50, 70, seed=4), scene(64, 64, seed=5), scene(33, 90, seed=6)]
    spec = PreprocessSpec(size=random_u2netp.size)
    with torch.no_grad(), one_torch_thread():
        probs = u2netp_model(torch.from_numpy(preprocess(images, spec))).numpy()
    with Remover(u2netp_file, batch_size=2, precision="fp32") as r:  # any backend, FP32 compute
        assert r.spec == spec
        got = r.masks(images)
        single = [r.mask(img) for img in images]
    for g, s, p, img in zip(got, single, probs, images, strict=True):
        np.testing.assert_array_equal(g, s)  # batch 2 == batch 1
        assert np.abs(g.astype(int) - postprocess(p, img.shape[:2])).max() <= 2


def test_runtime_never_imports_torch():
    code = (
        "import sys, runtime.infer, runtime.api, runtime.pipeline, runtime.io; "
        "bad = [m for m in ('torch', 'train', 'export') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
