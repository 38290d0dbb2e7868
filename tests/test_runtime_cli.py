"""python -m runtime.infer: real files in, real files out, through real ONNX Runtime sessions."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from runtime_helpers import make_tiny_onnx, save, scene

from runtime.api import Remover, apply_cutout
from runtime.infer import main
from runtime.pipeline import Pipeline, images_alive

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


@pytest.fixture(scope="module")
def api(tiny):
    with Remover(tiny) as r:
        yield r


def run(capsys, *argv) -> tuple[int, list[str]]:
    """Run the CLI in-process; returns (exit status, stderr lines)."""
    code = main([str(a) for a in argv] + ["--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def read(path: Path) -> np.ndarray:
    """A written output as numpy, in RGB(A) order."""
    return np.asarray(Image.open(path))


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_each_mode(tmp_path, capsys, caplog, tiny, api):
    img = scene(48, 72)
    src = save(tmp_path / "in" / "photo.jpg", img, quality=95)
    rgb = api.load(src)  # the decoded JPEG, as the CLI sees it
    mask = api.mask(rgb)

    with caplog.at_level(logging.INFO):
        code, err = run(capsys, "--engine", tiny, src, "-o", tmp_path / "m", "--mode", "mask")
    assert code == 0 and err[-1].startswith("1 ok, 0 failed, 0 skipped")
    from runtime.backends import find_backend

    # What actually runs is logged: the default on a CPU is the fastest backend installed.
    engine = "OpenVINO" if find_backend(tiny).name == "openvino" else "(CPUExecutionProvider)"
    assert f"{engine}" in caplog.text and "tiny.onnx" in caplog.text
    out = Image.open(tmp_path / "m" / "photo.png")
    assert out.mode == "L" and out.size == (72, 48)
    np.testing.assert_array_equal(np.asarray(out), mask)

    code, _ = run(capsys, "--engine", tiny, src, "-o", tmp_path / "c")  # cutout is the default
    rgba = read(tmp_path / "c" / "photo.png")
    assert code == 0 and rgba.shape == (48, 72, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., 3], mask)  # straight alpha = mask
    # Straight (not premultiplied) colours, to the precision the alpha shows (--colours visible).
    np.testing.assert_array_equal(rgba, apply_cutout(rgb, mask, colours="visible"))
    assert rgba[mask == 0].max(initial=0) == 0  # invisible pixels are stored as zeros

    code, _ = run(capsys, "--engine", tiny, src, "-o", tmp_path / "k", "--mode", "composite", "--bg", "0,0,255")
    over = read(tmp_path / "k" / "photo.png")
    a = mask[..., None] / 255.0
    assert code == 0 and over.shape == (48, 72, 3)
    assert np.abs(over - (rgb * a + np.array([0, 0, 255]) * (1 - a))).max() <= 1


def test_composite_over_background_image(tmp_path, capsys, tiny, api):
    src = save(tmp_path / "a.png", scene(48, 72))
    bg = np.random.default_rng(1).integers(0, 255, (96, 144, 3), dtype=np.uint8)  # same aspect, twice as big
    bg_file = save(tmp_path / "bg.png", bg)
    code, _ = run(capsys, "--engine", tiny, src, "-o", tmp_path / "o", "--mode", "composite", "--bg", bg_file)
    over = read(tmp_path / "o" / "a.png")
    a = api.mask(src)[..., None] / 255.0
    fitted = cv2.resize(bg, (72, 48), interpolation=cv2.INTER_AREA)
    assert code == 0 and np.abs(over - (scene(48, 72) * a + fitted * (1 - a))).max() <= 1


def test_webp_output(tmp_path, capsys, tiny):
    src = save(tmp_path / "a.png", scene())
    code, _ = run(capsys, "--engine", tiny, src, "-o", tmp_path / "o", "--format", "webp", "--quality", "100")
    out = tmp_path / "o" / "a.webp"
    assert code == 0 and out.read_bytes()[8:12] == b"WEBP" and read(out).shape == (48, 72, 4)


def test_exif_orientation_and_odd_pixel_formats(tmp_path, capsys, tiny):
    img = scene(48, 72)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    Image.fromarray(img).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    save(tmp_path / "gray.png", img[..., 1], mode="L")
    save(tmp_path / "rgba.png", np.dstack([img, np.full((48, 72), 99, np.uint8)]))
    Image.fromarray(img).quantize(32).save(tmp_path / "palette.png")
    ok, buf = cv2.imencode(".png", img[..., ::-1].astype(np.uint16) * 257)  # 16-bit with the same picture
    (tmp_path / "deep.png").write_bytes(buf.tobytes())
    save(tmp_path / "plain.png", img)

    code, err = run(capsys, "--engine", tiny, tmp_path, "-o", tmp_path / "o", "--mode", "mask")
    assert code == 0 and err[-1].startswith("6 ok"), err
    rotated = read(tmp_path / "o" / "rot.png")
    assert rotated.shape == (72, 48)  # portrait, as the photo is displayed
    box = np.zeros((48, 72), bool)
    box[8:22, 11:34] = True  # well inside scene()'s bright square
    turned = np.rot90(box, -1)  # where it is seen after turning clockwise: the upper right
    assert rotated[turned].min() > 200 and rotated[:, :20].max() < 80
    plain = read(tmp_path / "o" / "plain.png")
    for name in ("gray", "rgba", "palette", "deep"):
        out = read(tmp_path / "o" / f"{name}.png")
        assert out.shape == (48, 72) and out.dtype == np.uint8
        assert out[10:20, 14:30].min() > 200 and out[30:, 40:].max() < 80, name
    np.testing.assert_array_equal(read(tmp_path / "o" / "rgba.png"), plain)
    assert np.abs(read(tmp_path / "o" / "deep.png").astype(int) - plain).max() <= 1


def test_folders_keep_their_layout_and_globs_work(tmp_path, capsys, tiny):
    src = tmp_path / "photos"
    for rel in ("a.jpg", "trip/b.png", "trip/day2/c.JPEG", "trip/.hidden/d.jpg", ".e.jpg"):
        save(src / rel, scene(), "JPEG" if "jp" in rel.lower() else "PNG")
    (src / "notes.txt").write_text("not an image")
    code, err = run(capsys, "--engine", tiny, src, "-o", tmp_path / "o", "--mode", "mask")
    assert code == 0 and err[-1].startswith("3 ok, 0 failed")
    assert files(tmp_path / "o") == ["a.png", "trip/b.png", "trip/day2/c.png"]

    # '**/*' also matches the folders themselves: each file is still processed once.
    code, err = run(capsys, "--engine", tiny, f"{src}/**/*", "-o", tmp_path / "g", "--mode", "mask")
    assert code == 0 and err[-1].startswith("3 ok") and files(tmp_path / "g") == files(tmp_path / "o")
    code, err = run(capsys, "--engine", tiny, f"{src}/*/*.png", "-o", tmp_path / "g2", "--mode", "mask")
    assert code == 0 and files(tmp_path / "g2") == ["trip/b.png"]
    code, err = run(capsys, "--engine", tiny, f"{src}/*.gif", "-o", tmp_path / "g3")
    assert code == 1 and any("*.gif: no image files match" in line for line in err)


def test_output_folder_inside_the_input_folder_is_not_reprocessed(tmp_path, capsys, tiny):
    save(tmp_path / "a.png", scene())
    code, err = run(capsys, "--engine", tiny, tmp_path, "-o", tmp_path / "out", "--mode", "mask")
    assert code == 0 and err[-1].startswith("1 ok")
    code, err = run(capsys, "--engine", tiny, tmp_path, "-o", tmp_path / "out", "--mode", "mask")
    assert code == 0 and err[-1].startswith("1 ok")  # out/a.png was not picked up as an input
    code, err = run(capsys, "--engine", tiny, tmp_path / "a.png", "-o", tmp_path)
    assert code == 1 and any("would replace the input" in line for line in err)


def test_batch_size_does_not_change_results(tmp_path, capsys, tiny):
    for i in range(7):
        save(tmp_path / "in" / f"{i}.png", scene(30 + 9 * i, 70 - 4 * i, seed=i))
    run(capsys, "--engine", tiny, tmp_path / "in", "-o", tmp_path / "b1", "--batch-size", "1", "--io-threads", "1")
    run(capsys, "--engine", tiny, tmp_path / "in", "-o", tmp_path / "b3", "--batch-size", "3", "--io-threads", "3")
    assert files(tmp_path / "b1") == files(tmp_path / "b3") == [f"{i}.png" for i in range(7)]
    for name in files(tmp_path / "b1"):
        np.testing.assert_array_equal(read(tmp_path / "b1" / name), read(tmp_path / "b3" / name))


def _bomb(path: Path) -> None:
    """A small JPEG whose header declares 20000 x 20000 pixels."""
    data = bytearray(save(path, scene(16, 16), "JPEG").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (20_000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))


def test_bad_inputs_fail_one_line_each_and_the_rest_is_done(tmp_path, capsys, tiny):
    src = tmp_path / "in"
    for name in ("good1.jpg", "sub/good2.png"):
        save(src / name, scene())
    (src / "empty.jpg").write_bytes(b"")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (src / "text.jpg").write_text("hello")
    full = save(tmp_path / "x.jpg", scene(64, 64), "JPEG").read_bytes()
    (src / "truncated.jpg").write_bytes(full[: len(full) // 2])
    _bomb(src / "bomb.jpg")
    extra = tmp_path / "readme.txt"
    extra.write_text("named explicitly, so it is tried and reported")
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocked").write_text("a file where the output folder for blocked/ must go")
    save(src / "blocked" / "x.png", scene())

    code, err = run(capsys, "--engine", tiny, src, extra, tmp_path / "missing.jpg", "-o", out, "--max-pixels", "50M")
    assert code == 1
    errors = [line for line in err if line.startswith("error: ")]
    expected = {
        "empty.jpg": "empty file",
        "corrupt.png": "PNG",
        "text.jpg": "not a supported image",
        "truncated.jpg": "truncated JPEG",
        "bomb.jpg": "20000x20000 = 400.0 MP exceeds the limit of 50 MP",
        "readme.txt": "not a supported image",
        "missing.jpg": "no such file or folder",
        "x.png": "cannot write",
    }
    assert len(errors) == len(expected), errors
    for name, problem in expected.items():
        assert sum(name in line and problem in line for line in errors) == 1, (name, errors)
    assert err[-1].startswith("2 ok, 8 failed, 0 skipped")
    assert files(out) == ["blocked", "good1.png", "sub/good2.png"]  # no partial or temporary files


@pytest.mark.parametrize(
    ("engine", "extra", "message"),
    [
        ("missing.onnx", [], "missing.onnx: no such engine file"),
        ("model.txt", [], "unknown engine type '.txt'"),
        ("tiny.onnx", ["--provider", "cuda"], "provider 'cuda' is not available"),
        ("corrupt.onnx", [], "corrupt.onnx: cannot load ONNX model"),
        ("two.onnx", [], "two.onnx: engine returns shape (1, 2, 64, 64)"),
    ],
)
def test_engine_problems_are_one_line_exit_2(tmp_path, capsys, tiny, engine, extra, message):
    import onnxruntime as ort

    if "cuda" in extra and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07 not protobuf" * 5)
    make_tiny_onnx(tmp_path / "tiny.onnx")
    make_tiny_onnx(tmp_path / "two.onnx", out_channels=2)
    save(tmp_path / "a.png", scene())
    code, err = run(capsys, "--engine", tmp_path / engine, *extra, tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_bad_options_exit_2(tmp_path, capsys, tiny):
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", str(tiny), "x.png", "--mode", "composite", "--bg", "not-a-colour"])
    assert exit_info.value.code == 2 and "not a colour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--engine", str(tiny), "x.png", "--png-level", "13"])
    assert "between 0 and 12" in capsys.readouterr().err
    bad_bg = tmp_path / "bg.png"
    bad_bg.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, err = run(capsys, "--engine", tiny, "x.png", "--mode", "composite", "--bg", bad_bg)
    assert code == 2 and len(err) == 1 and "bg.png" in err[0]


def test_skip_existing(tmp_path, capsys, caplog, tiny):
    for name in ("a.png", "b.png"):
        save(tmp_path / "in" / name, scene())
    out = tmp_path / "o"
    code, err = run(capsys, "--engine", tiny, tmp_path / "in", "-o", out)
    assert code == 0
    done = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(done[:-1] + b"\x00")  # complete length, wrong last byte: not a whole PNG
    code, err = run(capsys, "--engine", tiny, tmp_path / "in", "-o", out, "--skip-existing")
    assert code == 0 and err[-1].startswith("1 ok, 0 failed, 1 skipped")
    assert (out / "a.png").read_bytes() == done and "o/a.png: the existing output is not a complete PNG" in caplog.text
    code, err = run(capsys, "--engine", tiny, tmp_path / "in", "-o", out, "--skip-existing")
    assert code == 0 and err[-1].startswith("0 ok, 0 failed, 2 skipped")
    code, err = run(capsys, "--engine", tiny, tmp_path / "in", "-o", out)  # without: made again
    assert code == 0 and err[-1].startswith("2 ok") and (out / "a.png").read_bytes() == done


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_skip_existing_makes_broken_outputs_again(tmp_path, capsys, caplog, tiny, fmt):
    """A 0-byte, cut, garbage or other-format file where the output goes is not counted as done."""
    save(tmp_path / "in" / "a.png", scene())
    out = tmp_path / "o"
    assert run(capsys, "--engine", tiny, tmp_path / "in", "-o", out, "--format", fmt)[0] == 0
    good = (out / f"a.{fmt}").read_bytes()
    other = "webp" if fmt == "png" else "png"
    assert run(capsys, "--engine", tiny, tmp_path / "in", "-o", tmp_path / "x", "--format", other)[0] == 0
    foreign = (tmp_path / "x" / f"a.{other}").read_bytes()
    for broken in (b"", good[: len(good) // 2], good[:-4], b"garbage" * 10, foreign):
        (out / f"a.{fmt}").write_bytes(broken)
        caplog.clear()
        code, err = run(capsys, "--engine", tiny, tmp_path / "in", "-o", out, "--format", fmt, "--skip-existing")
        assert code == 0 and err[-1].startswith("1 ok, 0 failed, 0 skipped"), (broken[:20], err)
        assert "not a complete" in caplog.text
        assert (out / f"a.{fmt}").read_bytes() == good


def test_real_u2netp_through_the_module_entry_point(random_u2netp, tmp_path):
    """``python -m runtime.infer`` as a user runs it, on a real exported U²-NetP, in a fresh interpreter."""
    engine = random_u2netp.fp32
    for i in range(3):
        save(tmp_path / "in" / f"{i}.jpg", scene(60 + 10 * i, 80, seed=i), quality=90)
    code = (
        "import runpy, sys; sys.argv = ['infer'] + sys.argv[1:]; "
        "runpy.run_module('runtime.infer', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, "--engine", str(engine), str(tmp_path / "in"),
         "-o", str(tmp_path / "o"), "--batch-size", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and not {"torch", "train", "export"} & imported
    assert "3 ok, 0 failed" in proc.stderr and "u2netp fp32 64x64" in proc.stderr
    with Remover(engine) as r:
        for i in range(3):
            rgba = read(tmp_path / "o" / f"{i}.png")
            assert rgba.shape == (60 + 10 * i, 80, 4)
            np.testing.assert_array_equal(rgba[..., 3], r.mask(tmp_path / "in" / f"{i}.jpg"))


def test_pipeline_streams_with_bounded_memory(tmp_path, tiny, monkeypatch):
    """Decoded images alive at once stay bounded by 2·batch + 2·io threads, not by the folder size."""
    for i in range(40):
        save(tmp_path / "in" / f"{i:02d}.png", scene(seed=i))
    alive = peak = 0
    load, store = Pipeline._load, Pipeline._save

    def counting_load(self, job):
        nonlocal alive, peak
        loaded = load(self, job)
        alive += 1  # the GIL makes these counters exact enough for a bound
        peak = max(peak, alive)
        return loaded

    def counting_save(self, job, loaded, prob):
        nonlocal alive
        try:
            store(self, job, loaded, prob)
        finally:
            alive -= 1

    monkeypatch.setattr(Pipeline, "_load", counting_load)
    monkeypatch.setattr(Pipeline, "_save", counting_save)
    with Remover(tiny, batch_size=4) as r:
        summary = Pipeline(r, tmp_path / "o", io_threads=1, progress=False).run([str(tmp_path / "in")])
    assert (summary.ok, summary.failed) == (40, 0) and alive == 0
    # loads queued (batch 4 + 1 per I/O thread) + one batch (4) + pending writes (1 per I/O thread) = 10
    assert images_alive(4, io_threads=1) == 10
    assert 4 <= peak <= images_alive(4, io_threads=1), peak


def test_clashing_outputs_and_repeated_inputs(tmp_path, capsys, tiny):
    one, two = save(tmp_path / "a" / "x.jpg", scene()), save(tmp_path / "b" / "x.png", scene(seed=1))
    code, err = run(capsys, "--engine", tiny, one, one, tmp_path / "a", two, "-o", tmp_path / "o")
    assert code == 1 and err[-1].startswith("1 ok, 1 failed")  # the same file three times is done once
    assert any(line.startswith(f"error: {two}: its output") and str(one.resolve()) in line for line in err)
    assert files(tmp_path / "o") == ["x.png"]


def test_tensorrt_plan_through_the_cli(tmp_path, capsys, caplog, monkeypatch, tiny, api):
    """A .plan runs on the TensorRT backend (TensorRT itself faked at its API, running the ONNX it was built from)."""
    fake = pytest.importorskip("fake_tensorrt")
    trt_export = pytest.importorskip("export.trt")
    fake.install_tensorrt(monkeypatch, "10.13.0.35")
    options = trt_export.BuildOptions(trt_export.Profile(1, 2, 4, size=64), precision="fp32")
    plan = trt_export.build_engine(tmp_path / "tiny.plan", options, fp32_onnx=tiny, check=False).plan
    for i in range(5):
        save(tmp_path / "in" / f"{i}.png", scene(40 + i, 50, seed=i))
    with caplog.at_level(logging.INFO):
        code, err = run(capsys, "--engine", plan, tmp_path / "in", "-o", tmp_path / "o", "--mode", "mask")
    assert code == 0 and err[-1].startswith("5 ok"), err
    assert "TensorRT" in caplog.text and "batches of up to 2" in caplog.text  # the profile's optimum
    for i in range(5):
        np.testing.assert_array_equal(read(tmp_path / "o" / f"{i}.png"), api.mask(tmp_path / "in" / f"{i}.png"))
    code, err = run(capsys, "--engine", plan, "--provider", "cpu", tmp_path / "in", "-o", tmp_path / "o")
    assert code == 2 and len(err) == 1 and "runs on TensorRT, not on provider 'cpu'" in err[0]


def test_cli_and_api_give_identical_results_on_a_large_jpeg(tmp_path, capsys, random_u2netp):
    """CLI = API on a 2400x1800 camera-sized JPEG, where the mask path decodes at reduced scale."""
    engine = random_u2netp.fp32  # the real architecture, not the tiny model
    rng = np.random.default_rng(5)
    photo = cv2.resize(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    photo[400:1400, 600:1800] = np.clip(photo[400:1400, 600:1800].astype(int) + 90, 0, 255)
    src = save(tmp_path / "in" / "large.jpg", photo, quality=92)
    code, _ = run(capsys, "--engine", engine, src, "-o", tmp_path / "m", "--mode", "mask")
    assert code == 0
    code, _ = run(capsys, "--engine", engine, src, "-o", tmp_path / "c")
    assert code == 0
    with Remover(engine) as r:
        api_mask, api_cutout = r.mask(src), r.cutout(src)
    assert np.array_equal(read(tmp_path / "m" / "large.png"), api_mask)
    cli_cutout = read(tmp_path / "c" / "large.png")
    assert np.array_equal(cli_cutout[..., 3], api_cutout[..., 3])
    # The file stores the API's colours to the precision their alpha shows (--colours visible).
    assert np.array_equal(cli_cutout, apply_cutout(api_cutout[..., :3], api_cutout[..., 3], colours="visible"))
    code, _ = run(capsys, "--engine", engine, src, "-o", tmp_path / "x", "--colours", "exact")
    assert code == 0
    exact = read(tmp_path / "x" / "large.png")
    shown = exact[..., 3] > 0  # --colours exact: only fully transparent pixels lose their colour
    assert np.array_equal(exact[shown], api_cutout[shown]) and exact[~shown].max(initial=0) == 0
    assert api_mask.std() > 0  # a real, non-constant mask
