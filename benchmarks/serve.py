"""Load tests of the servers, on loopback only: Triton's gRPC (default) and the HTTP image endpoint (``--images``).

    python -m benchmarks.serve                                  # U²-NetP 320x320, random weights, 4 clients
    python -m benchmarks.serve --engine u2netp.onnx --clients 8 --requests 400 --json serve.json
    python -m benchmarks.serve --images                         # 1, 8, 64, 256 clients posting photos; rembg too
    python -m benchmarks.serve --images --levels 64 --placement standalone --placement triton --no-rembg

``--images``: N clients (one keep-alive connection each, asyncio) each POST a photo as
multipart/form-data (``file``), wait for its PNG mask, and post the next: SOD photos where the set is
here, else synthetic JPEGs. Per level (``--levels``, default 1,8,64,256): max(clients x
``--per-client``, ``--min-requests``) requests; throughput, p50/p99 latency and errors (anything but a
200: must be 0 at every level, exit 1 otherwise). In the same run and under the same load, rembg's own
server (``rembg s`` from ``make rembg-venv``, FastAPI) serves the same ONNX file as its ``u2net_custom``
model with ``om=true`` (masks), each side on its default backend. Each level runs on each server in
turn (the others idle), so both sides of a comparison meet the same background load.
``--placement`` picks how ours runs: ``standalone`` (``python -m runtime.serve.images`` in the main venv,
in-process engine), ``standalone-onnxruntime`` (the same on ONNX Runtime), ``triton`` (``runtime.serve``:
its image endpoint in the main venv over gRPC) or ``triton-inprocess`` (the endpoint inside the serve venv).

Triton's gRPC load test (the default):

Each client sends one preprocessed image per request (online traffic), through the project's Triton
backend, and waits for its mask before sending the next. Reported: throughput, latency p50/p90/p99, the
batch sizes Triton's dynamic batcher formed (mean from the Prometheus metrics endpoint, the histogram
from the statistics API), errors (must be 0; exit 1 otherwise), and the ratio to in-process inference
on the same engine in the same run (one image at a time, the same number of images). Bounded: at most
``--requests`` requests and ``--seconds`` seconds per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.serve_process import (
    HttpServer,
    missing_rembg,
    missing_serve_venv,
    rembg_request,
    start_images,
    start_rembg,
    start_server,
)
from runtime.argtypes import positive_float, positive_int
from runtime.atomic import write_text
from runtime.logs import setup_logging

log = logging.getLogger("benchmarks.serve")

PLACEMENTS = ("standalone", "standalone-onnxruntime", "triton", "triton-inprocess")


def build_parser() -> argparse.ArgumentParser:
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
    g = p.add_argument_group("the image endpoint (--images)")
    g.add_argument("--images", action="store_true", help="load-test the HTTP image endpoint and rembg's server")
    g.add_argument("--levels", default="1,8,64,256", help="concurrent clients per level (default 1,8,64,256)")
    g.add_argument("--per-client", type=positive_int, default=3, help="photos each client posts per level (3)")
    g.add_argument("--min-requests", type=positive_int, default=16, help="fewest requests per level (16)")
    g.add_argument("--timeout", type=positive_float, default=600.0, help="seconds one request may take (600)")
    g.add_argument("--photos", type=positive_int, default=64, help="distinct photos posted (default 64)")
    g.add_argument("--placement", action="append", choices=PLACEMENTS, help="how our endpoint runs "
                   "(repeatable; default standalone)")  # fmt: skip
    g.add_argument("--no-rembg", dest="rembg", action="store_false", help="leave rembg's server out")
    g.add_argument("--level-seconds", type=positive_float, default=900.0, help="time limit per level (900)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


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
    if args.images:
        return images_main(args)
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


# --- the HTTP image endpoint under load, beside rembg's server ---------------------------------------------


@dataclass
class Target:
    """One server under test: where to POST, which text fields go with the photo, what runs it."""

    name: str
    server: HttpServer
    path: str
    fields: dict[str, str] = field(default_factory=dict)
    runs: str = ""


def form_request(target: Target, photo: bytes, filename: str) -> bytes:
    """A whole HTTP/1.1 request: ``photo`` as multipart field ``file`` (as ``curl -F file=@...`` sends it)."""
    boundary = "u2net-load-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in target.fields.items()]  # fmt: skip
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")  # fmt: skip
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.server.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers.get(b"connection", b"").lower() == b"close"


async def _load(port: int, requests: list[bytes], clients: int, total: int, seconds: float,
                timeout: float) -> dict[str, object]:  # fmt: skip
    latencies: list[float] = []
    errors: list[str] = []
    taken = iter(range(total))
    start = time.perf_counter()

    async def client() -> None:
        reader = writer = None
        for i in taken:
            if time.perf_counter() - start > seconds:
                return
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                writer.write(requests[i % len(requests)])
                await writer.drain()
                status, close = await asyncio.wait_for(_response(reader), timeout - (time.perf_counter() - t0))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, IndexError) as exc:  # fmt: skip
                errors.append(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(f"HTTP {status}")
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    counted = {e: errors.count(e) for e in sorted(set(errors))}
    return {"clients": clients, "requests": len(latencies) + len(errors), "ok": len(latencies),
            "errors": len(errors), "error_kinds": counted, "seconds": round(elapsed, 2),
            "images_per_s": round(len(latencies) / elapsed, 2), **(percentiles(latencies) if latencies else {})}  # fmt: skip


def load_images(target: Target, requests: list[bytes], clients: int, total: int, seconds: float,
                timeout: float) -> dict[str, object]:  # fmt: skip
    return asyncio.run(_load(target.server.port, requests, clients, total, seconds, timeout))


def photo_bytes(count: int) -> tuple[list[tuple[str, bytes]], str]:
    """(file name, JPEG bytes) of ``count`` SOD photos, else of synthetic scenes; and which."""
    from export.samples import sod_photos

    files = sod_photos(count)
    if files:
        return [(f.name, f.read_bytes()) for f in files], f"{len(files)} SOD photos"
    import cv2

    from export.samples import synthetic_images

    scenes = [cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes() for rgb in synthetic_images(count)]
    return [(f"scene{i}.jpg", data) for i, data in enumerate(scenes)], f"{count} synthetic scenes (no SOD set here)"


def _first_line_with(server: HttpServer, word: str) -> str:
    return next((line for line in server.log_text().splitlines() if word in line), "")


def start_target(placement: str, engine: Path, folder: Path) -> Target:
    """Our endpoint, run as ``placement`` says, answering masks."""
    if placement.startswith("standalone"):
        extra = ("--backend", "onnxruntime") if placement == "standalone-onnxruntime" else ()
        server = start_images(engine, folder / placement, *extra, "-q")  # no access lines, as rembg's -l warning
        runs = _first_line_with(server, "serving ")
    else:
        triton = start_server(engine, folder / placement, "--name", "bench", "-q",
                              *(["--images-in-process"] if placement == "triton-inprocess" else []))  # fmt: skip
        server = HttpServer(triton.proc, triton.image, triton.log, name=f"runtime.serve ({placement})")
        runs = _first_line_with(server, " as model ")  # Triton's engine, not its image endpoint's gRPC client
    return Target(placement, server, "/v1/mask", runs=runs.split(": ")[0].removeprefix("serving "))


def run_levels(targets: list[Target], photos: list[tuple[str, bytes]], args: argparse.Namespace,
               results: dict[str, list[dict[str, object]]]) -> None:
    """Each level on each server in turn (one at a time, the others idle), so that the sides of a comparison
    are measured minutes apart at most, under the same background load."""
    requests = {t.name: [form_request(t, data, name) for name, data in photos] for t in targets}
    for target in targets:
        load_images(target, requests[target.name], 1, 4, args.level_seconds, args.timeout)  # warm-up
    for clients in [int(c) for c in args.levels.split(",")]:
        total = max(clients * args.per_client, args.min_requests)
        for target in targets:
            row = load_images(target, requests[target.name], clients, total, args.level_seconds, args.timeout)
            log.info("%s, %d clients: %s", target.name, clients, row)
            results.setdefault(target.name, []).append({"server": target.name, **row})


def table(results: dict[str, list[dict[str, object]]]) -> str:
    lines = ["| server | clients | requests | errors | images/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['clients']} | {r['requests']} | {r['errors']} | {r['images_per_s']} | "
                         f"{r.get('p50_ms', '-')} | {r.get('p99_ms', '-')} |")  # fmt: skip
    return "\n".join(lines)


def images_main(args: argparse.Namespace) -> int:
    from benchmarks.common import hardware_header

    print(hardware_header(), flush=True)
    engine = args.engine or default_engine(args.size)
    photos, source = photo_bytes(args.photos)
    print(f"engine: {engine}; photos: {source}, {sum(len(p) for _, p in photos) / len(photos) / 1e3:.0f} kB "
          f"on average; levels {args.levels} clients, max(clients x {args.per_client}, {args.min_requests}) "
          "requests each; masks as PNG", flush=True)  # fmt: skip
    placements = args.placement or ["standalone"]
    results: dict[str, list[dict[str, object]]] = {}
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="u2b-") as tmp:
        folder = Path(tmp)
        try:
            for placement in placements:
                if placement.startswith("triton") and missing_serve_venv():
                    log.warning("%s skipped: %s", placement, missing_serve_venv())
                    continue
                targets.append(start_target(placement, engine, folder))
            if args.rembg and missing_rembg():
                log.warning("rembg skipped: %s", missing_rembg())
            elif args.rembg:
                server = start_rembg(engine, folder / "rembg")
                path, fields = rembg_request(server)
                targets.append(Target("rembg", server, path, fields, runs="ONNX Runtime (rembg's u2net_custom)"))
            run_levels(targets, photos, args, results)
        finally:
            for target in targets:
                code = target.server.stop()
                if code != 0 and target.name != "rembg":
                    log.error("%s exited with %s", target.name, code)
                    results.setdefault(target.name, []).append({"server": target.name, "clients": "exit",
                                                                "requests": 0, "errors": 1, "images_per_s": 0})  # fmt: skip
    described = {t.name: t.runs for t in targets}
    print(table(results))
    for name, runs in described.items():
        print(f"{name}: {runs}")
    ours = [name for name in results if name != "rembg"]
    if "rembg" in results:
        for name in ours:
            for mine, theirs in zip(results[name], results["rembg"], strict=False):
                if mine["clients"] == theirs["clients"] and theirs.get("images_per_s"):
                    print(f"{name} / rembg at {mine['clients']} clients: {mine['images_per_s'] / theirs['images_per_s']:.2f}x "
                          f"throughput, p99 {mine.get('p99_ms', '-')} vs {theirs.get('p99_ms', '-')} ms")  # fmt: skip
    if args.json:
        write_text(args.json, json.dumps({"engine": str(engine), "photos": source, "results": results,
                                          "runs": described}, indent=2) + "\n")  # fmt: skip
    return 1 if any(r["errors"] for name in ours for r in results[name]) else 0


if __name__ == "__main__":
    sys.exit(main())
