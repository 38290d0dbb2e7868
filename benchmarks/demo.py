"""`make demo`: the whole chain on a fresh CPU machine in a few minutes, using the real commands.

Without official weights: synthetic data -> a short U²-NetP training -> ONNX + FP16 ONNX (+ TensorRT when
present) -> cutouts into demo_out/ -> accuracy (SOD photos when present) -> the FPS table.
With official weights (``--weights``, ``$U2NET_WEIGHTS``, or ``u2net.onnx`` / ``u2netp.onnx`` fetched by
``python -m export.fetch`` into its folder): the same chain on them, without the training (a ``.pth`` is
exported and verified first), so the cutouts of real photos come from the real model.
Every step is one of the toolkit's own commands, printed before it runs, so it can be rerun by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from export.fetch import SOURCES, weights_dir
from export.samples import SOD_DIR, sod_photos
from runtime.artifact import Artifact
from runtime.errors import BackendError
from runtime.names import fp16_path
from runtime.onnx_props import read_onnx_props

WEIGHTS_ENV = "U2NET_WEIGHTS"  # a .onnx or .pth file for the demo to show
GET_REAL = ("this model was trained here for minutes on synthetic shapes; to see the official U²-Net instead: "
            "python -m export.fetch u2net, then make demo again")  # fmt: skip
SOD_LIMIT = 100  # photos scored with an official model: U²-Net takes ~0.35 s each on two CPU cores


@dataclass(frozen=True)
class Step:
    title: str
    args: list[str]  # after `python -m`
    results: str | None = None


def run(step: Step) -> None:
    cmd = [sys.executable, "-m", *step.args]
    print(f"\n=== {step.title}\n$ python -m {shlex.join(step.args)}", flush=True)
    started = time.perf_counter()
    status = subprocess.call(cmd)
    if status != 0:
        raise SystemExit(f"demo: step '{step.title}' failed (exit {status}); command: python -m {shlex.join(step.args)}")
    print(f"--- {step.title}: done in {time.perf_counter() - started:.0f} s"
          + (f"; results in {step.results}" if step.results else ""))  # fmt: skip


def have_tensorrt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def find_weights(explicit: Path | None = None) -> Path | None:
    """The official model to show: ``explicit``, else ``$U2NET_WEIGHTS``, else the first of u2net.onnx,
    u2netp.onnx, u2net.pth, u2netp.pth in ``export.fetch``'s folder; None when there is none. A file that
    was named but does not exist is an error, not a silent fallback to the default chain."""
    named = explicit or (Path(os.environ[WEIGHTS_ENV]).expanduser() if os.environ.get(WEIGHTS_ENV) else None)
    if named is not None:
        if not named.is_file():
            raise SystemExit(f"demo: {named}: no such file (from {'--weights' if explicit else WEIGHTS_ENV})")
        if named.suffix.lower() not in (".onnx", ".pth"):
            raise SystemExit(f"demo: {named}: expected an .onnx or .pth file")
        return named
    folder = weights_dir()
    for name in (*(f"{v}.onnx" for v in SOURCES), *(f"{v}.pth" for v in SOURCES)):
        if (folder / name).is_file():
            return folder / name
    return None


def variant_of(path: Path) -> str:
    """u2net or u2netp: the ONNX metadata when it says, else the file name (official files are named so)."""
    if path.suffix.lower() == ".onnx":
        try:
            variant = Artifact.from_onnx_props(read_onnx_props(path), path).variant
        except (OSError, ValueError, BackendError):  # unreadable: the first step that opens it will say so
            variant = "unknown"
        if variant in SOURCES:
            return variant
    return "u2netp" if "u2netp" in path.name.lower() else "u2net"


def default_plan(out: Path, iters: int, size: int, tensorrt: bool, photos: list[Path], sod: bool) -> list[Step | str]:
    """Train the embedded default and run the chain on it (strings are notes printed in place of a step)."""
    data, ckpt = out / "data", out / "run"
    onnx = out / "u2netp.onnx"
    plan: list[Step | str] = [
        Step("1. synthetic data (train 400 / val 40)",
             ["train.synthetic", "--out", str(data / "train"), "--n", "400", "--seed", "0", "--size", "160"]),
        Step("1b. synthetic validation data",
             ["train.synthetic", "--out", str(data / "val"), "--n", "40", "--seed", "100000", "--size", "160"],
             str(data)),
        Step(f"2. train U²-NetP for {iters} iterations on the CPU",
             ["train", "--data", str(data / "train"), "--val", str(data / "val"), "--model", "u2netp",
              "--out", str(ckpt), "--iters", str(iters), "--size", str(size), "--crop", str(size - 16),
              "--batch-size", "8", "--workers", "1", "--val-every", "100", "--seed", "0"],
             f"{ckpt}/best.pth, {ckpt}/last.pth and the log"),
        Step("3. export to ONNX (FP32) and FP16 ONNX, each verified against PyTorch",
             ["export.to_onnx", str(ckpt / "best.pth"), "-o", str(onnx), "--fp16"], f"{onnx} and {fp16_path(onnx)}"),
    ]  # fmt: skip
    if tensorrt:
        plan.append(Step("3b. build and verify a TensorRT FP16 engine",
                         ["export.to_trt", str(ckpt / "best.pth"), "-o", str(out / "u2netp.plan")],
                         str(out / "u2netp.plan")))  # fmt: skip
    else:
        plan.append("3b. TensorRT: skipped (needs the tensorrt package and an NVIDIA GPU)")
    plan.append(Step("4. cutouts of the validation images", ["runtime.infer", "--engine", str(onnx),
                     str(data / "val" / "images"), "-o", str(out / "cutouts"), "--mode", "cutout"],
                     str(out / "cutouts")))  # fmt: skip
    if photos:
        plan.append(Step("4b. cutouts of a few real photos (model trained on synthetic shapes only)",
                         ["runtime.infer", "--engine", str(onnx), *map(str, photos), "-o", str(out / "cutouts_photos")],
                         str(out / "cutouts_photos")))  # fmt: skip
    plan.append(Step("5. accuracy on the synthetic validation set: FP32 vs FP16 ONNX",
                     ["benchmarks.accuracy", "--engine", str(onnx), "--compare", str(fp16_path(onnx)),
                      "--data", str(data / "val"), "--json", str(out / "accuracy_val.json")],
                     str(out / "accuracy_val.json")))  # fmt: skip
    if sod:
        plan.append(Step("5b. accuracy on the SOD photos (a synthetic-trained demo model: expect low numbers)",
                         ["benchmarks.accuracy", "--engine", str(onnx), "--json", str(out / "accuracy_sod.json")],
                         str(out / "accuracy_sod.json")))  # fmt: skip
    plan.append(Step("6. speed on every backend this machine has (random weights, 320×320)",
                     ["benchmarks.fps", "--seconds", "3", "--json", str(out / "fps.json"), "--plot",
                      str(out / "fps.png")], f"{out / 'fps.json'} and {out / 'fps.png'}"))  # fmt: skip
    return plan


def official_plan(out: Path, weights: Path, tensorrt: bool, photos: list[Path], sod: bool) -> list[Step | str]:
    """The same chain on official weights: no training; a .pth is exported (and verified) first."""
    data = out / "data"
    variant = variant_of(weights)
    plan: list[Step | str] = [
        Step("1. synthetic validation data", ["train.synthetic", "--out", str(data / "val"), "--n", "40", "--seed",
             "100000", "--size", "160"], str(data)),
        f"2. training: skipped, showing the official weights {weights}",
    ]  # fmt: skip
    compare: list[str] = []
    if weights.suffix.lower() == ".pth":
        onnx = out / f"{variant}.onnx"
        plan.append(Step(f"3. export {weights.name} to ONNX (FP32) and FP16 ONNX, each verified against PyTorch",
                         ["export.to_onnx", str(weights), "-o", str(onnx), "--fp16"], f"{onnx} and {fp16_path(onnx)}"))
        compare = ["--compare", str(fp16_path(onnx))]
    else:
        onnx = weights
        plan.append(f"3. export: skipped, {weights.name} is already ONNX")
    if tensorrt:
        plan.append(Step("3b. build and verify a TensorRT FP16 engine",
                         ["export.to_trt", str(weights), "-o", str(out / f"{variant}.plan")],
                         str(out / f"{variant}.plan")))  # fmt: skip
    plan.append(Step("4. cutouts of the synthetic validation images",
                     ["runtime.infer", "--engine", str(onnx), str(data / "val" / "images"), "-o", str(out / "cutouts"),
                      "--mode", "cutout"], str(out / "cutouts")))  # fmt: skip
    if photos:
        plan.append(Step(f"4b. cutouts of {len(photos)} real photos by the official {variant}",
                         ["runtime.infer", "--engine", str(onnx), *map(str, photos), "-o", str(out / "cutouts_photos")],
                         str(out / "cutouts_photos")))  # fmt: skip
    plan.append(Step("5. accuracy on the synthetic validation set" + (": FP32 vs FP16 ONNX" if compare else ""),
                     ["benchmarks.accuracy", "--engine", str(onnx), *compare, "--data", str(data / "val"),
                      "--json", str(out / "accuracy_val.json")], str(out / "accuracy_val.json")))  # fmt: skip
    if sod:
        plan.append(Step(f"5b. accuracy on the first {SOD_LIMIT} SOD photos",
                         ["benchmarks.accuracy", "--engine", str(onnx), "--limit", str(SOD_LIMIT), "--json",
                          str(out / "accuracy_sod.json")], str(out / "accuracy_sod.json")))  # fmt: skip
    plan.append(Step(f"6. speed of {onnx.name} on every backend this machine has",
                     ["benchmarks.fps", "--models", variant, "--engine", str(onnx), "--seconds", "3", "--json",
                      str(out / "fps.json"), "--plot", str(out / "fps.png")],
                     f"{out / 'fps.json'} and {out / 'fps.png'}"))  # fmt: skip
    return plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="where everything goes (default demo_out/)")
    p.add_argument("--iters", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--size", type=int, default=128, help="training/inference size for the demo model")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help=f"official weights to show (.onnx or .pth; default: ${WEIGHTS_ENV}, else a file fetched by "
                   "python -m export.fetch)")
    p.add_argument("--no-weights", action="store_true", help="train the embedded default even when weights are here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    marker = out / ".u2net-demo"
    if out.exists() and not marker.exists():
        raise SystemExit(f"demo: {out} exists and was not made by the demo; choose another --out")
    weights = None if args.no_weights else find_weights(args.weights)
    if weights is not None and out.resolve() in weights.resolve().parents:
        raise SystemExit(f"demo: {weights} is inside {out}, which the demo clears; move it or choose another --out")
    if out.exists():
        print(f"removing the previous demo output in {out}/")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.touch()
    started = time.perf_counter()
    tensorrt, photos, sod = have_tensorrt_gpu(), sod_photos(6), (SOD_DIR / "images").is_dir()
    if weights is None:
        plan = default_plan(out, args.iters, args.size, tensorrt, photos, sod)
    else:
        print(f"showing the official weights {weights}")
        plan = official_plan(out, weights, tensorrt, photos, sod)
    for step in plan:
        if isinstance(step, Step):
            run(step)
        else:
            print(f"\n=== {step}")
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Everything is under {out}/")
    if weights is None:
        print(f"Note: {GET_REAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
