"""Video clips for tests and benchmarks, made with PyAV: plain clips, and clips whose true masks are known.

    python -m benchmarks.make_clips clips/ --clips 6 --frames 60 --size 320x240     # truth clips + masks
    python -m benchmarks.make_clips clips/ --speed --size 1920x1080 --frames 90     # one clip for speed runs

``write_clip`` writes RGB frames with a codec, frame rate or explicit timestamps (variable frame rate), a
display rotation and a tone as sound: what the video tests and benchmarks need, without a system ffmpeg.

``truth_clips`` makes clips for measuring temporal stability: a SOD photo's salient object, cut out with its
own ground-truth mask, moves over another SOD photo that pans slowly (a moving background), pausing now and
then (so the object's edges are still for a while, where flicker shows). The background is out of focus, as
behind a filmed subject. Motion is sub-pixel (warped
bilinearly, object and mask alike), a little sensor noise is added, and the clip is H.264-compressed, so a
model sees what a camera gives. The true mask of every frame is saved beside the clip
(``NAME.masks.npz``, uint8 N x H x W). Without the SOD photos, synthetic textures stand in (``--synthetic``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from runtime.argtypes import positive_int


def write_clip(path: str | Path, frames: Iterable[np.ndarray], *, rate: int | Fraction = 25, codec: str = "libx264",
               pix_fmt: str = "yuv420p", options: dict[str, str] | None = None, pts: Sequence[int] | None = None,
               time_base: Fraction | None = None, audio: str | None = "aac", rotation: int | None = None,
               container: str | None = None) -> Path:  # fmt: skip
    """Write RGB uint8 frames as a video; returns ``path``.

    ``pts`` (with ``time_base``): explicit timestamps, for variable frame rates; otherwise frame i is at i/rate.
    ``audio``: an encoder name for a 440 Hz tone as long as the video, or None. ``rotation``: a display
    rotation in degrees counter-clockwise (stored in the container's display matrix, as phones do).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames)
    height, width = frames[0].shape[:2]
    tb = time_base or Fraction(1, int(rate) * 100 if Fraction(rate).denominator == 1 else 90000)
    stamps = list(pts) if pts is not None else [round(i / (Fraction(rate) * tb)) for i in range(len(frames))]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options or ({"preset": "veryfast"} if codec == "libx264" else {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = tb
        stream.codec_context.time_base = tb
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = out.add_stream(audio, rate=48000, layout="stereo")
        for image, stamp in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = stamp, tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            seconds = float((stamps[-1] + (stamps[-1] - stamps[-2] if len(stamps) > 1 else 1)) * tb)
            _tone(av, out, sound, seconds)
    return path


def _tone(av, out, stream, seconds: float) -> None:
    """A 440 Hz tone of ``seconds`` in 1024-sample frames, in the encoder's first sample format."""
    rate = stream.codec_context.sample_rate
    fmt = stream.codec_context.codec.audio_formats[0].name
    resampler = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
    total, done = round(seconds * rate), 0
    while done < total:
        n = min(1024, total - done)
        t = (np.arange(done, done + n) / rate).astype(np.float32)
        wave = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]).reshape(1, -1), format="flt", layout="stereo")
        frame.sample_rate, frame.pts = rate, done
        for part in resampler.resample(frame):
            out.mux(stream.encode(part))
        done += n
    for part in resampler.resample(None):
        out.mux(stream.encode(part))
    out.mux(stream.encode(None))


def moving_frames(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of a bright square gliding over a dark noisy background: small, quick test content."""
    rng = np.random.default_rng(seed)
    background = rng.integers(10, 60, (height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        frame = background.copy()
        x = int((width // 2) * (0.5 + 0.5 * math.sin(i / 4)))
        frame[height // 4 : 3 * height // 4, x : x + width // 3] = (230, 200, 90)
        frames.append(frame)
    return frames


# --- clips with known masks ---------------------------------------------------------------------------


def _object(image: np.ndarray, mask: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The masked object's bounding box, scaled to ``height`` rows: (RGB float32, alpha float32 0..1)."""
    ys, xs = np.nonzero(mask > 127)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, alpha = image[top:bottom, left:right], mask[top:bottom, left:right]
    scale = height / rgb.shape[0]
    size = (max(8, round(rgb.shape[1] * scale)), height)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return rgb, alpha


def _synthetic_pair(rng: np.random.Generator, size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipse on a texture, when the SOD photos are absent."""
    image = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 3)
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (size // 3, size // 2 - 10), 0, 0, 360, 255, -1)
    image[mask > 0] = np.clip(image[mask > 0].astype(int) + 80, 0, 255)
    return image, mask


def _path(i: int, n: int, span: float) -> float:
    """Position 0..1 along the object's track at frame i: moves, holds still for a while, moves back."""
    phase = i / max(1, n - 1)
    if phase < 0.3:
        return span * phase / 0.3
    if phase < 0.55:
        return span  # a pause: the edges stand still here
    if phase < 0.85:
        return span * (1 - (phase - 0.55) / 0.3)
    return 0.0


BACKGROUND_BLUR = 5.0  # Gaussian sigma in pixels at 320 wide


def truth_clip(path: Path, photo: np.ndarray, mask: np.ndarray, background: np.ndarray, *, frames: int,
               width: int, height: int, seed: int) -> np.ndarray:  # fmt: skip
    """Write one truth clip (see the module docstring); returns its true masks (N x H x W uint8)."""
    rng = np.random.default_rng(seed)
    rgb, alpha = _object(photo, mask, int(height * 0.7))
    oh, ow = alpha.shape
    pan = cv2.resize(background, (int(width * 1.3), int(height * 1.3)), interpolation=cv2.INTER_AREA)
    # Out of focus, as behind a filmed subject (and so the background photo's own object is not the salient one).
    pan = cv2.GaussianBlur(pan, (0, 0), BACKGROUND_BLUR * width / 320).astype(np.float32)
    images, truths = [], []
    for i in range(frames):
        shift = 0.25 * width * i / frames  # the background pans steadily
        bg = cv2.warpAffine(pan, np.float32([[1, 0, -shift], [0, 1, -0.05 * height]]), (width, height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        x = 0.05 * width + _path(i, frames, 0.9 * width - ow)
        y = 0.15 * height + 0.03 * height * math.sin(i / 5)
        move = np.float32([[1, 0, x], [0, 1, y]])
        fg = cv2.warpAffine(rgb, move, (width, height), flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(alpha, move, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        frame = fg * a + bg * (1 - a) + rng.normal(0, 2.0, (height, width, 3)).astype(np.float32)
        images.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
        truths.append(np.clip(a[..., 0] * 255 + 0.5, 0, 255).astype(np.uint8))
    write_clip(path, images, rate=25, options={"preset": "veryfast", "crf": "23"}, audio=None)
    return np.stack(truths)


def truth_clips(folder: str | Path, clips: int = 6, frames: int = 60, size: tuple[int, int] = (320, 240),
                synthetic: bool = False) -> list[tuple[Path, Path]]:  # fmt: skip
    """Write ``clips`` truth clips into ``folder``: (clip, masks .npz) pairs. Objects come from the SOD
    photos held out of training (every 5th by name, as ``--val-split 0.2``), backgrounds from others."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(0)
    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # object photo, its mask, background photo
    if not synthetic:
        from export.samples import SOD_DIR, sod_mask, sod_photos

        if (SOD_DIR / "images").is_dir():
            photos = sod_photos()
            held_out = photos[4::5]
            for k in range(clips):
                obj, back = held_out[(2 * k) % len(held_out)], photos[(7 * k + 3) % len(photos)]
                triples.append((cv2.cvtColor(cv2.imread(str(obj)), cv2.COLOR_BGR2RGB),
                                cv2.imread(str(sod_mask(obj)), cv2.IMREAD_GRAYSCALE),
                                cv2.cvtColor(cv2.imread(str(back)), cv2.COLOR_BGR2RGB)))  # fmt: skip
    while len(triples) < clips:
        image, mask = _synthetic_pair(rng)
        triples.append((image, mask, _synthetic_pair(rng)[0]))
    written = []
    for k, (image, mask, background) in enumerate(triples):
        clip = folder / f"truth_{k:02d}.mp4"
        truths = truth_clip(clip, image, mask, background, frames=frames, width=width, height=height, seed=k)
        masks = folder / f"truth_{k:02d}.masks.npz"
        np.savez_compressed(masks, masks=truths)
        written.append((clip, masks))
    return written


def speed_clip(path: str | Path, width: int, height: int, frames: int) -> Path:
    """A camera-like clip for speed runs: a SOD photo (or a texture) panned and zoomed slowly, with sound."""
    from export.samples import sample_images

    image = sample_images(1)[0][0]
    big = cv2.resize(image, (int(width * 1.25), int(height * 1.25)), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    out = []
    for i in range(frames):
        dx, dy = 0.2 * width * i / frames, 0.1 * height * i / frames
        view = cv2.warpAffine(big, np.float32([[1, 0, -dx], [0, 1, -dy]]), (width, height), flags=cv2.INTER_LINEAR)
        out.append(np.clip(view.astype(np.int16) + rng.integers(-2, 3, view.shape, dtype=np.int16), 0, 255)
                   .astype(np.uint8))  # fmt: skip
    return write_clip(path, out, rate=30, options={"preset": "veryfast", "crf": "20"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.make_clips", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--clips", type=positive_int, default=6)
    p.add_argument("--frames", type=positive_int, default=60)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--synthetic", action="store_true", help="synthetic objects instead of the SOD photos")
    p.add_argument("--speed", action="store_true", help="one camera-like clip with sound (speed.mp4) instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.speed:
        print(speed_clip(args.folder / f"speed_{height}p.mp4", width, height, args.frames))
        return 0
    for clip, masks in truth_clips(args.folder, args.clips, args.frames, (width, height), args.synthetic):
        print(clip, masks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
