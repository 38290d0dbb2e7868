"""Peak memory (RSS) of ``python -m runtime.infer`` runs, each in a fresh process.

    python -m benchmarks.memory --engine u2netp.onnx --engine u2net.onnx --pixels 12e6

For every engine, mode (mask, cutout) and batch (1, and the largest the runtime allows on this
machine: ``--batch-size`` far above it, reduced by the memory rule) one run processes enough
copies of one photo-sized JPEG to fill the batch, and the peak RSS of that process is reported
(``getrusage`` of the finished child). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import REPO
from runtime.memory import cpu_batch_limit


def photo(path: Path, pixels: float, seed: int) -> None:
    """A smooth, photo-like JPEG of about ``pixels`` pixels in 4:3 (noise compresses unlike photos)."""
    width = int(round((pixels * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def peak_rss(argv: list[str]) -> tuple[int, str]:
    """(peak RSS in bytes, stderr) of one CLI run in a fresh process (run through a tiny wrapper
    whose own children's maximum is that run's alone)."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
               "sys.stderr.write(p.stderr)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "runtime.infer", *argv],
                          capture_output=True, text=True, env=env)
    rss_kb, code = proc.stdout.split()
    if code != "0":
        raise RuntimeError(f"run failed ({code}): {proc.stderr.strip().splitlines()[-1:]}")
    return int(rss_kb) * 1024, proc.stderr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", action="append", required=True, type=Path, help=".onnx engine (repeatable)")
    p.add_argument("--pixels", type=float, default=12e6, help="photo size in pixels (default: 12e6)")
    p.add_argument("--size", type=int, default=320, help="the engines' input size, to size the largest batch")
    args = p.parse_args(argv)
    largest = cpu_batch_limit(args.size)
    rows = ["| engine | mode | batch | images | peak RSS |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp, "in")
        inputs.mkdir()
        for i in range(largest):
            photo(inputs / f"{i:03d}.jpg", args.pixels, i)
        for engine in args.engine:
            for mode in ("mask", "cutout"):
                for batch, images in ((1, 2), (100_000, largest)):
                    chosen = [str(inputs / f"{i:03d}.jpg") for i in range(images)]
                    rss, err = peak_rss(["--engine", str(engine), *chosen, "-o", str(Path(tmp, "out")),
                                         "--mode", mode, "--batch-size", str(batch), "--provider", "cpu",
                                         "--no-progress"])
                    used = re.search(r"batches of up to (\d+)", err)
                    label = used.group(1) if used else str(batch)
                    rows.append(f"| {engine.name} | {mode} | {label} | {images} | {rss / 2**30:.2f} GiB |")
                    print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
