"""Video: real clips made by PyAV in temporary folders, through the CLI, the pipeline and the API.

Outputs are checked the way an editor would meet them (``ffprobe``: codec, pixel format with alpha, frame
count, duration, rotation, sound; skipped without ffprobe) and by decoding them back (masks exact where the
codec is lossless). The model is the tiny brightness ONNX of ``runtime_helpers``: a real ONNX graph whose
masks are cheap and checkable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import make_tiny_onnx

av = pytest.importorskip("av")

from benchmarks.make_clips import moving_frames, write_clip  # noqa: E402
from runtime.api import Remover  # noqa: E402
from runtime.infer import main  # noqa: E402
from runtime.render import RenderOptions  # noqa: E402
from runtime.video import VideoOptions, choose, is_animated_gif  # noqa: E402
from runtime.video.formats import parse_frames  # noqa: E402
from runtime.video.sink import is_complete  # noqa: E402
from runtime.video.smooth import Smoother  # noqa: E402
from runtime.video.source import Orientation, VideoError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H, N = 64, 48, 24  # small clips: a second of video each
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed (apt-get install ffmpeg)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


@pytest.fixture(scope="module")
def remover(tiny):
    with Remover(tiny) as r:
        yield r


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The input clips every test shares (made once): H.264 + AAC in MP4, HEVC in MOV, rotated, VFR, no sound."""
    folder = tmp_path_factory.mktemp("clips")
    frames = moving_frames(N, W, H)
    vfr_pts = [0, 40, 80, 200, 240, 400, 410, 420, 600, 640, 680, 900]
    return {
        "mp4": write_clip(folder / "clip.mp4", frames),
        "mov": write_clip(folder / "hevc.mov", frames, codec="libx265",
                          options={"preset": "ultrafast", "x265-params": "log-level=error"}),
        "rot": write_clip(folder / "rotated.mp4", moving_frames(N, W, H, seed=1), rotation=90),
        "vfr": write_clip(folder / "vfr.mkv", frames[: len(vfr_pts)], pts=vfr_pts, time_base=Fraction(1, 1000),
                          audio="libopus", container="matroska"),
        "mute": write_clip(folder / "mute.mp4", frames, audio=None),
    }  # fmt: skip


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv] + ["--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-show_entries",
                          "stream_side_data", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # fmt: skip


def video_stream(info: dict) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


def audio_stream(info: dict) -> dict | None:
    return next((s for s in info["streams"] if s["codec_type"] == "audio"), None)


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.time), 3) for f in c.decode(video=0)]


def gray_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def webm_alpha(path: Path) -> list[np.ndarray]:
    from benchmarks.video import alpha_planes

    return alpha_planes(path)


def masks_of(remover: Remover, clip: Path, **video) -> list[np.ndarray]:
    return [f.mask for f in remover.video_frames(clip, VideoOptions(smooth="off", **video))]


# --- the table and its rules, no decoding ---------------------------------------------------------------


@pytest.mark.parametrize(("mode", "fmt", "lossless", "source", "codec", "row", "suffix"), [
    ("cutout", "auto", False, "a.mp4", "h264", "webm", ".webm"),
    ("cutout", "prores", False, "a.mp4", "h264", "prores", ".mov"),
    ("cutout", "png", False, "a.mp4", "h264", "png", ""),
    ("mask", "auto", False, "a.mp4", "h264", "h264", ".mp4"),
    ("mask", "auto", True, "a.mp4", "h264", "ffv1", ".mkv"),
    ("composite", "auto", False, "a.mov", "hevc", "hevc", ".mov"),
    ("composite", "auto", False, "a.mkv", "vp9", "webm", ".mkv"),
    ("composite", "auto", False, "a.webm", None, "webm", ".webm"),
    ("composite", "auto", False, "a.avi", "mpeg4", "h264", ".avi"),
    ("composite", "auto", False, "a.gif", "gif", "h264", ".mp4"),
    ("composite", "auto", False, "a.avi", "hevc", "h264", ".avi"),  # AVI cannot hold HEVC
])  # fmt: skip
def test_choose(mode, fmt, lossless, source, codec, row, suffix):
    choice = choose(mode, VideoOptions(format=fmt, lossless=lossless), source, codec)
    assert (choice.format.name, choice.suffix) == (row, suffix)


def test_choose_refuses_what_a_format_cannot_hold():
    with pytest.raises(ValueError, match="no alpha"):
        choose("cutout", VideoOptions(format="h264"), "a.mp4")
    with pytest.raises(ValueError, match="no lossless mode"):
        VideoOptions(format="prores", lossless=True)
    assert parse_frames("10:20") == (10, 20) and parse_frames(":5") == (0, 5) and parse_frames("3:") == (3, None)
    for bad in ("5", "5:5", "a:b", "-1:3"):
        with pytest.raises(ValueError):
            parse_frames(bad)


def test_smoother_steadies_flicker_without_lag():
    rng = np.random.default_rng(0)
    base = np.full((32, 32), 100, np.uint8)
    off, on = Smoother("off"), Smoother("medium")
    noisy = [np.clip(base + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    assert all(off.step(m) is m for m in noisy)  # off: exactly the mask given
    steadied = [on.step(m) for m in noisy]
    assert np.abs(np.diff(np.stack(steadied).astype(int), axis=0)).mean() < 0.6 * np.abs(
        np.diff(np.stack(noisy).astype(int), axis=0)).mean()  # fmt: skip
    jump = base.copy()
    jump[8:24, 8:24] = 250  # something moved in: far beyond the band, taken at once
    out = on.step(jump)
    assert np.abs(out[10:22, 10:22].astype(int) - 250).max() <= 1


def test_orientation_follows_ffmpeg():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    ccw90 = (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)  # what set_display_rotation(90) writes
    o = Orientation.of(ccw90)
    assert o.steps == ("cclock",) and o.shape(2, 3) == (3, 2)
    np.testing.assert_array_equal(o.display(image), np.rot90(image))  # turned counter-clockwise for display
    np.testing.assert_array_equal(o.store(o.display(image)), image)
    assert Orientation.of(None).steps == ()


def test_animated_gif_detection(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(f) for f in moving_frames(3, W, H)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=80)
    frames[0].save(tmp_path / "still.gif")
    assert is_animated_gif(tmp_path / "anim.gif") and not is_animated_gif(tmp_path / "still.gif")
    assert not is_animated_gif(tmp_path / "missing.gif")


# --- outputs, checked as an editor would meet them --------------------------------------------------------


@needs_ffprobe
def test_each_output_kind(tmp_path, capsys, tiny, clips):
    """Every mode and format: codec, pixel format (alpha where promised), frames, duration and sound."""
    src = clips["mp4"]
    duration = float(probe(src)["format"]["duration"])
    cases = [  # (CLI options, output name, codec, pixel format test, audio codec)
        (["--mode", "cutout"], "clip.webm", "vp9", None, "opus"),
        (["--mode", "cutout", "--video-format", "prores"], "clip.mov", "prores", "yuva444p", "aac"),
        (["--mode", "cutout", "--video-format", "ffv1"], "clip.mkv", "ffv1", "bgra", "aac"),
        (["--mode", "mask"], "clip.mp4", "h264", "yuvj420p", "aac"),
        (["--mode", "mask", "--lossless"], "clip.mkv", "ffv1", "gray", "aac"),
        (["--mode", "composite", "--bg", "green"], "clip.mp4", "h264", "yuv420p", "aac"),
    ]
    for k, (options, name, codec, pix_fmt, audio) in enumerate(cases):
        out = tmp_path / str(k)
        code, err = run(capsys, "-e", tiny, src, "-o", out, *options)
        assert code == 0, err
        info = probe(out / name)
        stream = video_stream(info)
        assert stream["codec_name"] == codec and (stream["width"], stream["height"]) == (W, H), options
        if pix_fmt:
            assert stream["pix_fmt"].startswith(pix_fmt), (options, stream["pix_fmt"])
        else:  # VP9 alpha travels beside the picture; WebM flags it for players and editors
            assert stream["tags"].get("alpha_mode") == "1"
        assert len(frame_times(out / name)) == N
        assert abs(float(info["format"]["duration"]) - duration) <= 0.05, options
        assert audio_stream(info)["codec_name"] == audio
        assert os.listdir(out) == [name]  # no temporary file left


def test_composite_keeps_the_input_codec_family(tmp_path, capsys, tiny, clips):
    code, _ = run(capsys, "-e", tiny, clips["mov"], "-o", tmp_path, "--mode", "composite")
    with av.open(str(tmp_path / "hevc.mov")) as c:
        assert code == 0 and c.streams.video[0].codec_context.name == "hevc" and c.streams.video[0].frames == N


def test_png_sequence(tmp_path, capsys, tiny, remover, clips):
    code, _ = run(capsys, "-e", tiny, clips["mp4"], "-o", tmp_path, "--video-format", "png", "--smooth", "off")
    folder = tmp_path / "clip"
    assert code == 0 and is_complete(folder)
    names = {p.name for p in folder.iterdir()}
    assert names == {"audio.mka", "timecodes.txt", *(f"frame_{n:06d}.png" for n in range(N))}
    from PIL import Image

    masks = masks_of(remover, clips["mp4"])
    for n in (0, N - 1):
        rgba = np.asarray(Image.open(folder / f"frame_{n:06d}.png"))
        assert rgba.shape == (H, W, 4)
        np.testing.assert_array_equal(rgba[..., 3], masks[n])  # PNG: the alpha is the mask, exactly
    lines = (folder / "timecodes.txt").read_text().split("\n")
    assert lines[0] == "# timecode format v2" and [float(v) for v in lines[1:4]] == [0.0, 40.0, 80.0]


def test_masks_are_remover_masks_exactly_where_lossless(tmp_path, remover, clips):
    """The iterator API's masks are Remover.mask of its frames; lossless files hold exactly those masks."""
    items = list(remover.video_frames(clips["mp4"], VideoOptions(smooth="off")))
    assert [i.index for i in items] == list(range(N))
    for item in items:
        np.testing.assert_array_equal(item.mask, remover.mask(item.image))
    masks = [i.mask for i in items]
    remover.video(clips["mp4"], tmp_path / "m.mkv", RenderOptions(mode="mask"), VideoOptions(lossless=True, smooth="off"))
    assert all(np.array_equal(a, b) for a, b in zip(gray_frames(tmp_path / "m.mkv"), masks, strict=True))
    remover.video(clips["mp4"], tmp_path / "c.webm", RenderOptions(mode="cutout"),
                  VideoOptions(format="webm", lossless=True, smooth="off", stop=6))  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(webm_alpha(tmp_path / "c.webm"), masks[:6], strict=True))
    remover.video(clips["mp4"], tmp_path / "lossy.webm", RenderOptions(mode="cutout"), VideoOptions(smooth="off"))
    lossy = np.stack(webm_alpha(tmp_path / "lossy.webm")).astype(int)
    assert lossy.shape == (N, H, W) and np.abs(lossy - np.stack(masks)).mean() < 8  # VP9 at crf 30: lossy, close
    smoothed = [i.mask for i in remover.video_frames(clips["mp4"])]  # the default smoothing
    assert len(smoothed) == N and smoothed[0].shape == (H, W)
    with pytest.raises(VideoError, match="name it x.webm"):  # the file's name must say what it holds
        remover.video(clips["mp4"], tmp_path / "x.mp4", RenderOptions(mode="cutout"))


# --- time, rotation, sound -----------------------------------------------------------------------------------


def test_frames_and_step_keep_times_and_cut_the_sound(tmp_path, capsys, tiny, clips):
    code, _ = run(capsys, "-e", tiny, clips["mp4"], "-o", tmp_path, "--mode", "mask", "--frames", "5:20",
                  "--frame-step", "3")  # fmt: skip
    out = tmp_path / "clip.mp4"
    assert code == 0 and frame_times(out) == [0.0, 0.12, 0.24, 0.36, 0.48]  # frames 5, 8, ... 17 of a 25 fps clip
    with av.open(str(out)) as c:
        sound = c.streams.audio[0]
        last = max(float((p.pts + p.duration) * p.time_base) for p in c.demux(sound) if p.pts is not None)
    assert 0.45 <= last <= 0.60  # the sound of frames 5..17 (0.2 s to 0.72 s), shifted to start at 0


def test_variable_frame_rate_is_kept(tmp_path, tiny, remover, clips):
    src = clips["vfr"]
    remover.video(src, tmp_path / "v.webm", RenderOptions(mode="cutout"))
    remover.video(src, tmp_path / "v.mp4", RenderOptions(mode="composite"), VideoOptions(format="h264"))
    assert frame_times(tmp_path / "v.webm") == frame_times(src) == frame_times(tmp_path / "v.mp4")
    with av.open(str(tmp_path / "v.webm")) as c:
        assert c.streams.audio[0].codec_context.name == "opus"  # Opus copied into WebM as it is


@needs_ffprobe
def test_rotation_is_kept_and_the_model_sees_frames_upright(tmp_path, remover, clips):
    src = clips["rot"]
    items = list(remover.video_frames(src, VideoOptions(smooth="off")))
    assert items[0].image.shape == (W, H, 3)  # displayed: turned a quarter
    remover.video(src, tmp_path / "r.mp4", RenderOptions(mode="mask"), VideoOptions(smooth="off", lossless=True,
                                                                                     format="h264"))  # fmt: skip
    stream = video_stream(probe(tmp_path / "r.mp4"))
    assert (stream["width"], stream["height"]) == (W, H)  # stored as the input is
    assert any(int(s.get("rotation", 0)) == 90 for s in stream.get("side_data_list", []))
    stored = gray_frames(tmp_path / "r.mp4")
    np.testing.assert_array_equal(np.rot90(stored[3]), items[3].mask)  # H.264 lossless: the mask, turned back
    if shutil.which("ffmpeg"):  # ffmpeg's own autorotation shows the frames as our iterator does
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt",
                              "rgb24", "-"], capture_output=True, check=True).stdout  # fmt: skip
        shown = np.frombuffer(raw, np.uint8).reshape(W, H, 3)
        assert np.abs(shown.astype(int) - items[0].image).mean() < 2


def test_animated_gif_goes_the_video_way(tmp_path, capsys, tiny):
    from PIL import Image

    frames = [Image.fromarray(f) for f in moving_frames(6, W, H)]
    (tmp_path / "in").mkdir()
    frames[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    code, _ = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask")
    with av.open(str(tmp_path / "out" / "anim.mp4")) as c:
        assert code == 0 and len(list(c.decode(video=0))) == 6


# --- bad input: one line each, exit status 1, the good part written ----------------------------------------


def test_bad_videos_are_one_line_each(tmp_path, capsys, tiny, clips):
    folder = tmp_path / "in"
    folder.mkdir()
    whole = write_clip(tmp_path / "whole.mkv", moving_frames(N, W, H), audio=None, container="matroska").read_bytes()
    (folder / "cut.mkv").write_bytes(whole[: len(whole) * 6 // 10])
    (folder / "garbage.mp4").write_bytes(os.urandom(3000))
    mp4 = bytearray(clips["mute"].read_bytes())
    mp4[len(mp4) // 3 : len(mp4) // 3 + 400] = os.urandom(400)  # damaged mid-stream
    (folder / "damaged.mp4").write_bytes(bytes(mp4))
    with av.open(str(folder / "sound.mp4"), "w") as out:
        from benchmarks.make_clips import _tone

        _tone(av, out, out.add_stream("aac", rate=48000, layout="stereo"), 0.3)
    ffv1 = write_clip(tmp_path / "ffv1.mkv", moving_frames(3, W, H), codec="ffv1", audio=None, container="matroska",
                      options={})  # fmt: skip
    (folder / "unknown.mkv").write_bytes(ffv1.read_bytes().replace(b"V_FFV1", b"V_QQQQ"))
    code, err = run(capsys, "-e", tiny, folder, "-o", tmp_path / "out", "--mode", "mask")
    errors = {line.split(":")[1].strip().split("/")[-1]: line for line in err if line.startswith("error:")}
    assert code == 1 and err[-1].startswith("0 ok, 5 failed")
    assert "ends at" in errors["cut.mkv"] and "cut short" in errors["cut.mkv"]
    assert "not a readable video" in errors["garbage.mp4"]
    assert "stopped" in errors["damaged.mp4"]
    assert "no video stream" in errors["sound.mp4"]
    assert "unknown to this FFmpeg" in errors["unknown.mkv"]
    assert all("\n" not in line and "Traceback" not in line for line in err)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["cut.mkv", "damaged.mp4"]  # what decoded before the damage
    assert 0 < len(frame_times(tmp_path / "out" / "cut.mkv")) < N


def test_limits_are_one_line(tmp_path, capsys, tiny, clips):
    code, err = run(capsys, "-e", tiny, clips["mute"], "-o", tmp_path, "--max-pixels", "1000")
    assert code == 1 and "exceeds the limit of 0.001 MP" in err[0]
    code, err = run(capsys, "-e", tiny, clips["mute"], "-o", tmp_path, "--max-frames", "10")
    assert code == 1 and f"declares {N} frames, above the limit of 10" in err[0]
    assert os.listdir(tmp_path) == []


# --- safe writes ---------------------------------------------------------------------------------------------


def test_a_failed_write_leaves_nothing_and_skip_existing_works(tmp_path, capsys, tiny, remover, clips, monkeypatch):
    from runtime.video import sink

    real = sink.ContainerSink.write
    calls = {"n": 0}

    def failing(self, picture, pts, duration):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real(self, picture, pts, duration)

    monkeypatch.setattr(sink.ContainerSink, "write", failing)
    with pytest.raises(OSError):
        remover.video(clips["mp4"], tmp_path / "x.webm")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()

    out = tmp_path / "out"
    code, err = run(capsys, "-e", tiny, clips["mp4"], "-o", out)
    assert code == 0 and is_complete(out / "clip.webm")
    code, err = run(capsys, "-e", tiny, clips["mp4"], "-o", out, "--skip-existing")
    assert code == 0 and err[-1].startswith("0 ok, 0 failed, 1 skipped")
    data = (out / "clip.webm").read_bytes()
    (out / "clip.webm").write_bytes(data[: len(data) // 2])  # cut: made again, with a line saying so
    assert not is_complete(out / "clip.webm")
    code, err = run(capsys, "-e", tiny, clips["mp4"], "-o", out, "--skip-existing")
    assert code == 0 and err[-1].startswith("1 ok") and is_complete(out / "clip.webm")


def test_sigterm_mid_clip_leaves_no_partial_file(tmp_path, tiny):
    clip = write_clip(tmp_path / "long.mp4", moving_frames(400, 160, 120), audio=None)
    out = tmp_path / "out"
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", "-e", str(tiny), str(clip), "-o", str(out),
                             "--no-progress", "--video-format", "ffv1"], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.05)  # until the temporary file appears
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    assert not out.exists() or list(out.iterdir()) == []  # neither the output nor its temporary file


# --- memory: bounded whatever the length -------------------------------------------------------------------

_PEAK = """
import resource, sys
from runtime.api import Remover
from runtime.render import RenderOptions
with Remover(sys.argv[1]) as r:
    r.video(sys.argv[2], sys.argv[3], RenderOptions(mode="mask"))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_clip(tmp_path, tiny):
    """The same 640x360 content, 40 frames and 800 frames: peak RSS within a few MB (frames are streamed)."""
    frames = moving_frames(40, 640, 360)
    short = write_clip(tmp_path / "short.mp4", frames, audio=None)
    long = write_clip(tmp_path / "long.mp4", frames * 20, audio=None)
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    peaks = []
    for clip in (short, long):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(tiny), str(clip), str(tmp_path / f"{clip.stem}.out.mp4")],
                             cwd=REPO, env=env, capture_output=True, text=True, check=True)  # fmt: skip
        peaks.append(int(out.stdout.split()[-1]) / 1024)  # MB
    assert peaks[1] - peaks[0] < 40, peaks  # 800 decoded frames would be 550 MB
