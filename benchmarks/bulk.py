"""Bulk runs on Dask against the local run on the same cores; a worker killed mid-run; a scaling model.

    python -m benchmarks.bulk                              # 200 SOD photos, cutouts, U²-NetP 320 random weights
    python -m benchmarks.bulk --photos 300 --workers 2 --rounds 2 --json bulk.json

1. Speed: ``python -m runtime.infer`` on the same photos, alternated ``--rounds`` times: locally (one process,
   the engine on every core) and with ``--dask local:N`` (N worker processes, cores / N engine threads each).
   Whole commands in subprocesses: their wall time (start-up, cluster, engine loads included) and their summary
   line's images/s (the files' time; the engine loads are outside it on both sides). Goal: Dask >= 0.9x local.
2. Fault: the same photos through ``runtime.bulk.run`` on a local cluster, one worker SIGKILLed when about half
   the files are written: time, counts, files byte for byte against the unfaulted Dask run's, temporaries left.
3. Model, not measurement: the per-task overhead (empty batches through the scheduler, sent as the runner sends
   them) and the per-image cost (worker cores / Dask images/s) measured here give the images/s expected on M
   machines of C cores, capped by the scheduler's task rate times the images per task.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from benchmarks.common import REPO, hardware_header
from benchmarks.runners import cached_onnx
from export.samples import sod_photos, synthetic_images
from runtime.argtypes import positive_int

SUMMARY = re.compile(r"(\d+) ok, (\d+) failed, (\d+) skipped in ([\d.]+) s \(([\d.]+) images/s\)")
MACHINES = (1, 2, 4, 8, 16, 32, 64, 128)
TEMP_MARK = ".u2tmp-"


def make_inputs(folder: Path, count: int) -> str:
    """``count`` photos in ``folder``: the SOD photos where they are here, else synthetic scenes of their size."""
    folder.mkdir(parents=True)
    photos = sod_photos(count)
    if len(photos) == count:
        for photo in photos:
            shutil.copyfile(photo, folder / photo.name)
        return "SOD photos"
    for i, image in enumerate(synthetic_images(count, size=400)):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return "synthetic scenes (no SOD photos here)"


def run_cli(args: list[str]) -> dict:
    """One ``python -m runtime.infer`` run: wall seconds, and its summary line's counts and images/s."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runtime.infer", *args, "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    wall = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    match = SUMMARY.search(lines[-1]) if lines else None
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"runtime.infer {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    ok, failed, skipped, seconds, rate = match.groups()
    return {"wall_s": wall, "seconds": float(seconds), "images_per_s": float(rate), "ok": int(ok),
            "failed": int(failed), "skipped": int(skipped), "log": lines[0] if lines else ""}  # fmt: skip


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def speed(engine: Path, inputs: Path, work: Path, workers: int, rounds: int) -> dict:
    """Local and Dask runs alternated; each round's ratio, and the medians."""
    per_round = []
    for r in range(rounds):
        local = run_cli(["-e", str(engine), str(inputs), "-o", str(work / f"local{r}")])
        dask = run_cli(["-e", str(engine), str(inputs), "-o", str(work / f"dask{r}"), "--dask", f"local:{workers}"])
        per_round.append({"local": local, "dask": dask, "ratio": dask["images_per_s"] / local["images_per_s"],
                          "wall_ratio": local["wall_s"] / dask["wall_s"]})  # fmt: skip
        print(f"   round {r + 1}: local {local['images_per_s']:.2f} images/s ({local['wall_s']:.1f} s whole), "
              f"dask local:{workers} {dask['images_per_s']:.2f} images/s ({dask['wall_s']:.1f} s whole) -> "
              f"{per_round[-1]['ratio']:.3f}x", flush=True)  # fmt: skip
    same = tree(work / "local0") == tree(work / "dask0")
    return {"rounds": per_round, "ratio": statistics.median(r["ratio"] for r in per_round),
            "wall_ratio": statistics.median(r["wall_ratio"] for r in per_round),
            "local_images_per_s": statistics.median(r["local"]["images_per_s"] for r in per_round),
            "dask_images_per_s": statistics.median(r["dask"]["images_per_s"] for r in per_round),
            "local_equals_dask_bytes": same, "local_log": per_round[0]["local"]["log"],
            "dask_log": per_round[0]["dask"]["log"]}  # fmt: skip


def fault_and_overheads(engine: Path, inputs: Path, work: Path, workers: int, reference: Path) -> dict:
    """On one local cluster: the run with a worker SIGKILLed half-way, then the per-task overhead and the
    client's planning cost per file."""
    from runtime.bulk.batch import EngineSpec, RunSettings, process_batch
    from runtime.bulk.cluster import connect
    from runtime.bulk.runner import engine_threads, run
    from runtime.render import RenderOptions
    from runtime.store_inputs import plan

    total = len(list(inputs.iterdir()))
    out = work / "fault"
    with connect(f"local:{workers}") as client:
        box: dict = {}

        def target() -> None:
            try:
                box["summary"] = run(client, [str(inputs)], out, engine=engine, progress=False, keep_freed_memory=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                box["error"] = exc

        started = time.perf_counter()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        killed_at = None
        while thread.is_alive() and killed_at is None:
            written = sum(1 for p in out.rglob("*.png") if not p.name.startswith("."))
            busy = [address for address, keys in client.processing().items() if keys]
            if written >= total // 2 and busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed_at = written
            time.sleep(0.05)
        thread.join()
        wall = time.perf_counter() - started
        if "error" in box:
            raise box["error"]
        summary = box["summary"]
        client.wait_for_workers(workers, timeout=120)

        # Per-task overhead: empty batches, as the runner sends batches (its function, its settings).
        spec = EngineSpec(str(engine), threads=engine_threads(client))
        settings = RunSettings.of(work / "empty", RenderOptions())
        client.run(lambda: None)
        tasks = 400
        started = time.perf_counter()
        futures = [client.submit(process_batch, [], spec, settings, pure=False) for _ in range(tasks)]
        client.gather(futures)
        empty_s = time.perf_counter() - started
    started = time.perf_counter()
    planned = plan([str(inputs)], work / "planned", ".png")
    plan_s = (time.perf_counter() - started) / max(1, len(planned))
    fault_files, reference_files = tree(out), tree(reference)
    return {"killed_after_files": killed_at, "files": total, "wall_s": wall, "seconds": summary.seconds,
            "images_per_s": summary.rate, "ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped,
            "identical_files": sum(fault_files.get(k) == v for k, v in reference_files.items()),
            "extra_files": sorted(set(fault_files) - set(reference_files)),
            "temporaries_left": sorted(k for k in fault_files if TEMP_MARK in k),
            "empty_tasks_per_s": tasks / empty_s, "empty_task_ms": 1000 * empty_s / tasks,
            "plan_us_per_file": 1e6 * plan_s}  # fmt: skip


def model(per_image_core_s: float, task_s: float, tasks_per_s: float, images_per_task: int, cores: int) -> list[dict]:
    """Expected images/s on M machines of ``cores`` cores, one worker process per core: each core makes an image
    every ``per_image_core_s`` plus its share of a task's overhead, and the scheduler dispatches at most
    ``tasks_per_s`` tasks of ``images_per_task`` images. A model from two numbers measured here, not a claim."""
    per_core = 1.0 / (per_image_core_s + task_s / images_per_task)
    cap = tasks_per_s * images_per_task
    rows = []
    for machines in MACHINES:
        workers = machines * cores * per_core
        rows.append({"machines": machines, "cores": cores, "images_per_s": min(workers, cap),
                     "bound": "workers" if workers <= cap else "scheduler",
                     "hours_per_million": 1e6 / min(workers, cap) / 3600})  # fmt: skip
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bulk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--photos", type=positive_int, default=200, help="photos per run (default 200)")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="Dask worker processes, as --dask local:N (default: one per core)")
    p.add_argument("--rounds", type=positive_int, default=2, help="local/Dask alternations (default 2)")
    p.add_argument("--task-images", type=positive_int, default=8,
                   help="images per task in the model (default 8: the runner's largest for a CPU's batch of 1)")
    p.add_argument("--skip-fault", action="store_true", help="skip part 2 (and the measured overheads of part 3)")
    p.add_argument("--json", type=Path, help="write every number here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    engine = cached_onnx("u2netp", 320, None)
    print(hardware_header())
    work = Path(tempfile.mkdtemp(prefix="u2net_bulk_"))
    results: dict = {"photos": args.photos, "workers": args.workers, "cores": os.cpu_count()}
    try:
        results["inputs"] = make_inputs(work / "in", args.photos)
        print(f"Inputs: {args.photos} {results['inputs']}, mode cutout (PNG); engine {engine.name} "
              f"(U²-NetP 320, random weights)\n", flush=True)  # fmt: skip
        print(f"1. local vs --dask local:{args.workers}, same photos, same cores ({args.rounds} rounds, alternated)")
        s = results["speed"] = speed(engine, work / "in", work, args.workers, args.rounds)
        print(f"   local: {s['local_log']}\n   dask:  {s['dask_log']}")
        print("\n| run | images/s (summary) | whole command, s | vs local |\n|---|---|---|---|")
        for r, row in enumerate(s["rounds"]):
            print(f"| local, round {r + 1} | {row['local']['images_per_s']:.2f} | {row['local']['wall_s']:.1f} | 1 |")
            print(f"| --dask local:{args.workers}, round {r + 1} | {row['dask']['images_per_s']:.2f} | "
                  f"{row['dask']['wall_s']:.1f} | **{row['ratio']:.3f}x** |")  # fmt: skip
        verdict = "met" if s["ratio"] >= 0.9 else "NOT met"
        print(f"\nMedian: Dask {s['ratio']:.3f}x local images/s (goal >= 0.9x: {verdict}); whole commands "
              f"{s['wall_ratio']:.3f}x; files identical to the local run's: {s['local_equals_dask_bytes']} "
              f"(the local engine runs {os.cpu_count()} threads, each worker's 1)\n", flush=True)  # fmt: skip
        per_image = args.workers / s["dask_images_per_s"]
        if not args.skip_fault:
            f = results["fault"] = fault_and_overheads(engine, work / "in", work, args.workers, work / "dask0")
            print(f"2. one of {args.workers} workers SIGKILLed after {f['killed_after_files']} of {f['files']} files")
            print("\n| run | images/s | ok / failed / skipped | files identical to the unfaulted Dask run | "
                  "extra files | temporaries left |\n|---|---|---|---|---|---|")  # fmt: skip
            print(f"| worker killed | {f['images_per_s']:.2f} ({f['images_per_s'] / s['dask_images_per_s']:.2f}x "
                  f"unfaulted) | {f['ok']} / {f['failed']} / {f['skipped']} | {f['identical_files']} of {f['files']} "
                  f"| {len(f['extra_files'])} | {len(f['temporaries_left'])} |\n", flush=True)  # fmt: skip
            task_s, tasks_per_s, plan_us = f["empty_task_ms"] / 1000 * args.workers, f["empty_tasks_per_s"], \
                f["plan_us_per_file"]  # fmt: skip
            print(f"3. model. Measured here: {per_image:.3f} s per image per worker core (= {args.workers} / "
                  f"{s['dask_images_per_s']:.2f} images/s); empty tasks: {tasks_per_s:.0f}/s through the scheduler "
                  f"({1000 * task_s:.1f} ms of worker time each); planning on the client {plan_us:.0f} us per file "
                  f"(local folder). {args.task_images} images per task.")  # fmt: skip
            results["model"] = {}
            for cores in (os.cpu_count() or 1, 16):
                rows = results["model"][cores] = model(per_image, task_s, tasks_per_s, args.task_images, cores)
                print(f"\n| machines x {cores} cores | expected images/s | bound by | hours per million images |\n"
                      "|---|---|---|---|")  # fmt: skip
                for row in rows:
                    print(f"| {row['machines']} | {row['images_per_s']:.0f} | {row['bound']} | "
                          f"{row['hours_per_million']:.2f} |")  # fmt: skip
            print("\nA model: the per-core cost is this CPU's, with this engine; storage and network are assumed not "
                  "to limit; the scheduler's rate was measured on the same 2 busy cores as its workers.")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
