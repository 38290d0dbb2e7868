"""End-to-end speed of the runtime's pipeline, measured as ratios within one run.

    python -m benchmarks.pipeline                  # U²-NetP 320, the runtime's default CPU backend, all scenarios
    python -m benchmarks.pipeline --ckpt u2netp.pth --photos 8 --json pipeline.json
    python -m benchmarks.pipeline --int8 --backend openvino     # the u8/s8 INT8 file on OpenVINO

0. Per step, one 12 MP cutout at a time on one thread: decode, preprocess (resize + normalise),
   inference, postprocess (mask resize + RGBA assembly), encode (PNG), write; with the runtime's codecs
   and with the OpenCV codecs they replaced (``runtime.codecs`` without its libraries), same photos.
1. Large photos, mode cutout: a folder of 12-megapixel JPEGs through ``runtime`` versus rembg's own
   ``remove()`` loop (bytes in, PNG bytes out) on the same ONNX file; speed ratio and output size ratio.
   Goal: >= 15x rembg's speed with outputs <= 1.2x rembg's size. Needs ``pip install rembg``.
2. Small photos (~0.15 MP, the SOD photos), mode mask: images/s of the whole pipeline (decode, resize,
   model, postprocess, PNG write) versus the bare model on preprocessed batches, alternated ``--rounds``
   times; the median of the rounds' ratios is reported. Goal: >= 0.95x. Beside it: the CPU the pipeline
   spends per image outside the model (its answers replayed), the cores the bare model keeps busy, and
   the best ratio those two allow on this machine (``ceiling``), to tell lost scheduling from real work.

Like ``runtime.infer``, the benchmark keeps freed memory for reuse (``runtime.allocator``; rembg shares
the process, so it gets the same) unless ``--release-memory``.

The 12 MP inputs are made from the SOD photos (or synthetic images) upscaled with a little sensor-like
noise, and written as JPEG quality 92, in a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import hardware_header, measure
from benchmarks.runners import cached_int8, cached_onnx
from export.samples import SOD_DIR, sample_images
from runtime import allocator, codecs
from runtime.api import Remover
from runtime.argtypes import positive_int
from runtime.io import read_image, write_atomic
from runtime.pipeline import Pipeline, images_alive
from runtime.preprocess import postprocess, resize_to_input
from runtime.render import RenderOptions, draw, encode

LARGE_SIZE = (4032, 3024)  # 12.2 MP, a phone camera's frame


@dataclass(frozen=True)
class Engine:
    """What the runtime's side runs: ``file`` (the FP32 file or its INT8 form) on ``backend`` (None: default)."""

    fp32: Path
    file: Path
    backend: str | None = None

    def remover(self, **options: int) -> Remover:
        return Remover(self.file, backend=self.backend, provider="cpu", **options)


def make_large_photos(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(sample_images(n)[0]):
        big = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), LARGE_SIZE, interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0, 3.0, big.shape).astype(np.float32)
        big = np.clip(big.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:03d}.jpg"
        cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_rembg(onnx: Path, photos: list[Path], out: Path) -> float:
    from rembg import new_session, remove

    # rembg loads custom models only from inside its home folder: point that at ours.
    os.environ.pop("U2NET_HOME", None)
    os.environ["REMBG_HOME"] = str(onnx.parent.resolve())
    session = new_session("u2net_custom", model_path=str(onnx))
    out.mkdir(parents=True, exist_ok=True)
    remove(photos[0].read_bytes(), session=session)  # untimed, as for ours: first-call set-up is not speed
    started = time.perf_counter()
    for path in photos:
        (out / f"{path.stem}.png").write_bytes(remove(path.read_bytes(), session=session))
    return time.perf_counter() - started


def run_ours(remover: Remover, inputs: list[str], out: Path, mode: str) -> float:
    summary = Pipeline(remover, out, options=RenderOptions(mode=mode), progress=False).run(inputs)
    if summary.failed:
        raise RuntimeError(f"runtime pipeline failed on {summary.failed} inputs")
    return summary.seconds


def alpha_difference(ours: Path, theirs: Path) -> float:
    """Mean |alpha_ours - alpha_rembg| / 255: both must have cut out the same thing."""
    diffs = []
    for path in sorted(ours.glob("*.png")):
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., 3].astype(np.float32)
        b = cv2.imread(str(theirs / path.name), cv2.IMREAD_UNCHANGED)[..., 3].astype(np.float32)
        diffs.append(float(np.abs(a - b).mean()) / 255.0)
    return float(np.mean(diffs))


STEPS = ("decode", "preprocess", "inference", "postprocess", "encode", "write")


def _one_cutout(remover: Remover, photo: Path, target: Path) -> dict[str, float]:
    """The pipeline's per-image work, step by step on this thread (as its I/O threads and engine do it)."""
    times, clock = {}, time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[step], clock = now - clock, now

    image, shape = read_image(photo, order="bgr")
    lap("decode")
    model_input = remover.prepare(cv2.cvtColor(resize_to_input(image, remover.spec.size), cv2.COLOR_BGR2RGB))
    lap("preprocess")
    probability = remover.predict(model_input[None])[0]
    lap("inference")
    options = RenderOptions()
    rgba = draw(image, postprocess(probability, shape), options)
    lap("postprocess")
    data = encode(rgba, options)
    lap("encode")
    write_atomic(target, data)
    lap("write")
    return times


def _opencv_codecs() -> dict:
    """Switch runtime.codecs to the OpenCV paths it replaced; returns what to put back."""
    saved = {name: getattr(codecs, name) for name in ("simplejpeg", "isal_zlib", "deflate")}
    for name in saved:
        setattr(codecs, name, None)
    return saved


def step_times(engine: Engine, photos: list[Path], work: Path, rounds: int = 2) -> dict:
    """Median seconds per step for the runtime's codecs and for OpenCV's, interleaved photo by photo."""
    remover = engine.remover()
    samples: dict[str, dict[str, list[float]]] = {"runtime": {s: [] for s in STEPS}, "opencv": {s: [] for s in STEPS}}
    _one_cutout(remover, photos[0], work / "warmup.png")
    for _ in range(rounds):
        for photo in photos:
            for which in ("runtime", "opencv"):
                saved = _opencv_codecs() if which == "opencv" else {}
                try:
                    for step, seconds in _one_cutout(remover, photo, work / f"{which}.png").items():
                        samples[which][step].append(seconds)
                finally:
                    for name, module in saved.items():
                        setattr(codecs, name, module)
    remover.close()
    return {"scenario": "12MP cutout steps", "images": len(photos) * rounds,
            **{f"{which}_ms": {s: 1000 * float(np.median(v)) for s, v in steps.items()} for which, steps in samples.items()}}


def large_photos(engine: Engine, photos: list[Path], work: Path) -> dict:
    """Ours (with the runtime's codecs, then with OpenCV's), rembg, ours again: the two runs of ours
    bracket rembg's, so a change in the machine's load shows as a difference between them. rembg runs
    the FP32 file, whatever ours runs. Neither side times its set-up: each first runs untimed on as many
    photos as it holds at once (rembg one; ours ``images_alive``: loads queued, a batch, writes pending), so the
    heap has grown to its working set (the first run after scenario 0 was 0.29-0.31 s/img, later ones 0.20)."""
    n, folder = len(photos), str(photos[0].parent)
    remover = engine.remover()
    run_ours(remover, [str(p) for p in photos[: images_alive(remover.batch_size)]], work / "warmup_large", "cutout")
    first_s = run_ours(remover, [folder], work / "ours_large", "cutout")
    saved = _opencv_codecs()
    try:
        opencv_s = run_ours(remover, [folder], work / "opencv_large", "cutout")
    finally:
        for name, module in saved.items():
            setattr(codecs, name, module)
    rembg_s = run_rembg(engine.fp32, photos, work / "rembg_large")
    second_s = run_ours(remover, [folder], work / "ours_large", "cutout")
    remover.close()
    ours_s = (first_s + second_s) / 2
    ours_b, rembg_b = folder_bytes(work / "ours_large"), folder_bytes(work / "rembg_large")
    return {"scenario": "12MP cutout", "images": n, "ours_runs_s": [first_s, second_s],
            "ours_s_per_image": ours_s / n, "opencv_codecs_s_per_image": opencv_s / n,
            "rembg_s_per_image": rembg_s / n, "speedup_vs_rembg": rembg_s / ours_s,
            "speedup_vs_opencv_codecs": opencv_s / ours_s,
            "ours_mb_per_image": ours_b / n / 1e6, "opencv_codecs_mb_per_image": folder_bytes(work / "opencv_large") / n / 1e6,
            "rembg_mb_per_image": rembg_b / n / 1e6, "size_ratio_vs_rembg": ours_b / rembg_b,
            "mean_alpha_difference": alpha_difference(work / "ours_large", work / "rembg_large")}


class ReplayedModel:
    """A ``Remover`` whose every batch gets one real answer of its model back, at no cost: running the
    pipeline on it measures the CPU the pipeline itself spends per image (decode to write)."""

    def __init__(self, remover: Remover, answer: np.ndarray) -> None:
        self._remover, self._answer = remover, answer

    def __getattr__(self, name: str) -> object:
        return getattr(self._remover, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._answer[: len(batch)].copy()


def _with_cpu(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(fn(), CPU seconds of this process, wall seconds) for one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def ceiling(bare_rate: float, bare_cores: float, io_ms: float, cores: int) -> float:
    """The best pipeline/bare ratio this machine allows: per image, the model's CPU (its wall time x the
    cores it keeps busy) plus the pipeline's own CPU, shared perfectly over ``cores``."""
    model_s = 1.0 / bare_rate
    return model_s / max(model_s, (model_s * bare_cores + io_ms / 1000.0) / cores)


def small_photos(engine: Engine, n: int, work: Path, batch_size: int, rounds: int = 3) -> dict:
    """The pipeline in mask mode against the bare model, alternated ``rounds`` times: each round's ratio
    comes from two runs seconds apart, and the median of the rounds steadies it on a busy machine.

    Also measured, to tell scheduling losses from work: the CPU the pipeline spends per image with the
    model's answers replayed, the cores the bare model keeps busy, and the ceiling those two imply."""
    folder = SOD_DIR / "images"
    if folder.is_dir():
        inputs = [str(p) for p in sorted(folder.glob("*.jpg"))[:n]]
    else:  # no SOD photos on this machine: synthetic ones of a similar size
        folder = work / "small"
        folder.mkdir(parents=True)
        inputs = []
        for i, image in enumerate(sample_images(n)[0]):
            path = folder / f"{i:04d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(image, (481, 321)), cv2.COLOR_RGB2BGR))
            inputs.append(str(path))
    remover = engine.remover(batch_size=batch_size)
    batch = np.stack([remover.prepare(img) for img in sample_images(remover.batch_size)[0]])
    replayed = ReplayedModel(remover, remover.predict(batch))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_round = []
    for r in range(rounds):
        bare, cpu_s, wall_s = _with_cpu(
            lambda: measure(lambda: remover.predict(batch), remover.batch_size, seconds=len(inputs) / 10, warmup=2))
        out = work / f"ours_small_{r}"
        e2e = len(inputs) / run_ours(remover, inputs, out, "mask")
        replay_out = work / f"replayed_small_{r}"
        _, io_cpu_s, _ = _with_cpu(lambda: run_ours(replayed, inputs, replay_out, "mask"))  # noqa: B023 - called here
        shutil.rmtree(out)
        shutil.rmtree(replay_out)
        bare_cores = cpu_s / wall_s
        io_ms = 1000 * io_cpu_s / len(inputs)
        per_round.append({"bare_model_images_per_s": bare.throughput, "pipeline_images_per_s": e2e,
                          "ratio_vs_bare_model": e2e / bare.throughput, "bare_model_cores_busy": bare_cores,
                          "pipeline_cpu_ms_per_image": io_ms,
                          "ceiling_vs_bare_model": ceiling(bare.throughput, bare_cores, io_ms, cores)})
    remover.close()
    return {"scenario": "0.15MP mask", "images": len(inputs), "batch_size": remover.batch_size, "cores": cores,
            **{key: float(np.median([r[key] for r in per_round])) for key in per_round[0]}, "rounds": per_round}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, help="U²-NetP weights to export (default: random weights; speed only)")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--photos", type=int, default=6, help="12 MP photos for scenarios 0 and 1; 0 skips both (default 6)")
    p.add_argument("--small", type=int, default=120, help="small photos for scenario 2 (default 120)")
    p.add_argument("--batch-size", type=int, default=4, help="engine batch for scenario 2 (default 4)")
    p.add_argument("--rounds", type=positive_int, default=3,
                   help="scenario 2's alternations of bare model and pipeline; the median is reported (default 3)")
    p.add_argument("--skip-rembg", action="store_true", help="skip scenario 1")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"),
                   help="the runtime's backend (default: the runtime's own choice on this CPU)")
    p.add_argument("--int8", action="store_true", help="run the u8/s8 INT8 file (X.int8-ort.onnx) instead of FP32")
    p.add_argument("--release-memory", action="store_true",
                   help="leave malloc at the C library's default, as runtime.infer --release-memory does")
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # As the CLI does; rembg runs in this process too, so both sides get the same allocator.
    kept = not args.release_memory and allocator.keep_freed_memory()

    fp32 = cached_onnx("u2netp", args.size, args.ckpt)
    engine = Engine(fp32, cached_int8("u2netp", args.size, args.ckpt, "ort") if args.int8 else fp32, args.backend)
    print(hardware_header())
    print("Allocator: " + ("freed memory kept for reuse, as runtime.infer does (rembg shares this process)" if kept
                           else "the C library's default (memory handed back on free)"))
    with engine.remover() as probe:
        print(f"Model: {probe.backend.describe()}; rembg runs {fp32.name} (FP32)\n", flush=True)
    results = []
    work = Path(tempfile.mkdtemp(prefix="u2net_pipeline_"))
    try:
        photos = make_large_photos(work / "large", args.photos) if args.photos else []
        r = step_times(engine, photos, work) if photos else None
        if r:
            results.append(r)
            print(f"0. per step, one 12 MP cutout at a time, median of {r['images']} (ms):")
            print("   " + " ".join(f"{s:>11s}" for s in (*STEPS, "total")), flush=True)
            for which, label in (("runtime", "runtime codecs"), ("opencv", "OpenCV codecs")):
                ms = r[f"{which}_ms"]
                print(f"   {' '.join(f'{ms[s]:11.1f}' for s in STEPS)} {sum(ms.values()):11.1f}  {label}", flush=True)
        if photos and not args.skip_rembg:
            try:
                import rembg  # noqa: F401
            except ImportError:
                print("error: rembg is not installed (pip install rembg, or the 'rembg' extra); "
                      "use --skip-rembg to run scenarios 0 and 2 only", file=sys.stderr)
                return 2
            r = large_photos(engine, photos, work)
            results.append(r)
            print(f"1. {r['images']} × 12 MP JPEG, cutout: runtime {r['ours_s_per_image']:.2f} s/img "
                  f"(runs {r['ours_runs_s'][0] / r['images']:.2f} and {r['ours_runs_s'][1] / r['images']:.2f}), "
                  f"with OpenCV codecs {r['opencv_codecs_s_per_image']:.2f}, rembg {r['rembg_s_per_image']:.2f} s/img "
                  f"-> {r['speedup_vs_rembg']:.2f}× rembg (goal ≥ 15×), {r['speedup_vs_opencv_codecs']:.2f}× the OpenCV "
                  f"codecs; PNG {r['ours_mb_per_image']:.2f} MB (OpenCV codecs {r['opencv_codecs_mb_per_image']:.2f}) vs "
                  f"rembg {r['rembg_mb_per_image']:.2f} MB -> {r['size_ratio_vs_rembg']:.3f}× the size (goal ≤ 1.2×); "
                  f"mean alpha difference {r['mean_alpha_difference']:.4f}", flush=True)
        r = small_photos(engine, args.small, work, args.batch_size, args.rounds)
        results.append(r)
        rounds = ", ".join(f"{x['ratio_vs_bare_model']:.2f}" for x in r["rounds"])
        print(f"2. {r['images']} small photos, mask, batch {r['batch_size']}, medians of {len(r['rounds'])} "
              f"alternations: pipeline {r['pipeline_images_per_s']:.2f} img/s, bare model "
              f"{r['bare_model_images_per_s']:.2f} img/s -> {r['ratio_vs_bare_model']:.2f}× (rounds: {rounds}; "
              f"goal ≥ 0.95×)")
        print(f"   outside the model the pipeline spends {r['pipeline_cpu_ms_per_image']:.2f} ms of CPU per image "
              f"(its answers replayed); the bare model keeps {r['bare_model_cores_busy']:.2f} of {r['cores']} cores "
              f"busy, so the best ratio this machine allows is {r['ceiling_vs_bare_model']:.2f}×")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
