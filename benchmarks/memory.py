"""Peak memory (RSS) of ``python -m runtime.infer`` runs, each in a fresh process.

    python -m benchmarks.memory --engine u2netp.onnx --engine u2net.onnx --pixels 12e6
    python -m benchmarks.memory --engine u2netp.onnx --table batches --available 9.2e9

Two Markdown tables:

``modes``: for every engine, mode (mask, cutout) and batch (1, and the largest the runtime allows on
this machine: ``--batch-size`` far above it, reduced by the memory rule) one run processes enough
copies of one photo-sized JPEG to fill the batch.

``batches``: for every engine and CPU backend installed (ONNX Runtime, OpenVINO), runs of 1, 2 and 4
full batches at the batch the memory rule cuts ``--batch-size 100000`` to, next to the activation
budget it allowed (batch x ``bytes_per_image``, at most ``MEMORY_SHARE`` of the memory available).
Peak RSS must not grow with the number of batches: the bound is one batch's activations plus the
decoded images ``runtime.pipeline.images_alive`` counts (and the engine itself). Every run sees the
same memory available: ``--available BYTES``, default what the machine has when the table starts
(``runtime.memory.available_memory`` replaced in the child), so a small value keeps the cut batch,
and the memory the benchmark takes, small on a big machine.

The peak RSS of each process is ``getrusage`` of the finished child.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import REPO
from runtime.memory import MEMORY_SHARE, available_memory, bytes_per_image, cpu_batch_limit

BATCHES = (1, 2, 4)
CPU_BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # backend name -> its module


def photo(path: Path, pixels: float, seed: int) -> None:
    """A smooth, photo-like JPEG of about ``pixels`` pixels in 4:3 (noise compresses unlike photos)."""
    width = int(round((pixels * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


# The child: `python -m runtime.infer ARGV...`, optionally seeing `available` bytes of memory available.
_CHILD = """\
import runpy, sys
available = int(sys.argv.pop(1))
if available >= 0:
    import runtime.api, runtime.memory
    runtime.memory.available_memory = runtime.api.available_memory = lambda: available
sys.argv[0] = "runtime.infer"
runpy.run_module("runtime.infer", run_name="__main__", alter_sys=True)
"""


def peak_rss(argv: list[str], available: int | None = None) -> tuple[int, str]:
    """(peak RSS in bytes, stderr) of one CLI run in a fresh process (run through a tiny wrapper
    whose own children's maximum is that run's alone). ``available``: the bytes of memory the run
    sees as available (default: what the machine really has)."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
               "sys.stderr.write(p.stderr)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = [sys.executable, "-c", _CHILD, str(-1 if available is None else int(available))]
    proc = subprocess.run([sys.executable, "-c", wrapper, *child, *argv],
                          capture_output=True, text=True, env=env, cwd=REPO)
    rss_kb, code = proc.stdout.split()
    if code != "0":
        raise RuntimeError(f"run failed ({code}): {proc.stderr.strip().splitlines()[-1:]}")
    return int(rss_kb) * 1024, proc.stderr


def used_batch(stderr: str) -> int | None:
    """The batch a run used, from its ``running ..., batches of up to N`` line."""
    found = re.search(r"batches of up to (\d+)", stderr)
    return int(found.group(1)) if found else None


def installed_backends() -> list[str]:
    return [name for name, module in CPU_BACKENDS.items() if importlib.util.find_spec(module) is not None]


def batches_peaks(engine: Path, backend: str, folder: Path, *, batch: int, available: int | None,
                  pixels: float = 12e6, mode: str = "cutout", batches: tuple[int, ...] = BATCHES,
                  extra: tuple[str, ...] = ()) -> dict[int, int]:
    """Peak RSS (bytes) of one fresh CLI run per entry of ``batches``: that many full batches of
    ``batch`` photo-sized JPEGs (``batch`` is what the memory rule must cut ``--batch-size 100000``
    to, given ``available``; a different cut raises). ``folder`` holds the photos between calls."""
    source = folder / "photos"
    source.mkdir(parents=True, exist_ok=True)
    images = batch * max(batches)
    for i in range(images):  # distinct files: the planner processes each resolved file once
        if not (source / f"{i:04d}.jpg").exists():
            photo(source / f"{i:04d}.jpg", pixels, i)
    peaks = {}
    for count in batches:
        inputs = folder / f"in-{count}"
        shutil.rmtree(inputs, ignore_errors=True)
        inputs.mkdir()
        for i in range(count * batch):
            os.link(source / f"{i:04d}.jpg", inputs / f"{i:04d}.jpg")
        out = folder / "out"
        shutil.rmtree(out, ignore_errors=True)
        rss, err = peak_rss(["--engine", str(engine), str(inputs), "-o", str(out), "--mode", mode,
                             "--batch-size", "100000", "--backend", backend, "--no-progress", *extra],
                            available=available)
        if used_batch(err) != batch:
            raise RuntimeError(f"{backend}: the memory rule cut the batch to {used_batch(err)}, not {batch}")
        peaks[count] = rss
    return peaks


def modes_table(engines: list[Path], pixels: float, size: int, tmp: Path) -> list[str]:
    largest = cpu_batch_limit(size)
    rows = ["| engine | mode | batch | images | peak RSS |", "|---|---|---|---|---|"]
    inputs = tmp / "in"
    inputs.mkdir()
    for i in range(largest):
        photo(inputs / f"{i:03d}.jpg", pixels, i)
    for engine in engines:
        for mode in ("mask", "cutout"):
            for batch, images in ((1, 2), (100_000, largest)):
                chosen = [str(inputs / f"{i:03d}.jpg") for i in range(images)]
                rss, err = peak_rss(["--engine", str(engine), *chosen, "-o", str(tmp / "out"),
                                     "--mode", mode, "--batch-size", str(batch), "--provider", "cpu",
                                     "--no-progress"])
                label = used_batch(err) or batch
                rows.append(f"| {engine.name} | {mode} | {label} | {images} | {rss / 2**30:.2f} GiB |")
                print(rows[-1], flush=True)
    return rows


def batches_table(engines: list[Path], backends: list[str], pixels: float, size: int, mode: str,
                  available: int | None, tmp: Path) -> list[str]:
    if available is None:
        available = available_memory() or 0
    batch = cpu_batch_limit(size, available)
    budget = batch * bytes_per_image(size)
    heads = " | ".join(f"{n} batch{'es' if n > 1 else ''}" for n in BATCHES)
    rows = [f"| engine | backend | batch | activation budget | {heads} | {max(BATCHES)} ÷ 1 |",
            "|---|---|---|---|" + "---|" * len(BATCHES) + "---|"]
    for engine in engines:
        for backend in backends:
            peaks = batches_peaks(engine, backend, tmp / "batches", batch=batch, available=available,
                                  pixels=pixels, mode=mode)
            cells = " | ".join(f"{peaks[n] / 2**30:.2f} GiB" for n in BATCHES)
            rows.append(f"| {engine.name} | {backend} | {batch} | {budget / 2**30:.2f} GiB | {cells} | "
                        f"{peaks[max(BATCHES)] / peaks[1]:.2f} |")
            print(rows[-1], flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", action="append", required=True, type=Path, help=".onnx engine (repeatable)")
    p.add_argument("--pixels", type=float, default=12e6, help="photo size in pixels (default: 12e6)")
    p.add_argument("--size", type=int, default=320, help="the engines' input size, to size the largest batch")
    p.add_argument("--table", choices=("modes", "batches", "all"), default="all", help="which table (default: all)")
    p.add_argument("--backend", action="append", choices=tuple(CPU_BACKENDS),
                   help="backend of the batches table (repeatable; default: every one installed)")
    p.add_argument("--mode", choices=("mask", "cutout"), default="cutout", help="mode of the batches table")
    p.add_argument("--available", type=float,
                   help="batches table: bytes of memory each run sees as available (default: the machine's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tables = []
        if args.table in ("modes", "all"):
            tables.append(modes_table(args.engine, args.pixels, args.size, Path(tmp)))
        if args.table in ("batches", "all"):
            available = None if args.available is None else int(args.available)
            tables.append(batches_table(args.engine, args.backend or installed_backends(), args.pixels,
                                        args.size, args.mode, available, Path(tmp)))
    print(f"\n(MEMORY_SHARE {MEMORY_SHARE}, {args.pixels / 1e6:g} MP photos)")
    for rows in tables:
        print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
