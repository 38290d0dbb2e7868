"""Speed of U²-Net / U²-NetP on every backend this machine has, against the paper's GTX 1080 Ti.

    python -m benchmarks.fps                         # both variants, random weights, all backends
    python -m benchmarks.fps --ckpt u2net.pth --batch-sizes 1,4,8 --json fps.json --plot fps.png
    python -m benchmarks.fps --engine grpc://127.0.0.1:8001/u2netp --engine u2netp.onnx   # given engines only

"model" times the network on a preprocessed batch already where it runs; "e2e" times a decoded
photo in host memory -> preprocess -> network (with host<->device copies) -> mask at the photo's size.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from benchmarks.common import PAPER_DEVICE, PAPER_FPS, Timing, hardware_header, measure
from benchmarks.runners import RowSpec, available_rows
from export.samples import sample_images
from runtime import atomic
from runtime.atomic import atomic_path
from runtime.backends import BackendError
from runtime.logs import setup_logging
from runtime.preprocess import postprocess, preprocess

log = logging.getLogger("benchmarks.fps")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="u2net,u2netp", help="comma-separated variants (default: both)")
    p.add_argument("--ckpt", type=Path, help="real weights (variant inferred); default: random weights")
    p.add_argument("--engine", action="append", metavar="ENGINE", help="benchmark this engine instead (repeatable): "
                   "a .onnx/.plan file or a Triton URL such as grpc://127.0.0.1:8001/u2netp")  # fmt: skip
    p.add_argument("--backends", help="only these, e.g. onnxruntime,openvino,pytorch,tensorrt or onnxruntime-cpu")
    p.add_argument("--batch-sizes", help="default: 1,4,8 on a GPU, 1 on a CPU")
    p.add_argument("--size", type=int, default=320, help="input size (default 320, the paper's)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement (default 4)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before each measurement")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every row this many times, interleaved; p50 is the median over all rounds "
                   "(use 3+ on a machine shared with other work)")
    p.add_argument("--no-e2e", action="store_true", help="skip end-to-end timing")
    p.add_argument("--json", type=Path, help="write one object per row to this file")
    p.add_argument("--plot", type=Path, help="write a bar chart (PNG) to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def time_row(runner, batch_sizes: list[int], images: list, args: argparse.Namespace) -> dict[int, tuple]:
    """{batch size: (model Timing, end-to-end Timing or None)} for one round of one row."""
    timings = {}
    for bs in batch_sizes:
        batch_images = [images[i % len(images)] for i in range(bs)]
        batch = preprocess(batch_images, runner.spec)
        staged = runner.stage(batch)
        model = measure(lambda staged=staged: runner.run_staged(staged), bs, args.seconds, args.warmup)

        def end_to_end(imgs=batch_images):
            out = runner.run(preprocess(imgs, runner.spec))
            return [postprocess(o, img.shape[:2]) for o, img in zip(out, imgs, strict=True)]

        e2e = None if args.no_e2e else measure(end_to_end, bs, args.seconds, args.warmup)
        timings[bs] = (model, e2e)
    return timings


def merge(first: Timing | None, second: Timing | None) -> Timing | None:
    """Two rounds' latencies as one Timing (its p50 is the median over all rounds)."""
    if first is None or second is None:
        return first or second
    return Timing(first.latencies_ms + second.latencies_ms, first.batch_size)


def run_rows(rows: list[RowSpec], batch_sizes: list[int], images: list, args: argparse.Namespace) -> tuple[list, int]:
    """Every row, ``args.rounds`` times interleaved (row 1, row 2, ..., row 1, row 2, ...), so that a
    machine whose load changes slows all rows alike; one broken backend does not hide the others."""
    runners, failed = {}, 0
    for i, row in enumerate(rows):
        try:
            runners[i] = row.make()
            if runners[i].name != row.backend.split("+")[0]:  # a row measures what its label says, or nothing
                raise RuntimeError(f"opened {runners.pop(i).name}, not {row.backend}")
        except Exception as exc:
            failed += 1
            print(f"  {row.model} {row.backend} {row.precision} on {row.device}: failed: {exc}", file=sys.stderr)
    timings: dict[int, dict[int, tuple]] = {i: {} for i in runners}
    for rnd in range(args.rounds):
        for i, runner in list(runners.items()):
            row = rows[i]
            print(f"  round {rnd + 1}/{args.rounds}: {row.model} {row.backend} {row.precision} on {row.device} ...",
                  file=sys.stderr, flush=True)
            try:
                got = time_row(runner, batch_sizes, images, args)
            except Exception as exc:
                failed += 1
                del runners[i], timings[i]
                print(f"  {row.model} {row.backend} {row.precision} on {row.device}: failed: {exc}", file=sys.stderr)
                continue
            for bs, (model, e2e) in got.items():
                old = timings[i].get(bs, (None, None))
                timings[i][bs] = (merge(old[0], model), merge(old[1], e2e))
    records = [make_record(rows[i], bs, model, e2e) for i in timings for bs, (model, e2e) in timings[i].items()]
    add_ratios(records)
    return records, failed


def add_ratios(records: list[dict]) -> None:
    """``vs_ort_fp32``: p50 latency of the ONNX Runtime FP32 CPU row (same model, batch) ÷ this row's."""
    base = {(r["model"], r["batch_size"]): r for r in records
            if (r["backend"], r["precision"], r["device"]) == ("onnxruntime", "fp32", "cpu")}
    for r in records:
        ref = base.get((r["model"], r["batch_size"]))
        if ref is None:
            continue
        r["vs_ort_fp32"] = ref["latency_ms_p50"] / r["latency_ms_p50"]
        if "e2e_latency_ms_p50" in r and "e2e_latency_ms_p50" in ref:
            r["e2e_vs_ort_fp32"] = ref["e2e_latency_ms_p50"] / r["e2e_latency_ms_p50"]


def engine_rows(engines: list[str], fallback_variant: str) -> list[RowSpec]:
    """One row per engine given on the command line (files or Triton URLs), opened up front."""
    from runtime.backends import open_backend

    rows = []
    for engine in engines:
        backend = open_backend(engine)
        variant, precision = backend.artifact.variant, backend.artifact.precision
        rows.append(RowSpec(variant if variant in PAPER_FPS else fallback_variant, backend.name, precision, engine,
                            lambda backend=backend: backend))  # fmt: skip
    return rows


def make_record(row: RowSpec, bs: int, model: Timing, e2e: Timing | None) -> dict:
    paper = PAPER_FPS[row.model]
    rec = {
        "model": row.model, "backend": row.backend, "precision": row.precision, "device": row.device,
        "batch_size": bs, "iterations": len(model.latencies_ms),
        "latency_ms_p50": model.percentile(50), "latency_ms_p90": model.percentile(90),
        "latency_ms_p99": model.percentile(99), "throughput_fps": model.throughput,
        "vs_1080ti": model.throughput / paper,
    }
    if e2e is not None:
        rec.update({"e2e_latency_ms_p50": e2e.percentile(50), "e2e_latency_ms_p99": e2e.percentile(99),
                    "e2e_throughput_fps": e2e.throughput, "e2e_vs_1080ti": e2e.throughput / paper})
    return rec


def paper_records(variants: list[str]) -> list[dict]:
    return [{"model": v, "backend": "pytorch", "precision": "fp32", "device": PAPER_DEVICE, "batch_size": 1,
             "latency_ms_p50": 1000.0 / PAPER_FPS[v], "throughput_fps": PAPER_FPS[v], "vs_1080ti": 1.0}
            for v in variants]


def markdown_table(records: list[dict]) -> str:
    cols = [("model", "model", "{}"), ("backend", "backend", "{}"), ("precision", "precision", "{}"),
            ("device", "device", "{}"), ("batch_size", "batch", "{}"), ("latency_ms_p50", "p50 ms", "{:.1f}"),
            ("latency_ms_p90", "p90 ms", "{:.1f}"), ("latency_ms_p99", "p99 ms", "{:.1f}"),
            ("throughput_fps", "img/s", "{:.1f}"), ("vs_ort_fp32", "vs ORT FP32", "{:.2f}×"),
            ("vs_1080ti", "vs 1080 Ti", "{:.2f}×"), ("e2e_latency_ms_p50", "e2e p50 ms", "{:.1f}"),
            ("e2e_throughput_fps", "e2e img/s", "{:.1f}"), ("e2e_vs_ort_fp32", "e2e vs ORT FP32", "{:.2f}×"),
            ("e2e_vs_1080ti", "e2e vs 1080 Ti", "{:.2f}×")]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        lines.append("| " + " | ".join(fmt.format(r[k]) if k in r else "–" for k, _, fmt in cols) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']} {r['backend']} {r['precision']} {r['device']} b{r['batch_size']}" for r in records]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(records) + 1.5))
    y = range(len(records))
    ax.barh([i + 0.2 for i in y], [r["throughput_fps"] for r in records], height=0.4, label="model")
    ax.barh([i - 0.2 for i in y], [r.get("e2e_throughput_fps", 0) for r in records], height=0.4, label="end-to-end")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (320×320)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:  # matplotlib picks the format by the suffix
        fig.savefig(tmp, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(default=logging.INFO if args.verbose else logging.WARNING)
    variants = [v.strip() for v in args.models.split(",") if v.strip()]
    unknown = [v for v in variants if v not in PAPER_FPS]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(PAPER_FPS)}", file=sys.stderr)
        return 2
    if args.ckpt is not None:
        from train.checkpoint import CheckpointError, load_checkpoint

        try:
            variants = [load_checkpoint(args.ckpt).variant]
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    backends = {b.strip() for b in args.backends.split(",")} if args.backends else None
    try:
        rows = engine_rows(args.engine, variants[0]) if args.engine else available_rows(
            variants, args.size, args.ckpt, max_batch=8, backends=backends)  # fmt: skip
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no backend matches --backends {args.backends}", file=sys.stderr)
        return 2
    on_gpu = any(r.device == "cuda" for r in rows)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,8" if on_gpu else "1")).split(",")]

    print(hardware_header())
    print(f"Input {args.size}×{args.size}; weights: {args.ckpt or (', '.join(args.engine) if args.engine else 'random (speed only)')}; "
          f"{args.seconds:g} s per measurement after {args.warmup} warm-up runs, {args.rounds} interleaved round(s)\n",
          flush=True)
    images = sample_images(max(batch_sizes))[0]
    started = time.perf_counter()
    records, failed = run_rows(rows, batch_sizes, images, args)
    table = paper_records(variants) + records
    print(markdown_table(table))
    print(f"\n{len(records)} rows in {time.perf_counter() - started:.0f} s. 'vs 1080 Ti' = images/s ÷ the paper's "
          f"{', '.join(f'{v} {PAPER_FPS[v]:g} FPS' for v in variants)} (PyTorch, batch 1); "
          "'vs ORT FP32' = p50 latency of the ONNX Runtime FP32 CPU row in this run ÷ the row's.")
    if args.json:
        atomic.write_text(args.json, json.dumps(table, indent=2) + "\n")
        print(f"JSON: {args.json}")
    if args.plot:
        try:
            plot(table, args.plot)
            print(f"Plot: {args.plot}")
        except ImportError:
            print("error: --plot needs matplotlib (pip install matplotlib, or the 'bench' extra)", file=sys.stderr)
            return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
