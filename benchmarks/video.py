"""Video: frames/s end to end against rembg's own video path, the alpha's agreement with ``Remover.mask``,
and the temporal smoothing measured on clips whose truth is known.

    python -m benchmarks.video                                   # U²-NetP 320 (random weights), 720p and 1080p
    python -m benchmarks.video --frames 60 --heights 1080 --json video.json
    python -m benchmarks.video --smoothing runs/sod_u2netp/best.onnx   # the smoothing table (a trained model)

Speed, per clip height (a camera-like H.264 clip with sound, made by ``benchmarks.make_clips``):

- *ours*: ``Remover.video`` on the runtime's default CPU backend, mode cutout, the default output (VP9 WebM
  with alpha, sound copied or re-encoded), after an untimed warm-up on a few frames; frames/s is frames over
  the whole call's wall time. The per-step split is each step's own time per frame (decode + colour
  conversion, preprocess, infer, postprocess + draw, convert + encode + mux); the steps run on three
  threads at once, so they add up to more than the wall time.
- *rembg*: its documented video path, raw RGB frames (``ffmpeg -f rawvideo -pix_fmt rgb24``, Debian's ffmpeg,
  or PyAV when there is none) piped into ``rembg b WIDTH HEIGHT -m u2net_custom -x '{"model_path": ...}' -o
  frame_%06d.png`` on the same ONNX file. rembg's ``b`` command is run from its own file
  (``rembg/commands/b_command.py``): the ``rembg`` entry point and ``rembg.commands`` import every command and
  so the HTTP server's dependencies, which this environment does not install. Its frames/s is measured from the first PNG written to the last (its
  start-up, model load included, is not counted).
- *alpha*: our WebM's alpha plane (decoded by libvpx, which reads WebM alpha) against ``Remover.mask`` of
  each decoded input frame (the iterator API with smoothing off, which the speed run also uses): mean and
  largest difference, and the share within 2 levels; then the same frames with ``--lossless``, where the
  alpha must equal the masks exactly.

Smoothing (``--smoothing ENGINE``): truth clips (``benchmarks.make_clips.truth_clips``: SOD objects, with
their own masks, moving over panning SOD photos, H.264-compressed), each row of
``runtime.video.smooth.SETTINGS`` through the iterator API: mean absolute frame-to-frame change of the mask
where the truth did not change (flicker), and mean absolute error against the truth on moving edges (a band
of 5 pixels around the object's edge, in frames where it moved: lag), plus the error over all pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import hardware_header
from benchmarks.make_clips import speed_clip, truth_clips
from benchmarks.runners import cached_onnx
from runtime.api import Remover
from runtime.argtypes import positive_int
from runtime.render import RenderOptions
from runtime.video import VideoOptions
from runtime.video.process import STEPS
from runtime.video.smooth import SETTINGS, Setting

# Measured beside the CLI's settings, to show why they look as they do: a plain running average (no band: every
# change is averaged, motion too) and two stronger banded ones.
EXTRA_SETTINGS = {"0.5, 24": Setting(0.5, 24.0), "0.95, 96": Setting(0.95, 96.0), "average 0.7, no band": Setting(0.7, 1e9)}

WIDTHS = {720: 1280, 1080: 1920}


def alpha_planes(path: Path) -> list[np.ndarray]:
    """The alpha plane of each frame of a VP9 WebM, decoded by libvpx (FFmpeg's own VP9 decoder drops it)."""
    import av

    planes = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        decoder.extradata = stream.codec_context.extradata
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                plane = frame.planes[3]
                planes.append(np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, : plane.width].copy())
    return planes


def run_ours(remover: Remover, clip: Path, target: Path, video: VideoOptions) -> dict:
    result = remover.video(clip, target, RenderOptions(mode="cutout"), video)
    return {"frames": result.frames, "seconds": result.seconds, "fps": result.fps,
            "step_ms": {s: 1000 * result.steps[s] / max(1, result.frames) for s in STEPS},
            "mb": target.stat().st_size / 1e6}  # fmt: skip


def _raw_frames(clip: Path, sink) -> None:
    """rgb24 frames of ``clip`` written to ``sink`` (a pipe), when there is no ffmpeg binary."""
    import av

    try:
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                sink.write(frame.to_ndarray(format="rgb24", threads=1).tobytes())
    finally:
        sink.close()


# rembg's own `b` command (rembg/commands/b_command.py), loaded without rembg.commands/__init__.py, which imports
# every command and so the HTTP server's dependencies (fastapi, uvicorn, aiohttp, watchdog...), not installed here.
_REMBG_B = """
import importlib.util, pathlib, sys, types, rembg
folder = pathlib.Path(rembg.__file__).parent / "commands"
package = types.ModuleType("rembg.commands")
package.__path__ = [str(folder)]
sys.modules["rembg.commands"] = package
spec = importlib.util.spec_from_file_location("rembg.commands.b_command", folder / "b_command.py")
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.b_command(prog_name="rembg b")
"""


def run_rembg(onnx: Path, clip: Path, width: int, height: int, out: Path) -> dict:
    """rembg's video path (see the module docstring); frames/s from its first PNG to its last."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REMBG_HOME": str(onnx.parent.resolve())}
    env.pop("U2NET_HOME", None)
    command = [sys.executable, "-c", _REMBG_B, str(width), str(height), "-m", "u2net_custom",
               "-x", json.dumps({"model_path": str(onnx.resolve())}), "-o", str(out / "frame_%06d.png")]  # fmt: skip
    ffmpeg = shutil.which("ffmpeg")
    started = time.perf_counter()
    if ffmpeg:
        decoder = subprocess.Popen([ffmpeg, "-v", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                                   stdout=subprocess.PIPE)  # fmt: skip
        # rembg b opens its stdout as an asyncio pipe, which must be a pipe or a device: /dev/null
        proc = subprocess.Popen(command, stdin=decoder.stdout, stdout=subprocess.DEVNULL, env=env,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert decoder.stdout is not None
        decoder.stdout.close()  # rembg holds the pipe now: if it ends early, ffmpeg gets EPIPE instead of blocking
        _, err = proc.communicate()
        decoder.wait()
        rembg = subprocess.CompletedProcess(command, proc.returncode, "", err)
    else:
        rembg_proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                                      stderr=subprocess.PIPE, text=False)  # fmt: skip
        feeder = threading.Thread(target=_raw_frames, args=(clip, rembg_proc.stdin))
        feeder.start()
        _, err = rembg_proc.communicate()
        feeder.join()
        rembg = subprocess.CompletedProcess(command, rembg_proc.returncode, "", err.decode(errors="replace"))
    total = time.perf_counter() - started
    if rembg.returncode != 0:
        raise RuntimeError(f"rembg b failed: {rembg.stderr.strip()[-300:]}")
    times = sorted(p.stat().st_mtime for p in out.glob("frame_*.png"))
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    return {"frames": len(times), "fps": fps, "seconds_with_startup": total, "decoder": "ffmpeg" if ffmpeg else "PyAV",
            "mb": sum(p.stat().st_size for p in out.glob("*.png")) / 1e6}  # fmt: skip


def alpha_check(remover: Remover, clip: Path, webm: Path, work: Path, frames: int) -> dict:
    """Our alpha against Remover.mask per frame: the default (lossy) file, then a lossless one."""
    masks = [item.mask for item in remover.video_frames(clip, VideoOptions(smooth="off", stop=frames))]
    lossy = alpha_planes(webm)[: len(masks)]
    diff = np.stack([np.abs(a.astype(np.int16) - m) for a, m in zip(lossy, masks, strict=True)])
    exact = work / "lossless.webm"
    remover.video(clip, exact, RenderOptions(mode="cutout"),
                  VideoOptions(format="webm", lossless=True, smooth="off", stop=min(frames, 8)))  # fmt: skip
    lossless = alpha_planes(exact)
    worst = max(int(np.abs(a.astype(np.int16) - m).max()) for a, m in zip(lossless, masks, strict=False))
    return {"frames": len(masks), "mean_abs": float(diff.mean()), "max_abs": int(diff.max()),
            "within_2": float((diff <= 2).mean()), "lossless_frames": len(lossless), "lossless_max_abs": worst}  # fmt: skip


def speed(height: int, frames: int, onnx: Path, work: Path, skip_rembg: bool) -> dict:
    width = WIDTHS.get(height, round(height * 16 / 9))
    clip = speed_clip(work / f"clip_{height}p.mp4", width, height, frames)
    video = VideoOptions(smooth="off")  # smoothing costs ~0.3 ms a frame; off, the alpha can be checked against masks
    with Remover(onnx, provider="cpu") as remover:
        remover.video(clip, work / "warmup.webm", RenderOptions(mode="cutout"), VideoOptions(smooth="off", stop=4))
        ours = run_ours(remover, clip, work / f"ours_{height}p.webm", video)
        theirs = None if skip_rembg else run_rembg(onnx, clip, width, height, work / f"rembg_{height}p")
        alpha = alpha_check(remover, clip, work / f"ours_{height}p.webm", work, frames)
        backend = remover.backend.describe()
    row = {"height": height, "width": width, "backend": backend, "ours": ours, "rembg": theirs, "alpha": alpha}
    if theirs:
        row["speedup_vs_rembg"] = ours["fps"] / theirs["fps"] if theirs["fps"] else None
    return row


def print_speed(row: dict) -> None:
    ours, theirs, alpha = row["ours"], row["rembg"], row["alpha"]
    steps = ", ".join(f"{s} {ms:.1f}" for s, ms in ours["step_ms"].items())
    print(f"\n{row['height']}p ({row['width']}x{row['height']}, {ours['frames']} frames), {row['backend']}")
    print(f"  ours : {ours['fps']:.2f} frames/s end to end ({ours['seconds']:.1f} s), VP9 WebM + alpha {ours['mb']:.2f} MB")
    print(f"         per step, ms/frame (three threads overlap): {steps}")
    if theirs:
        print(f"  rembg: {theirs['fps']:.2f} frames/s ({theirs['frames']} PNGs, {theirs['mb']:.1f} MB; raw frames from "
              f"{theirs['decoder']}; {theirs['seconds_with_startup']:.1f} s with start-up)")
        print(f"  ratio: {row['speedup_vs_rembg']:.2f}x rembg's frames/s")
    print(f"  alpha vs Remover.mask: mean {alpha['mean_abs']:.2f}, max {alpha['max_abs']} levels, "
          f"{100 * alpha['within_2']:.1f}% within 2 (VP9 crf 30); lossless VP9: max {alpha['lossless_max_abs']} "
          f"over {alpha['lossless_frames']} frames")


# --- smoothing ---------------------------------------------------------------------------------------------


def _moving_edges(truth: np.ndarray) -> np.ndarray:
    """Frames 1..N-1: pixels within 2 of the true edge, in frames where the object moved there."""
    kernel = np.ones((5, 5), np.uint8)
    moved = np.abs(truth[1:] - truth[:-1]) > 0
    near = np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in moved])
    edges = np.stack([cv2.dilate(cv2.Canny(t.astype(np.uint8), 50, 150), kernel) > 0 for t in truth[1:]])
    return near & edges


def smoothing(engine: Path, work: Path, clips: int, frames: int, size: tuple[int, int]) -> list[dict]:
    """Per setting, averaged over the clips: flicker where the truth is still, error on moving edges against
    the truth, how far the setting moved those edges from the unsmoothed mask (its lag), error overall."""
    pairs = truth_clips(work / "truth", clips, frames, size)
    settings: dict[str, Setting] = {**SETTINGS, **EXTRA_SETTINGS}
    scores: dict[str, dict[str, list[float]]] = {n: {"flicker": [], "edges": [], "lag": [], "all": []} for n in settings}
    with Remover(engine, provider="cpu") as remover:
        for clip, masks_file in pairs:
            truth = np.load(masks_file)["masks"].astype(np.int16)
            still, band = truth[1:] == truth[:-1], _moving_edges(truth)
            plain = None
            for name, setting in settings.items():  # "off" first
                video = VideoOptions(smooth=setting)
                pred = np.stack([f.mask for f in remover.video_frames(clip, video)]).astype(np.int16)
                plain = pred if plain is None else plain
                scores[name]["flicker"].append(float(np.abs(pred[1:] - pred[:-1])[still].mean()))
                scores[name]["edges"].append(float(np.abs(pred[1:] - truth[1:])[band].mean()))
                scores[name]["lag"].append(float(np.abs(pred[1:] - plain[1:])[band].mean()))
                scores[name]["all"].append(float(np.abs(pred - truth).mean()))
    return [{"smooth": name, **settings[name].__dict__, "flicker_static": float(np.mean(s["flicker"])),
             "error_moving_edges": float(np.mean(s["edges"])), "lag_moving_edges": float(np.mean(s["lag"])),
             "error_all": float(np.mean(s["all"]))} for name, s in scores.items()]  # fmt: skip


def print_smoothing(rows: list[dict], clips: int, frames: int, size: tuple[int, int], engine: Path) -> None:
    print(f"\nSmoothing: {clips} truth clips of {frames} frames at {size[0]}x{size[1]}, {engine} (levels 0-255)")
    print("| --smooth | strength, band | flicker where the truth is still | error on moving edges | moved from off "
          "there (lag) | error, all pixels |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = rows[0]["flicker_static"]
    for r in rows:
        rel = f" ({r['flicker_static'] / base:.2f}x)" if base else ""
        print(f"| {r['smooth']} | {r['strength']:g}, {r['band']:g} | {r['flicker_static']:.2f}{rel} | "
              f"{r['error_moving_edges']:.2f} | {r['lag_moving_edges']:.2f} | {r['error_all']:.2f} |")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--ckpt", type=Path, help="U²-NetP weights to export (default: random weights; speed only)")
    p.add_argument("--size", type=int, default=320, help="model input size (default: %(default)s)")
    p.add_argument("--heights", default="720,1080", help="clip heights (default: %(default)s)")
    p.add_argument("--frames", type=positive_int, default=48, help="frames per speed clip (default: %(default)s)")
    p.add_argument("--skip-rembg", action="store_true")
    p.add_argument("--smoothing", type=Path, metavar="ENGINE", help="measure the smoothing settings with this engine "
                   "(a trained model) instead of the speed")
    p.add_argument("--clips", type=positive_int, default=6, help="truth clips for --smoothing (default: %(default)s)")
    p.add_argument("--clip-frames", type=positive_int, default=60, help="frames per truth clip (default: %(default)s)")
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(hardware_header())
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="u2net-video-") as tmp:
        work = Path(tmp)
        if args.smoothing:
            size = (320, 240)
            rows = smoothing(args.smoothing, work, args.clips, args.clip_frames, size)
            print_smoothing(rows, args.clips, args.clip_frames, size, args.smoothing)
            results["smoothing"] = rows
        else:
            onnx = cached_onnx("u2netp", args.size, args.ckpt)
            print(f"Model: U²-NetP {args.size}x{args.size}, {'random weights' if args.ckpt is None else args.ckpt}; {onnx}")
            results["speed"] = []
            for height in (int(h) for h in args.heights.split(",")):
                row = speed(height, args.frames, onnx, work, args.skip_rembg)
                print_speed(row)
                results["speed"].append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
