"""Load test of ``runtime.serve``: N concurrent clients against a real Triton server, on loopback only.

    python -m benchmarks.serve                                  # U²-NetP 320x320, random weights, 4 clients
    python -m benchmarks.serve --engine u2netp.onnx --clients 8 --requests 400 --json serve.json

Each client sends one preprocessed image per request (online traffic), through the project's Triton
backend, and waits for its mask before sending the next. Reported: throughput, latency p50/p90/p99, the
batch sizes Triton's dynamic batcher formed (mean from the Prometheus metrics endpoint, the histogram
from the statistics API), errors (must be 0; exit 1 otherwise), and the ratio to in-process inference
on the same engine in the same run (one image at a time, the same number of images). Bounded: at most
``--requests`` requests and ``--seconds`` seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.serve_process import missing_serve_venv, start_server
from runtime.argtypes import positive_float, positive_int
from runtime.atomic import write_text
from runtime.logs import setup_logging

log = logging.getLogger("benchmarks.serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--engine", type=Path, help="ONNX file (default: U²-NetP with random weights at --size)")
    p.add_argument("--size", type=positive_int, default=320, help="input size of the default engine")
    p.add_argument("--clients", type=positive_int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--requests", type=positive_int, default=120, help="requests in all, per phase (default 120)")
    p.add_argument("--seconds", type=positive_float, default=120.0, help="time limit per phase (default 120)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="largest batch Triton may form (default 8)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batcher's wait (default 2000)")
    p.add_argument("--json", type=Path, help="write the results to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    values = np.asarray(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)}


def in_process(engine: Path, images: np.ndarray, requests: int, seconds: float) -> dict[str, float]:
    """The same engine in this process, one image per run: the baseline the server is compared to."""
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(engine, provider="cpu")
    try:
        backend.run(images[:1])  # warm-up
        latencies, start = [], time.perf_counter()
        for i in range(requests):
            t0 = time.perf_counter()
            backend.run(images[i % len(images)][None])
            latencies.append(time.perf_counter() - t0)
            if t0 - start > seconds:
                break
        elapsed = time.perf_counter() - start
    finally:
        backend.close()
    return {"images": len(latencies), "seconds": round(elapsed, 2), "images_per_s": round(len(latencies) / elapsed, 2),
            **percentiles(latencies)}  # fmt: skip


def load(url: str, images: np.ndarray, clients: int, requests: int, seconds: float,
         snapshot: Callable[[], dict]) -> tuple[dict[str, object], dict]:  # fmt: skip
    """``clients`` threads, each with its own connection, share a budget of ``requests`` requests.

    ``snapshot()`` runs after the warm-up, so its figures can be subtracted from the final ones.
    """
    from runtime.backends.triton import TritonBackend

    backends = [TritonBackend(url, in_flight=1) for _ in range(clients)]
    for backend in backends:
        backend.run(images[:1])  # connect and warm up outside the timed part
    before = snapshot()
    budget = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()

    def client(backend: TritonBackend) -> None:
        while True:
            with lock:
                i = next(budget, None)
            if i is None or time.perf_counter() - start > seconds:
                return
            t0 = time.perf_counter()
            try:
                out = backend.run(images[i % len(images)][None])
                assert out.shape == (1, 1, *images.shape[2:])
            except Exception as exc:  # noqa: BLE001 - counted and reported, the load goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for backend in backends:
        backend.close()
    return {"images": len(latencies), "seconds": round(elapsed, 2), "images_per_s": round(len(latencies) / elapsed, 2),
            **(percentiles(latencies) if latencies else {}), "errors": len(errors),
            "first_errors": errors[:3]}, before  # fmt: skip


def metric(text: str, name: str, model: str) -> float:
    """One counter of the Prometheus text format, summed over the model's versions."""
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} ([0-9.e+]+)$', re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def batch_counts(metrics_port: int, http_port: int, model: str) -> dict[str, object]:
    """Counters so far: items and executions from the metrics endpoint, executions per batch size from stats."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    items, runs = metric(text, "nv_inference_count", model), metric(text, "nv_inference_exec_count", model)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/stats", timeout=10) as answer:
        stats = json.loads(answer.read())
    histogram: dict[int, int] = {}
    for entry in stats["model_stats"][0].get("batch_stats", []):
        histogram[int(entry["batch_size"])] = int(entry["compute_infer"]["count"])
    return {"inferences": int(items), "executions": int(runs), "executions_per_batch_size": histogram}


def batch_figures(before: dict, after: dict) -> dict[str, object]:
    """What the timed part added: the batches Triton formed from the clients' requests."""
    items, runs = after["inferences"] - before["inferences"], after["executions"] - before["executions"]
    sizes = {b: n - before["executions_per_batch_size"].get(b, 0)
             for b, n in sorted(after["executions_per_batch_size"].items())}  # fmt: skip
    return {"inferences": items, "executions": runs, "mean_batch": round(items / runs, 2) if runs else 0.0,
            "executions_per_batch_size": {b: n for b, n in sizes.items() if n}}


def settled(counts: Callable[[], dict], expected: int, timeout_s: float = 10.0) -> dict:
    """The counters once they have caught up with the answers received (Triton updates them asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = counts()
        if now["inferences"] >= expected or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def default_engine(size: int) -> Path:
    from benchmarks.runners import cached_onnx

    return cached_onnx("u2netp", size, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbose=args.verbose)
    reason = missing_serve_venv()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    from runtime.backends.onnxrt import OnnxRuntimeBackend
    from runtime.preprocess import preprocess

    engine = args.engine or default_engine(args.size)
    spec = OnnxRuntimeBackend(engine, provider="cpu").spec
    rng = np.random.default_rng(0)
    images = preprocess([rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)], spec)
    local = in_process(engine, images, args.requests, args.seconds)
    log.info("in-process: %s", local)
    with tempfile.TemporaryDirectory(prefix="u2b-") as folder:
        server = start_server(engine, Path(folder), "--name", "bench", "--image-port", "0",
                              "--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us))  # fmt: skip
        try:
            counts = lambda: batch_counts(server.metrics, server.http, "bench")  # noqa: E731
            served, before = load(server.grpc_url, images, args.clients, args.requests, args.seconds, counts)
            batches = batch_figures(before, settled(counts, before["inferences"] + served["images"]))
        finally:
            code = server.stop()
    result = {"engine": str(engine), "size": spec.size, "clients": args.clients, "max_batch": args.max_batch,
              "in_process": local, "served": served, "batching": batches, "server_exit": code,
              "served_over_in_process": round(served["images_per_s"] / local["images_per_s"], 2)}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 1 if served["errors"] or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
