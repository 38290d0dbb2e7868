"""Clean edges (foreground colour decontamination): edge error against a known truth, and 12 MP time.

    python -m benchmarks.edges                        # 40 SOD photos: none, ours, rembg's
    python -m benchmarks.edges --photos 10 --size12mp --json edges.json

Composites whose truth is known: each SOD photo is a foreground F, its ground-truth mask blurred
(Gaussian, sigma ``--soften`` pixels, so the edge has a real soft band) is the alpha a, and the photo is
laid over another SOD photo and over pure green, red and blue: I = a*F + (1-a)*B. Every method gets
(I, a) and returns F^; the cutout is laid over a new background B2 (a third SOD photo) and compared
with the truth a*F + (1-a)*B2: the mean absolute difference in colour levels (0..255), over the soft
band 0 < a < 255 only (elsewhere every method is exact or invisible). The difference is a*|F^ - F|
whatever B2 is. Methods:

- ``none``: F^ = I, the cutout as it is without decontamination;
- ``ours``: ``runtime.matting.estimate_foreground``;
- ``rembg``: rembg 2.0.86's ``remove(..., decontaminate=True)`` path, ``rembg.bg.decontaminate_cutout``
  (pymatting's ``estimate_foreground_ml(image / 255, alpha / 255)`` with its default parameters),
  called directly; skipped when rembg is not installed (the ``rembg`` extra).

Time: one composite at 12 MP (4000x3000: a SOD photo and its softened mask upscaled, over green),
each method the median of ``--runs`` runs (rembg's of ``--rembg-runs``; its first call, which compiles
pymatting's numba code, is not timed). In the same run, our own 12 MP cutout: ``Remover(onnx).cutout``
of that composite as a JPEG file (decode, model, mask, RGBA) with a random-weight U²-NetP 320 ONNX on
the runtime's default CPU backend, runs interleaved with ours so both see the same machine.
Freed memory is kept for reuse, as ``runtime.infer`` does, unless ``--release-memory``.
``--size12mp`` also measures the edge errors at 12 MP, on the first ``--photos12`` photos upscaled.

Without the SOD photos the benchmark says so and exits 2: its truth must be real photos.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import hardware_header
from runtime import allocator
from runtime.argtypes import positive_int
from runtime.io import read_image
from runtime.matting import estimate_foreground

SIZE_12MP = (4000, 3000)
COLOURS = {"green": (0, 255, 0), "red": (255, 0, 0), "blue": (0, 0, 255)}  # RGB
KINDS = ("photo", *COLOURS)

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (RGB image, alpha) -> RGB foreground


def rembg_method() -> Method | None:
    """rembg's own decontamination, as ``remove(..., decontaminate=True)`` runs it; None without rembg."""
    try:
        from PIL import Image
        from rembg.bg import decontaminate_cutout
    except ImportError:
        return None

    def run(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        rgba = decontaminate_cutout(Image.fromarray(image), Image.fromarray(alpha))
        return np.asarray(rgba)[..., :3]

    return run


def methods(with_rembg: bool) -> dict[str, Method]:
    table: dict[str, Method] = {"none": lambda image, alpha: image, "ours": estimate_foreground}
    theirs = rembg_method() if with_rembg else None
    if theirs is not None:
        table["rembg"] = theirs
    return table


def soften(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def composite(f: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """a*F + (1-a)*B, rounded to uint8, as a camera would record it."""
    a = alpha[..., None].astype(np.float32) * np.float32(1 / 255)
    return cv2.add(f * a, b * (1 - a), dtype=cv2.CV_8U)


def edge_error(estimate: np.ndarray, truth: np.ndarray, alpha: np.ndarray, backdrop: np.ndarray) -> float:
    """Mean |a*F^ + (1-a)*B2 - (a*F + (1-a)*B2)| over the soft band and the channels, in levels."""
    band = (alpha > 0) & (alpha < 255)
    a = alpha[band].astype(np.float32)[:, None] / 255
    b2 = backdrop[band].astype(np.float32)
    ours = a * estimate[band].astype(np.float32) + (1 - a) * b2
    true = a * truth[band].astype(np.float32) + (1 - a) * b2
    return float(np.mean(np.abs(ours - true)))


def resize_to(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def load_photos(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, mask) pairs, the first ``count`` SOD photos in name order."""
    from export.samples import sod_mask, sod_photos

    return [(read_image(p)[0], read_image(sod_mask(p), order="gray")[0]) for p in sod_photos(count)]


def edge_errors(photos: list[tuple[np.ndarray, np.ndarray]], table: dict[str, Method], sigma: float,
                size: tuple[int, int] | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """Mean edge error per method and background kind. Photo i is laid over photo i+1 (``photo``) and
    the colours, and re-composited over photo i+2; ``size`` (W, H) upscales everything first."""
    errors: dict[str, dict[str, list[float]]] = {m: {k: [] for k in KINDS} for m in table}
    n = len(photos)
    for i, (f, mask) in enumerate(photos):
        alpha = soften(mask, sigma)
        if size is not None:
            f = cv2.resize(f, size, interpolation=cv2.INTER_CUBIC)
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)
        backdrop = resize_to(photos[(i + 2) % n][0], f.shape)
        backgrounds = {"photo": resize_to(photos[(i + 1) % n][0], f.shape)}
        backgrounds |= {name: np.full_like(f, rgb) for name, rgb in COLOURS.items()}
        for kind, b in backgrounds.items():
            image = composite(f, b, alpha)
            for name, method in table.items():
                errors[name][kind].append(edge_error(method(image, alpha), f, alpha, backdrop))
    return {m: {k: float(np.mean(v)) for k, v in kinds.items()} for m, kinds in errors.items()}


def large_composite(photo: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """A 12 MP composite over green (RGB) and its alpha: a photo and its softened mask upscaled."""
    f = cv2.resize(photo, SIZE_12MP, interpolation=cv2.INTER_CUBIC)
    alpha = cv2.resize(soften(mask, sigma), SIZE_12MP, interpolation=cv2.INTER_LINEAR)
    return composite(f, np.full_like(f, COLOURS["green"]), alpha), alpha


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_12mp(table: dict[str, Method], image: np.ndarray, alpha: np.ndarray, runs: int, rembg_runs: int,
              onnx: Path, work: Path) -> tuple[dict[str, float], float, str]:  # fmt: skip
    """Median seconds per method on the 12 MP composite, and of our own cutout of it (as a JPEG), with
    the backend's description. Ours and the cutout alternate, so they share the machine's state."""
    from runtime.api import Remover

    path = work / "composite_12mp.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    seconds: dict[str, list[float]] = {name: [] for name in table if name != "none"}
    cutout: list[float] = []
    with Remover(onnx) as remover:
        backend = remover.backend.describe()
        remover.cutout(path)  # untimed, as each method's first call: set-up is not speed
        estimate_foreground(image, alpha)
        for _ in range(runs):
            cutout.append(timed(lambda: remover.cutout(path)))
            seconds["ours"].append(timed(lambda: estimate_foreground(image, alpha)))
    if "rembg" in table:
        table["rembg"](image[:64, :64].copy(), alpha[:64, :64].copy())  # compiles pymatting's numba code
        seconds["rembg"] = [timed(lambda: table["rembg"](image, alpha)) for _ in range(rembg_runs)]
    return {name: statistics.median(s) for name, s in seconds.items()}, statistics.median(cutout), backend


def markdown(errors: dict[str, dict[str, float]], seconds: dict[str, float], cutout_s: float,
             errors_12mp: dict[str, dict[str, float]] | None) -> str:  # fmt: skip
    kinds = [f"vs {k}" for k in KINDS] + ([f"12 MP vs {k}" for k in KINDS] if errors_12mp else [])
    lines = ["| method | " + " | ".join(kinds) + " | 12 MP time | × rembg's time | share of our 12 MP cutout |",
             "|---" * (len(kinds) + 4) + "|"]
    for name, by_kind in errors.items():
        cells = [f"{by_kind[k]:.2f}" for k in KINDS]
        if errors_12mp:
            cells += [f"{errors_12mp[name][k]:.2f}" for k in KINDS]
        if name in seconds:
            ratio = f"{seconds[name] / seconds['rembg']:.4f}" if "rembg" in seconds else "n/a"
            cells += [f"{seconds[name]:.3f} s", ratio, f"{100 * seconds[name] / cutout_s:.1f} %"]
        else:
            cells += ["—", "—", "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.edges", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=positive_int, default=40, help="SOD photos used as foregrounds (default 40)")
    p.add_argument("--soften", type=float, default=1.5,
                   help="Gaussian sigma, in pixels of the SOD photos, that softens the masks into alphas (default 1.5)")
    p.add_argument("--runs", type=positive_int, default=7, help="timed runs of ours and of the cutout (default 7)")
    p.add_argument("--rembg-runs", type=positive_int, default=3, help="timed runs of rembg's (default 3)")
    p.add_argument("--size12mp", action="store_true", help="also measure the edge errors on 12 MP composites")
    p.add_argument("--photos12", type=positive_int, default=4, help="photos for --size12mp (default 4)")
    p.add_argument("--skip-rembg", action="store_true", help="leave rembg's method out")
    p.add_argument("--release-memory", action="store_true",
                   help="leave malloc at the C library's default, as runtime.infer --release-memory does")
    p.add_argument("--json", type=Path, help="write the results as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kept = not args.release_memory and allocator.keep_freed_memory()  # as the CLI does; both sides share it
    print(hardware_header())
    print("Allocator: " + ("freed memory kept for reuse, as runtime.infer does" if kept
                           else "the C library's default (memory handed back on free)"), flush=True)
    photos = load_photos(args.photos)
    if len(photos) < 3:
        from export.samples import SOD_DIR

        print(f"error: the SOD photos with masks are not at {SOD_DIR} (set U2NET_SOD_DIR): "
              "this benchmark's truth is real photos", file=sys.stderr)
        return 2
    table = methods(not args.skip_rembg)
    if not args.skip_rembg and "rembg" not in table:
        print("warning: rembg is not installed (pip install '.[rembg]'): its row is left out", file=sys.stderr)
    print(f"\n{len(photos)} SOD photos, masks blurred with sigma {args.soften} px, over photos / "
          f"{' / '.join(COLOURS)}; mean |error| in levels over the soft band:", flush=True)
    errors = edge_errors(photos, table, args.soften)
    errors_12mp = None
    if args.size12mp:
        errors_12mp = edge_errors(photos[: max(args.photos12, 3)], table, args.soften, SIZE_12MP)

    from benchmarks.runners import cached_onnx

    onnx = cached_onnx("u2netp", 320, None)
    work = Path(tempfile.mkdtemp(prefix="u2net_edges_"))
    try:
        image, alpha = large_composite(*photos[0], args.soften)
        seconds, cutout_s, backend = time_12mp(table, image, alpha, args.runs, args.rembg_runs, onnx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(errors, seconds, cutout_s, errors_12mp))
    soft = float(np.count_nonzero((alpha > 0) & (alpha < 255))) / alpha.size
    rembg_runs = f" ({args.rembg_runs} for rembg)" if "rembg" in seconds else ""
    print(f"\n12 MP: {SIZE_12MP[0]}x{SIZE_12MP[1]}, {100 * soft:.1f} % of the pixels soft; medians of {args.runs} "
          f"runs{rembg_runs}. Our cutout of it: {cutout_s:.3f} s ({backend}, random weights)")
    if args.json:
        result = {"photos": len(photos), "soften_sigma": args.soften, "edge_error": errors,
                  "edge_error_12mp": errors_12mp, "seconds_12mp": seconds, "cutout_seconds_12mp": cutout_s,
                  "cutout_backend": backend, "soft_fraction_12mp": soft}
        args.json.write_text(json.dumps(result, indent=2))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
