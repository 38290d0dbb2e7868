"""runtime.codecs: JPEG decoding identical to OpenCV's (EXIF orientations too), the PNG writer, fallbacks."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image
from runtime_helpers import make_tiny_onnx, scene

from runtime import codecs
from runtime.infer import main
from runtime.io import ImageError, jpeg_end, read_image
from runtime.render import RenderOptions, apply_cutout, encode


def exif_segment(orientation: int, order: str = "II") -> bytes:
    """An APP1 'Exif' segment whose IFD0 holds one entry: Orientation (tag 0x0112, SHORT)."""
    e = "<" if order == "II" else ">"
    ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    tiff = order.encode() + struct.pack(e + "HI", 42, 8) + ifd + struct.pack(e + "I", 0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_exif(jpeg: bytes, orientation: int, order: str = "II") -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + exif_segment(orientation, order) + jpeg[2:]


def jpeg_bytes(bgr: np.ndarray, **params: int) -> bytes:
    flags = [cv2.IMWRITE_JPEG_QUALITY, params.pop("quality", 90)]
    for name, value in params.items():
        flags += [getattr(cv2, f"IMWRITE_JPEG_{name.upper()}"), value]
    return cv2.imencode(".jpg", bgr, flags)[1].tobytes()


def opencv_decode(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def photo(height: int = 301, width: int = 457, seed: int = 0) -> np.ndarray:
    """BGR with texture, edges and colour: odd sizes so partial MCUs and odd scaled sizes are exercised."""
    img = cv2.resize(scene(24, 36, seed), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += np.random.default_rng(seed).integers(-12, 12, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@pytest.mark.parametrize(
    "params",
    [{}, {"sampling_factor": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}, {"sampling_factor": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422},
     {"progressive": 1}, {"optimize": 1, "rst_interval": 3}, {"quality": 40}],
)
def test_decode_is_opencvs_pixels(params):
    data = jpeg_bytes(photo(), **params)
    np.testing.assert_array_equal(codecs.decode_jpeg(data, order="bgr"), opencv_decode(data))
    np.testing.assert_array_equal(codecs.decode_jpeg(data, order="rgb"), opencv_decode(data)[..., ::-1])
    for factor, flag in REDUCED.items():
        np.testing.assert_array_equal(codecs.decode_jpeg(data, order="bgr", factor=factor), opencv_decode(data, flag))


@pytest.mark.parametrize("params", [{}, {"progressive": 1}, {"optimize": 1, "rst_interval": 3}, {"quality": 100}])
def test_jpeg_end_walks_every_scan_and_stops_at_the_real_end(params):
    data = jpeg_bytes(photo(), **params)
    assert data.count(b"\xff\x00") > 0  # stuffed bytes in the scans, which are not markers
    tail = b"\xff\xd8\xff\xda\x00\x08junk\xff\xd9"  # marker-like bytes after the end are never looked at
    assert jpeg_end(data + tail) == len(data)
    padded = data[:-2] + b"\xff\xff\xff" + data[-2:]  # fill bytes before the end marker
    assert jpeg_end(padded) == len(padded)
    first_scan = data.index(b"\xff\xda")
    for cut in np.linspace(first_scan + 20, len(data) - 1, 25).astype(int):
        assert jpeg_end(data[:cut]) is None, cut


def test_grayscale_jpeg_decodes_to_opencvs_colour():
    data = jpeg_bytes(photo()[..., 1])
    assert codecs.decode_jpeg(data, order="bgr").shape == (301, 457, 3)
    np.testing.assert_array_equal(codecs.decode_jpeg(data, order="bgr"), opencv_decode(data))


def test_real_photos_upscaled_to_12_mp_decode_like_opencv(tmp_path, sod_dir):
    photos = sorted((sod_dir / "images").glob("*.jpg"))
    for i, path in enumerate(photos[:2]):
        big = cv2.resize(cv2.imread(str(path)), (4032, 3024), interpolation=cv2.INTER_CUBIC)
        data = jpeg_bytes(big, quality=92)
        file = tmp_path / f"{i}.jpg"
        file.write_bytes(data)
        rgb, shape = read_image(file)  # the runtime's own path: header probe, then the fast decoder
        assert shape == (3024, 4032)
        np.testing.assert_array_equal(rgb, opencv_decode(data, cv2.IMREAD_COLOR_RGB))
        small, shape = read_image(file, reduce_to=640)  # the mask mode's DCT-scaled decode: 1/4
        assert shape == (3024, 4032)
        np.testing.assert_array_equal(small, opencv_decode(data, cv2.IMREAD_REDUCED_COLOR_4)[..., ::-1])
    # The original photos themselves (the SOD JPEGs as they are).
    for path in photos[:20]:
        np.testing.assert_array_equal(read_image(path, order="bgr")[0], cv2.imread(str(path)))


def _displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF's definition, written with numpy: where row 0 / column 0 of the stored image are shown."""
    turns = {1: stored, 2: stored[:, ::-1], 3: stored[::-1, ::-1], 4: stored[::-1],
             5: stored.transpose(1, 0, 2), 6: np.rot90(stored, -1), 7: stored[::-1, ::-1].transpose(1, 0, 2), 8: np.rot90(stored, 1)}
    return turns[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("order", ["II", "MM"])
def test_exif_orientations_match_opencv_and_the_standard(tmp_path, orientation, order):
    stored = photo(240, 352, seed=orientation)
    plain = jpeg_bytes(stored, quality=95)
    data = with_exif(plain, orientation, order)
    path = tmp_path / "o.jpg"
    path.write_bytes(data)
    rgb, shape = read_image(path)
    np.testing.assert_array_equal(rgb, opencv_decode(data, cv2.IMREAD_COLOR_RGB))  # what OpenCV does
    np.testing.assert_array_equal(rgb, _displayed(opencv_decode(plain, cv2.IMREAD_COLOR_RGB), orientation))
    assert shape == rgb.shape[:2] == ((352, 240) if orientation >= 5 else (240, 352))
    small, shape = read_image(path, reduce_to=60)  # 240 // 4 = 60: a quarter-scale decode, then turned
    assert shape == ((352, 240) if orientation >= 5 else (240, 352))
    np.testing.assert_array_equal(small, opencv_decode(data, cv2.IMREAD_REDUCED_COLOR_4)[..., ::-1])


def test_files_the_fast_decoder_declines_go_to_opencv(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(photo()[..., ::-1]).convert("CMYK").save(cmyk, quality=90)
    assert codecs.decode_jpeg(cmyk.read_bytes()) is None
    np.testing.assert_array_equal(read_image(cmyk, order="bgr")[0], cv2.imread(str(cmyk)))
    # Damage in the middle of the scan: libjpeg only warns; OpenCV decides, as it did before.
    data = jpeg_bytes(photo())
    data = data[: len(data) // 2] + b"\xff\xd5" + data[len(data) // 2 :]  # a restart marker out of place
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(data)
    assert codecs.decode_jpeg(data) is None
    np.testing.assert_array_equal(read_image(damaged, order="bgr")[0], opencv_decode(data))


@pytest.fixture(params=["fast", "opencv"])
def decoder(request, monkeypatch):
    if request.param == "opencv":
        monkeypatch.setattr(codecs, "simplejpeg", None)
    return request.param


def test_both_decoder_paths_give_the_same_pixels(tmp_path, decoder):
    data = with_exif(jpeg_bytes(photo(), quality=85), 6)
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image(path)[0], opencv_decode(data, cv2.IMREAD_COLOR_RGB))
    np.testing.assert_array_equal(read_image(path, reduce_to=100, order="bgr")[0], opencv_decode(data, cv2.IMREAD_REDUCED_COLOR_2))


@pytest.mark.parametrize("cut", ["header", "scan", "end"])
def test_truncated_and_corrupt_jpegs_are_one_line(tmp_path, decoder, cut):
    data = jpeg_bytes(photo())
    sos = data.find(b"\xff\xda")
    broken = {"header": data[: sos // 2], "scan": data[: (sos + len(data)) // 2], "end": data[:-2]}[cut]
    path = tmp_path / "bad.jpg"
    path.write_bytes(broken)
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message and ("truncated" in message or "corrupt" in message)


def test_garbage_after_a_jpeg_header_is_one_line(tmp_path, decoder):
    data = jpeg_bytes(photo())
    sos = data.find(b"\xff\xda")
    path = tmp_path / "garbage.jpg"
    path.write_bytes(data[: sos + 2] + b"\x00\x00garbage" + b"\xff\xd9")  # a scan header that is nonsense
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


# --- PNG ---


def _cutout(height: int, width: int) -> np.ndarray:
    """BGRA like the runtime writes: a textured photo, a soft-edged object, colours cleared where alpha is 0."""


    bgr = photo(height, width)
    alpha = np.zeros((height, width), np.uint8)
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 3, height // 3), 20, 0, 360, 255, -1)
    return apply_cutout(bgr, cv2.GaussianBlur(alpha, (9, 9), 0), colours="exact")


def _pillow_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(params=["isal+libdeflate", "libdeflate", "opencv"])
def writer(request, monkeypatch):
    if request.param != "isal+libdeflate":
        monkeypatch.setattr(codecs, "isal_zlib", None)
    if request.param == "opencv":
        monkeypatch.setattr(codecs, "deflate", None)
    return request.param


@pytest.mark.parametrize("level", [0, 1, 2, 6, 12])
@pytest.mark.parametrize("shape", [(37, 53, 4), (37, 53, 3), (37, 53), (1, 7, 4), (9, 1, 3)])
def test_png_decodes_to_the_same_pixels_in_opencv_and_pillow(writer, level, shape):
    image = _cutout(*shape[:2])[..., : shape[2] if len(shape) == 3 else 1]
    image = image[..., 0] if len(shape) == 2 else np.ascontiguousarray(image)
    data = codecs.encode_png(image, level)
    np.testing.assert_array_equal(opencv_decode(data, cv2.IMREAD_UNCHANGED), image)
    pil = Image.open(io.BytesIO(data))
    assert pil.mode == {2: "L", 3: "RGB", 4: "RGBA"}[image.shape[2] if image.ndim == 3 else 2]
    rgb_order = {2: None, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}[image.shape[2] if image.ndim == 3 else 2]
    np.testing.assert_array_equal(_pillow_decode(data), image if rgb_order is None else cv2.cvtColor(image, rgb_order))
    pil.verify()  # Pillow checks every chunk's CRC and the zlib stream's end


def test_png_is_no_larger_than_opencv_level_1_on_a_cutout():
    image = _cutout(900, 1200)
    opencv = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])[1]
    default = encode(image, RenderOptions())  # what the CLI writes by default
    assert len(default) <= len(opencv)
    assert len(codecs.encode_png(image, 6)) < len(default)  # higher levels buy smaller files
    assert len(codecs.encode_png(image, 0)) > len(default)  # level 0 buys speed with size


def test_png_is_no_larger_than_opencv_level_1_on_a_real_cutout(sod_dir):


    path = sorted((sod_dir / "images").glob("*.jpg"))[0]
    mask = cv2.imread(str(sod_dir / "masks" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
    bgr = cv2.resize(cv2.imread(str(path)), (2016, 1512), interpolation=cv2.INTER_CUBIC)
    mask = cv2.resize(cv2.GaussianBlur(mask, (5, 5), 0), (2016, 1512), interpolation=cv2.INTER_LINEAR)
    image = apply_cutout(bgr, mask, colours="exact")
    opencv = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])[1]
    data = encode(image, RenderOptions())
    assert len(data) <= len(opencv)
    np.testing.assert_array_equal(opencv_decode(data, cv2.IMREAD_UNCHANGED), image)


def test_png_writer_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="0-12"):
        codecs.encode_png(np.zeros((4, 4), np.uint8), 13)
    with pytest.raises(ValueError, match="uint16"):
        codecs.encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        codecs.encode_png(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("level", ["0", "1", "12"])
def test_cli_png_level_option(tmp_path, capsys, level):
    tiny = make_tiny_onnx(tmp_path / "tiny.onnx")
    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(with_exif(jpeg_bytes(photo(120, 90)), 8))
    code = main(["--engine", str(tiny), str(src), "-o", str(tmp_path / "o"), "--png-level", level])
    assert code == 0, capsys.readouterr().err
    out = opencv_decode((tmp_path / "o" / "a.png").read_bytes(), cv2.IMREAD_UNCHANGED)
    assert out.shape == (90, 120, 4)  # orientation 8: displayed turned, landscape
    shown = opencv_decode(src.read_bytes())
    np.testing.assert_array_equal(out, apply_cutout(shown, out[..., 3], colours="visible"))  # the default colours


def test_cli_rejects_png_levels_out_of_range(tmp_path, capsys):
    tiny = make_tiny_onnx(tmp_path / "tiny.onnx")
    for bad in ("13", "-1", "fast"):
        with pytest.raises(SystemExit) as info:
            main(["--engine", str(tiny), "x.jpg", "--png-level", bad])
        assert info.value.code == 2 and "--png-level" in capsys.readouterr().err
