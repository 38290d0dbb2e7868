"""`make demo`: the whole chain on a fresh CPU machine in a few minutes, using the real commands.

synthetic data -> a short U²-NetP training -> ONNX + FP16 ONNX (+ TensorRT when present)
-> cutouts into demo_out/ -> accuracy (SOD photos when present) -> the FPS table.
Every step is one of the toolkit's own commands, printed before it runs, so it can be rerun by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from export.samples import SOD_DIR, sod_photos
from runtime.names import fp16_path


def step(title: str, args: list[str], results: str | None = None) -> None:
    cmd = [sys.executable, "-m", *args]
    print(f"\n=== {title}\n$ python -m {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    status = subprocess.call(cmd)
    if status != 0:
        raise SystemExit(f"demo: step '{title}' failed (exit {status}); command: python -m {shlex.join(args)}")
    print(f"--- {title}: done in {time.perf_counter() - started:.0f} s" + (f"; results in {results}" if results else ""))


def have_tensorrt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="where everything goes (default demo_out/)")
    p.add_argument("--iters", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--size", type=int, default=128, help="training/inference size for the demo model")
    args = p.parse_args(argv)
    out: Path = args.out
    data, run = out / "data", out / "run"
    marker = out / ".u2net-demo"
    if out.exists():
        if not marker.exists():
            raise SystemExit(f"demo: {out} exists and was not made by the demo; choose another --out")
        print(f"removing the previous demo output in {out}/")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.touch()
    started = time.perf_counter()

    step("1. synthetic data (train 400 / val 40)",
         ["train.synthetic", "--out", str(data / "train"), "--n", "400", "--seed", "0", "--size", "160"])
    step("1b. synthetic validation data",
         ["train.synthetic", "--out", str(data / "val"), "--n", "40", "--seed", "100000", "--size", "160"],
         results=str(data))
    step(f"2. train U²-NetP for {args.iters} iterations on the CPU",
         ["train", "--data", str(data / "train"), "--val", str(data / "val"), "--model", "u2netp",
          "--out", str(run), "--iters", str(args.iters), "--size", str(args.size), "--crop", str(args.size - 16),
          "--batch-size", "8", "--workers", "1", "--val-every", "100", "--seed", "0"],
         results=f"{run}/best.pth, {run}/last.pth and the log")
    onnx = out / "u2netp.onnx"
    step("3. export to ONNX (FP32) and FP16 ONNX, each verified against PyTorch",
         ["export.to_onnx", str(run / "best.pth"), "-o", str(onnx), "--fp16"],
         results=f"{onnx} and {fp16_path(onnx)}")
    if have_tensorrt_gpu():
        step("3b. build and verify a TensorRT FP16 engine",
             ["export.to_trt", str(run / "best.pth"), "-o", str(out / "u2netp.plan")], results=str(out / "u2netp.plan"))
    else:
        print("\n=== 3b. TensorRT: skipped (needs the tensorrt package and an NVIDIA GPU)")
    step("4. cutouts of the validation images", ["runtime.infer", "--engine", str(onnx), str(data / "val" / "images"),
                                                 "-o", str(out / "cutouts"), "--mode", "cutout"],
         results=str(out / "cutouts"))
    photos = sod_photos(6)
    if photos:
        step("4b. cutouts of a few real photos (model trained on synthetic shapes only)",
             ["runtime.infer", "--engine", str(onnx), *map(str, photos), "-o", str(out / "cutouts_photos")],
             results=str(out / "cutouts_photos"))
    step("5. accuracy on the synthetic validation set: FP32 vs FP16 ONNX",
         ["benchmarks.accuracy", "--engine", str(onnx), "--compare", str(fp16_path(onnx)),
          "--data", str(data / "val"), "--json", str(out / "accuracy_val.json")],
         results=str(out / "accuracy_val.json"))
    if (SOD_DIR / "images").is_dir():
        step("5b. accuracy on the SOD photos (a synthetic-trained demo model: expect low numbers)",
             ["benchmarks.accuracy", "--engine", str(onnx), "--json", str(out / "accuracy_sod.json")],
             results=str(out / "accuracy_sod.json"))
    step("6. speed on every backend this machine has (random weights, 320×320)",
         ["benchmarks.fps", "--seconds", "3", "--json", str(out / "fps.json"), "--plot", str(out / "fps.png")],
         results=f"{out / 'fps.json'} and {out / 'fps.png'}")
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Everything is under {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
