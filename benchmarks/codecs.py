"""JPEG decoders and PNG/WebP encoders on 12 MP photos: time and bytes, as ratios within one run.

    python -m benchmarks.codecs                    # 3 photos, 3 interleaved rounds
    python -m benchmarks.codecs --photos 5 --rounds 5 --json codecs.json

Photos: SOD photos (or synthetic scenes) upscaled to 4032x3024 with a little sensor-like noise, JPEG
quality 92, kept in memory. Cutouts: the decoded photo with an alpha channel, with "visible" colours (what the
runtime writes by default: each colour to the precision its alpha shows) and "exact" ones (only
cleared where alpha is 0), for two kinds of mask: "object" (the SOD ground truth with soft edges,
what a trained model gives) and "soft" (a low-resolution map over the whole frame, what an untrained
model gives: almost no pixel is fully transparent, so the files are far larger). Every encoder's output
is decoded again and compared with its input. An ``fpng`` row is added when that package is installed
(it is no dependency of the project: its files are up to 44 % larger).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import hardware_header
from runtime import codecs
from runtime.io import read_image

LARGE_SIZE = (4032, 3024)


def make_photos(n: int) -> list[tuple[bytes, np.ndarray]]:
    """``n`` (JPEG bytes, object mask at full size) pairs."""
    from export.samples import sod_mask, sod_photos

    rng = np.random.default_rng(0)
    pairs = []
    paths = sod_photos(n)
    for i in range(n):
        if i < len(paths):
            bgr = read_image(paths[i], order="bgr")[0]
            mask = read_image(sod_mask(paths[i]), order="gray")[0]
        else:
            from train.synthetic import make_sample

            rgb, mask = make_sample(i, size=320)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        big = cv2.resize(bgr, LARGE_SIZE, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big = np.clip(big + rng.normal(0, 3.0, big.shape).astype(np.float32), 0, 255).astype(np.uint8)
        jpeg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        soft_edges = cv2.GaussianBlur(mask, (5, 5), 0)
        pairs.append((jpeg, cv2.resize(soft_edges, LARGE_SIZE, interpolation=cv2.INTER_LINEAR)))
    return pairs


def cutout(bgr: np.ndarray, alpha: np.ndarray, colours: str) -> np.ndarray:
    from runtime.render import apply_cutout

    return apply_cutout(bgr, alpha, colours=colours)


def soft_alpha(bgr: np.ndarray) -> np.ndarray:
    small = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (320, 320), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 4)
    return cv2.resize(small, LARGE_SIZE, interpolation=cv2.INTER_LINEAR)


def _opencv_png(level: int, strategy: int | None = None) -> Callable[[np.ndarray], bytes]:
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    if strategy is not None:  # OpenCV resets the strategy when it reads the compression flag: it must follow
        params += [cv2.IMWRITE_PNG_STRATEGY, strategy]
    return lambda bgra: cv2.imencode(".png", bgra, params)[1].tobytes()


def _pillow_default(bgra: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)).save(out, "PNG")  # what rembg writes
    return out.getvalue()


def encoders(with_pillow: bool) -> dict[str, tuple[Callable[[np.ndarray], bytes], bool]]:
    """name -> (encode BGRA, lossless)."""
    rows: dict[str, tuple[Callable[[np.ndarray], bytes], bool]] = {
        "OpenCV PNG level 1, up filter (before)": (_opencv_png(1), True),
        "OpenCV PNG level 1, up, RLE strategy": (_opencv_png(1, cv2.IMWRITE_PNG_STRATEGY_RLE), True),
        "OpenCV PNG level 6, up": (_opencv_png(6), True),
    }
    for level in (0, 1, 2, 3, 4, 6, 9, 12):
        rows[f"runtime PNG --png-level {level}"] = ((lambda lv: lambda im: codecs.encode_png(im, lv))(level), True)
    rows["OpenCV WebP lossless (--quality 100)"] = (lambda im: cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(), True)
    rows["OpenCV WebP lossy --quality 90"] = (lambda im: cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes(), False)
    try:
        import fpng

        rows["fpng 0.1 (not used: larger files)"] = (lambda im: bytes(fpng.from_ndarray(cv2.cvtColor(im, cv2.COLOR_BGRA2RGBA))), True)
    except ImportError:
        pass
    if with_pillow:
        rows["Pillow PNG defaults (rembg)"] = (_pillow_default, True)
    return rows


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_decode(jpegs: list[bytes], rounds: int) -> list[dict]:
    arrays = [np.frombuffer(j, np.uint8) for j in jpegs]
    cases = {
        "cv2.imdecode, full size (before)": lambda i: cv2.imdecode(arrays[i], cv2.IMREAD_COLOR),
        "runtime decode_jpeg, full size": lambda i: codecs.decode_jpeg(jpegs[i], order="bgr"),
        "cv2.imdecode 1/4 (IMREAD_REDUCED_COLOR_4)": lambda i: cv2.imdecode(arrays[i], cv2.IMREAD_REDUCED_COLOR_4),
        "runtime decode_jpeg, factor 4": lambda i: codecs.decode_jpeg(jpegs[i], order="bgr", factor=4),
    }
    for i in range(len(jpegs)):  # same pixels as OpenCV, or the comparison means nothing
        for a, b in (("cv2.imdecode, full size (before)", "runtime decode_jpeg, full size"),
                     ("cv2.imdecode 1/4 (IMREAD_REDUCED_COLOR_4)", "runtime decode_jpeg, factor 4")):
            if not np.array_equal(cases[a](i), cases[b](i)):
                raise AssertionError(f"photo {i}: {b} differs from {a}")
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            for i in range(len(jpegs)):
                times[name].append(_timed(lambda: fn(i))[0])  # noqa: B023 - called at once
    base = float(np.median(times["cv2.imdecode, full size (before)"]))
    return [{"step": "JPEG decode", "name": k, "ms": 1000 * float(np.median(v)), "time_ratio": float(np.median(v)) / base}
            for k, v in times.items()]


def bench_encode(images: list[np.ndarray], rounds: int, with_pillow: bool) -> list[dict]:
    rows = encoders(with_pillow)
    times: dict[str, list[float]] = {k: [] for k in rows}
    sizes: dict[str, list[int]] = {k: [] for k in rows}
    for r in range(rounds):
        for name, (fn, lossless) in rows.items():
            for image in images:
                seconds, data = _timed(lambda: fn(image))  # noqa: B023 - called at once
                times[name].append(seconds)
                if r == 0:
                    sizes[name].append(len(data))
                    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                    visible = image[..., 3] > 0  # WebP drops the colour of invisible pixels
                    if lossless and not np.array_equal(back[visible], image[visible]):
                        raise AssertionError(f"{name} did not give back its input")
    base = "OpenCV PNG level 1, up filter (before)"
    t0, b0 = float(np.median(times[base])), float(np.mean(sizes[base]))
    return [{"step": "encode", "name": k, "ms": 1000 * float(np.median(times[k])), "time_ratio": float(np.median(times[k])) / t0,
             "mb": float(np.mean(sizes[k])) / 1e6, "size_ratio": float(np.mean(sizes[k])) / b0} for k in rows]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.codecs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--no-pillow", action="store_true", help="skip Pillow's PNG encoder (slow)")
    p.add_argument("--colours", nargs="+", choices=("visible", "exact"), default=["visible", "exact"],
                   help="cutout colours to encode (runtime.render.apply_cutout; default: both)")
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(hardware_header(), flush=True)
    pairs = make_photos(args.photos)
    results = bench_decode([j for j, _ in pairs], args.rounds)
    print(f"\nJPEG decode, {args.photos} photos 4032x3024, median of {args.rounds} rounds (pixels checked equal):")
    for r in results:
        print(f"  {r['name']:45s} {r['ms']:7.1f} ms  {r['time_ratio']:.2f}x")
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j, _ in pairs]
    masks = (("object", [m for _, m in pairs]), ("soft", [soft_alpha(d) for d in decoded]))
    for (kind, alphas), colours in itertools.product(masks, args.colours):
        images = [cutout(d, a, colours) for d, a in zip(decoded, alphas, strict=True)]
        rows = bench_encode(images, args.rounds, not args.no_pillow)
        print(f"\nRGBA cutout encode, '{kind}' masks, {colours} colours:")
        for r in rows:
            r["masks"], r["colours"] = kind, colours
            print(f"  {r['name']:45s} {r['ms']:7.1f} ms  {r['time_ratio']:.2f}x  {r['mb']:6.2f} MB  {r['size_ratio']:.3f}x")
        results += rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
