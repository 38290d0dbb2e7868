"""runtime.io: header probing, safe decoding (EXIF, odd pixel formats, bombs, corrupt files), atomic writes."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from runtime_helpers import save, scene

from runtime.io import ImageError, probe, read_image, write_atomic
from runtime.render import RenderOptions, encode


@pytest.mark.parametrize(
    ("suffix", "fmt", "kwargs", "name"),
    [
        (".jpg", "JPEG", {}, "JPEG"),
        (".png", "PNG", {}, "PNG"),
        (".webp", "WEBP", {"quality": 80}, "WebP"),  # VP8 (lossy)
        (".webp", "WEBP", {"lossless": True}, "WebP"),  # VP8L
        (".bmp", "BMP", {}, "BMP"),
        (".gif", "GIF", {}, "GIF"),
        (".tif", "TIFF", {"compression": "tiff_lzw"}, "TIFF"),
        (".ppm", "PPM", {}, "PNM"),
    ],
)
def test_probe_and_read_every_format(tmp_path, suffix, fmt, kwargs, name):
    img = scene(37, 53)
    path = save(tmp_path / f"x{suffix}", img, fmt, **kwargs)
    info = probe(path)
    assert (info.format, info.width, info.height) == (name, 53, 37)
    decoded, shape = read_image(path)
    assert decoded.shape == (37, 53, 3) and decoded.dtype == np.uint8 and shape == (37, 53)
    if fmt in ("PNG", "BMP", "TIFF", "PPM"):  # lossless formats come back exactly, in RGB order
        np.testing.assert_array_equal(decoded, img)


def test_probe_webp_with_alpha_uses_extended_header(tmp_path):
    rgba = np.dstack([scene(30, 41), np.full((30, 41), 128, np.uint8)])
    path = save(tmp_path / "a.webp", rgba, "WEBP", quality=70)
    assert path.read_bytes()[12:16] == b"VP8X"
    assert (probe(path).width, probe(path).height) == (41, 30)


def _exif_jpeg(path, rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # stored: left half white
    path = _exif_jpeg(tmp_path / "rot.jpg", img, 6)  # 6 = display rotated 90° clockwise
    info = probe(path)
    assert info.orientation == 6 and info.shape == (40, 20)
    decoded, shape = read_image(path)
    assert decoded.shape == (40, 20, 3) and shape == (40, 20)
    assert decoded[:15].min() > 200 and decoded[25:].max() < 50  # the white half is now on top


def test_the_first_exif_block_says_the_orientation(tmp_path):
    """Two EXIF blocks (an editor added one): decoders read the first, and so does the header check."""
    data = _exif_jpeg(tmp_path / "one.jpg", scene(20, 40), 6).read_bytes()
    second = Image.Exif()
    second[0x0112] = 1
    payload = b"Exif\x00\x00" + second.tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    first = data.index(b"\xff\xe1")
    after_first = first + 2 + struct.unpack(">H", data[first + 2 : first + 4])[0]
    twice = tmp_path / "two.jpg"
    twice.write_bytes(data[:after_first] + app1 + data[after_first:])
    assert probe(twice).orientation == 6
    assert read_image(twice)[0].shape == (40, 20, 3)
    assert read_image(twice)[0].shape == cv2.imread(str(twice)).shape


def _bigtiff(path, width: int, height: int, orientation: int | None = None) -> bytes:
    """A little-endian BigTIFF: the 16-byte header and one IFD of LONG8/SHORT entries (no strips: header only)."""
    entries = [(256, 16, width), (257, 16, height)] + ([(274, 3, orientation)] if orientation else [])
    ifd = struct.pack("<Q", len(entries)) + b"".join(struct.pack("<HHQQ", tag, kind, 1, value)
                                                     for tag, kind, value in entries) + struct.pack("<Q", 0)
    path.write_bytes(b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd)
    return path


def test_bigtiff_pfm_and_tiff_orientation_are_read_from_the_header(tmp_path):
    info = probe(_bigtiff(tmp_path / "big.tif", 70_000, 50_000, orientation=6))
    assert (info.format, info.width, info.height, info.shape) == ("TIFF", 70_000, 50_000, (70_000, 50_000))
    with pytest.raises(ImageError, match=r"big\.tif: 70000x50000 = 3500\.0 MP exceeds the limit"):
        read_image(tmp_path / "big.tif")
    rotated = save(tmp_path / "r.tif", scene(37, 53), "TIFF", tiffinfo={274: 6})
    assert probe(rotated).orientation == 6 and probe(rotated).shape == (53, 37)
    (tmp_path / "x.pfm").write_bytes(b"PF\n53 37\n-1.0\n" + np.zeros((37, 53, 3), "<f4").tobytes())
    assert (probe(tmp_path / "x.pfm").width, probe(tmp_path / "x.pfm").height) == (53, 37)


def test_a_gif_frame_larger_than_its_screen_counts(tmp_path):
    """A 1x1 logical screen carrying a 30000x30000 first frame is a 900 MP image, refused from the header."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)  # 1x1, no colour table
    comment = b"\x21\xfe\x03abc\x00"  # an extension before the frame is walked past
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 30_000, 30_000, 0) + b"\x02\x02\x4c\x01\x00"
    (tmp_path / "g.gif").write_bytes(screen + comment + frame + b"\x3b")
    assert (probe(tmp_path / "g.gif").width, probe(tmp_path / "g.gif").height) == (30_000, 30_000)
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(tmp_path / "g.gif")


def test_reduced_jpeg_decode_keeps_full_size_and_orientation(tmp_path):
    img = cv2.resize(scene(48, 64), (640, 480), interpolation=cv2.INTER_NEAREST)
    plain = save(tmp_path / "p.jpg", img, "JPEG", quality=95)
    small, shape = read_image(plain, reduce_to=100)  # 480 // 4 = 120 >= 100, 480 // 8 = 60 < 100
    assert small.shape == (120, 160, 3) and shape == (480, 640)
    full, _ = read_image(plain)
    ref = cv2.resize(full, (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - ref).mean() < 4  # the same picture, just decoded smaller

    rotated = _exif_jpeg(tmp_path / "r.jpg", img, 8)
    small, shape = read_image(rotated, reduce_to=100)
    assert small.shape == (160, 120, 3) and shape == (640, 480)
    # Non-JPEG formats and small images are decoded at full size.
    png = save(tmp_path / "p.png", img)
    assert read_image(png, reduce_to=100)[0].shape == (480, 640, 3)
    assert read_image(plain, reduce_to=400)[0].shape == (480, 640, 3)


def test_odd_pixel_formats_become_8bit_rgb(tmp_path):
    gray = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    out, _ = read_image(save(tmp_path / "g.png", gray, mode="L"))
    assert out.shape == (24, 32, 3) and all((out[..., c] == gray).all() for c in range(3))

    rgb = scene(24, 32)
    rgba = np.dstack([rgb, np.full((24, 32), 7, np.uint8)])
    out, _ = read_image(save(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(out, rgb)  # alpha dropped, colours kept

    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "p.png")
    out, _ = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))

    wide = (gray.astype(np.uint16) << 8) | 0xAB  # 16-bit: the high byte is the 8-bit value
    ok, buf = cv2.imencode(".png", wide)
    (tmp_path / "w.png").write_bytes(buf.tobytes())
    out, _ = read_image(tmp_path / "w.png")
    assert out.dtype == np.uint8 and np.abs(out[..., 0].astype(int) - gray).max() <= 1


def test_read_bytes(tmp_path):
    img = scene()
    data = save(tmp_path / "x.png", img).read_bytes()
    np.testing.assert_array_equal(read_image(data)[0], img)
    np.testing.assert_array_equal(read_image(data, order="bgr")[0], img[..., ::-1])


def _png_bomb(path, width, height):
    """A valid PNG signature and IHDR declaring a huge image, followed by a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 4096)
    body = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + body)
    return path


def _jpeg_declaring(path, width, height):
    """A real small JPEG whose frame header is patched to declare another size."""
    data = bytearray(save(path, scene(16, 16), "JPEG").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    bomb = _png_bomb(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 GP: 10.8 GB of RGB if decoded
    with pytest.raises(ImageError, match=r"bomb\.png: 60000x60000 = 3600\.0 MP exceeds the limit of 100 MP"):
        read_image(bomb)
    jpeg = _jpeg_declaring(tmp_path / "big.jpg", 20_000, 10_000)
    assert (probe(jpeg).width, probe(jpeg).height) == (20_000, 10_000)
    with pytest.raises(ImageError, match=r"big\.jpg: .*exceeds the limit of 50 MP"):
        read_image(jpeg, max_pixels=50_000_000)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.png", b"just some text, not a picture\n", "not a supported image"),
        ("noise.jpg", bytes(range(256)) * 4, "not a supported image"),
        ("short.png", b"\x89PNG\r\n\x1a\n\x00\x00", "truncated header"),
        ("bad.jpg", b"\xff\xd8\xff\xe0\x00\x01", "corrupt JPEG"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=rf"^{tmp_path / name}: .*{problem}"):
        read_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_errors_not_grey_pictures(tmp_path, fmt):
    data = save(tmp_path / "full", scene(64, 64), fmt).read_bytes()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match=rf"cut\.{fmt.lower()}: .*(truncated|corrupt)"):
        read_image(path)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_default_png_level_is_chosen_per_kind_of_image():
    """Masks go to the fastest writer (ISA-L), colours to libdeflate's level 1; a level given is used for both."""
    from runtime import codecs

    mask = np.linspace(0, 255, 48 * 72).reshape(48, 72).astype(np.uint8)
    bgra = np.dstack([scene()[..., ::-1], mask])
    assert encode(mask, RenderOptions()) == codecs.encode_png(mask, 0)
    assert encode(mask[..., None], RenderOptions()) == codecs.encode_png(mask[..., None], 0)
    assert encode(bgra, RenderOptions()) == codecs.encode_png(bgra, 1)
    assert encode(bgra[..., :3], RenderOptions()) == codecs.encode_png(bgra[..., :3], 1)
    assert codecs.encode_png(mask, 0) != codecs.encode_png(mask, 1)  # the two writers really differ
    assert encode(mask, RenderOptions(png_level=4)) == codecs.encode_png(mask, 4)
    assert encode(bgra, RenderOptions(png_level=0)) == codecs.encode_png(bgra, 0)


def test_encode_options_roundtrip():
    bgra = np.dstack([scene()[..., ::-1], np.linspace(0, 255, 48 * 72).reshape(48, 72).astype(np.uint8)])
    for level in (0, 1, 9):
        data = encode(bgra, RenderOptions(png_level=level))
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), bgra)
    lossless = encode(bgra, RenderOptions(format="webp", quality=100))
    back = cv2.imdecode(np.frombuffer(lossless, np.uint8), cv2.IMREAD_UNCHANGED)
    visible = bgra[..., 3] > 0  # libwebp drops the invisible colours of fully transparent pixels
    np.testing.assert_array_equal(back[visible], bgra[visible])
    np.testing.assert_array_equal(back[..., 3], bgra[..., 3])
    lossy = encode(bgra, RenderOptions(format="webp", quality=60))
    assert lossy[8:12] == b"WEBP" and len(lossy) < len(lossless)
    with pytest.raises(ValueError, match="unknown output format"):
        RenderOptions(format="jpeg")


def test_write_atomic_leaves_no_partial_files(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "er" / "m.png"
    write_atomic(target, encode(np.full((4, 5), 9, np.uint8), RenderOptions()))
    assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED).shape == (4, 5)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.png"]

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageError, match=r"file/m\.png: cannot write"):
        write_atomic(blocker / "m.png", b"data")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ImageError, match="n.png: cannot write: No space left on device"):
        write_atomic(tmp_path / "n.png", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "file"]  # no temp file, no n.png
