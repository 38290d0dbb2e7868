"""python -m runtime.infer --dask and runtime.bulk.run: the local run's files from a Dask cluster, through faults.

One LocalCluster of two worker processes on 127.0.0.1 (no dashboard) serves the module; the scheduler-death test
starts its own scheduler and worker processes. Every process a test starts is stopped by it. Outputs are
compared byte for byte with a local run made with the workers' engine settings (one engine thread each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bulk_helpers import files, objects, photo_tree, s3, s3_server, temporaries
from runtime_helpers import make_tiny_onnx, save, scene

from runtime import bulk
from runtime.bulk.batch import EngineSpec, RunSettings, process_batch
from runtime.bulk.cli import dask_address
from runtime.bulk.runner import task_images
from runtime.infer import main
from runtime.render import FORMATS, RenderOptions, is_complete

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REPO = Path(__file__).resolve().parents[1]
H, W = 450, 600
SLOW = ["--png-level", "12"]  # libdeflate's slowest level: work long enough to kill something in the middle of it


@pytest.fixture(scope="module")
def s3_endpoint():
    """Started before the cluster, so the worker processes inherit its address (None: moto not installed)."""
    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def client(s3_endpoint):
    import logging

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.CRITICAL)  # fmt: skip
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv] + ["--no-progress", "--release-memory"])
    return code, capsys.readouterr().err.strip().splitlines()


def big_photos(root: Path, count: int) -> list[str]:
    """Photos large enough (450x600) that the slowest PNG level takes ~0.2 s each: a run lasts seconds."""
    rng = np.random.default_rng(7)
    names = []
    for i in range(count):
        picture = np.clip(scene(H, W, seed=i).astype(np.int16) + rng.integers(-30, 30, (H, W, 3)), 0, 255)
        save(root / f"s{i % 4}" / f"p{i:03d}.jpg", picture.astype(np.uint8), quality=90)
        names.append(f"s{i % 4}/p{i:03d}.png")
    return sorted(names)


def test_a_dask_run_writes_the_local_run_s_files(tmp_path, capsys, tiny):
    """--dask local:2 from the command line: same tree, same bytes, same lines, same exit status."""
    names = photo_tree(tmp_path / "in", 14)
    (tmp_path / "in" / "b" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    bg = save(tmp_path / "bg.png", np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    for extra in ([], ["--mode", "composite", "--bg", str(bg)]):
        code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "local", "--threads", "1", *extra)
        assert code == 1 and err[-1].startswith("14 ok, 1 failed, 0 skipped"), err
        local_errors = [line for line in err if line.startswith("error:")]
        code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "dask", "--dask", "local:2", *extra)
        assert code == 1 and err[-1].startswith("14 ok, 1 failed, 0 skipped"), err
        assert [line for line in err if line.startswith("error:")] == local_errors  # one line, the same line
        assert sorted(files(tmp_path / "dask")) == names
        assert files(tmp_path / "dask") == files(tmp_path / "local")


def test_skip_existing_rerun_writes_nothing(tmp_path, capsys, caplog, client, tiny):
    names = photo_tree(tmp_path / "in", 9)
    address = client.scheduler.address
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--dask", address, "--mode", "mask")
    assert code == 0 and err[-1].startswith("9 ok"), err
    before = {p: p.stat() for p in (tmp_path / "out").rglob("*.png")}
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--dask", address, "--mode", "mask",
                    "--skip-existing")  # fmt: skip
    assert code == 0 and err[-1].startswith("0 ok, 0 failed, 9 skipped"), err
    after = {p: p.stat() for p in (tmp_path / "out").rglob("*.png")}
    assert {p: (s.st_ino, s.st_mtime_ns) for p, s in after.items()} == {
        p: (s.st_ino, s.st_mtime_ns) for p, s in before.items()}  # not one file touched
    cut = tmp_path / "out" / names[0]
    cut.write_bytes(cut.read_bytes()[:50])
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--dask", address, "--mode", "mask",
                    "--skip-existing")  # fmt: skip
    assert code == 0 and err[-1].startswith("1 ok, 0 failed, 8 skipped"), err
    assert "the existing output is not a complete PNG file; making it again" in caplog.text  # relayed from the worker
    assert is_complete(cut, "png")


def test_python_entry_point_and_the_plain_batch_function(tmp_path, client, tiny):
    names = photo_tree(tmp_path / "in", 6)
    options = RenderOptions(mode="mask", format="webp", quality=100)
    summary = bulk.run(client, [str(tmp_path / "in")], tmp_path / "out", engine=tiny, options=options, progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (6, 0, 0)
    assert sorted(files(tmp_path / "out")) == [n.replace(".png", ".webp") for n in names]
    # The function a Dask task (or a Spark mapInPandas) runs, called directly: paths in, counts and lines out.
    sources = sorted(str(p) for p in (tmp_path / "in").rglob("img*"))
    pairs = [(s, str(tmp_path / "plain" / Path(s).with_suffix(".webp").name)) for s in sources]
    pairs.append((str(tmp_path / "missing.jpg"), str(tmp_path / "plain" / "missing.webp")))
    result = process_batch(pairs, EngineSpec(str(tiny), threads=1), RunSettings.of(tmp_path / "plain", options))
    assert (result.ok, result.failed, result.skipped) == (6, 1, 0)
    assert result.errors == [f"{tmp_path / 'missing.jpg'}: no such file"]
    flat = {Path(n).name: data for n, data in files(tmp_path / "out").items()}
    assert files(tmp_path / "plain") == flat


def _kill_one_busy_worker(client, seen: dict, out_count, total: int) -> None:
    """SIGKILL a worker process that is running a task, once the run has written something and before it ends."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = [address for address, keys in client.processing().items() if keys]
        if out_count() >= 2 and busy:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            seen["outputs_at_kill"] = out_count()
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = pid
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never had a busy worker with outputs written ({out_count()} of {total})")


def _run_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["summary"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_a_worker_killed_mid_run_changes_nothing_in_the_output_tree(tmp_path, capsys, client, tiny):
    names = big_photos(tmp_path / "in", 16)
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "ref", "--threads", "1", *SLOW)
    assert code == 0, err
    options = RenderOptions(png_level=12)
    thread, box = _run_in_thread(lambda: bulk.run(client, [str(tmp_path / "in")], tmp_path / "out", engine=tiny,
                                                  options=options, task_size=2, progress=False))  # fmt: skip
    seen: dict = {}
    _kill_one_busy_worker(client, seen, lambda: len(list((tmp_path / "out").rglob("*.png"))), len(names))
    thread.join(120)
    assert not thread.is_alive() and "error" not in box, box
    summary = box["summary"]
    assert seen["outputs_at_kill"] < len(names)  # killed in the middle of the run
    assert (summary.ok, summary.failed, summary.skipped) == (len(names), 0, 0)
    assert files(tmp_path / "out") == files(tmp_path / "ref")  # every file, byte for byte; no partial, no extra
    assert temporaries(tmp_path / "out") == []
    client.wait_for_workers(2, timeout=60)  # the nanny has started a new worker for the next tests


def test_a_worker_killed_mid_run_leaves_a_store_complete(s3_endpoint, tmp_path, capsys, client, tiny):
    if s3_endpoint is None:
        pytest.skip("moto[server] and s3fs are not installed (pip install -e '.[dev,s3]')")
    fs = s3("killed")
    names = big_photos(tmp_path / "in", 16)
    for path in sorted((tmp_path / "in").rglob("*.jpg")):
        fs.pipe_file(f"killed/in/{path.relative_to(tmp_path / 'in').as_posix()}", path.read_bytes())
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "ref", "--threads", "1", *SLOW)
    assert code == 0, err

    def written() -> int:
        fs.invalidate_cache()
        return len(fs.find("killed/out"))

    thread, box = _run_in_thread(lambda: bulk.run(client, ["s3://killed/in"], "s3://killed/out", engine=tiny,
                                                  options=RenderOptions(png_level=12), task_size=2, progress=False))  # fmt: skip
    seen: dict = {}
    _kill_one_busy_worker(client, seen, written, len(names))
    thread.join(120)
    assert not thread.is_alive() and "error" not in box, box
    summary = box["summary"]
    assert seen["outputs_at_kill"] < len(names)
    assert (summary.ok, summary.failed, summary.skipped) == (len(names), 0, 0)
    assert objects(fs, "killed/out") == files(tmp_path / "ref")  # the store: every key once, every byte right
    assert sorted(objects(fs, "killed")) == sorted([f"in/{n[:-4]}.jpg" for n in names] + [f"out/{n}" for n in names])
    client.wait_for_workers(2, timeout=60)


def test_an_unusable_engine_or_cluster_is_one_line_and_exit_2(tmp_path, capsys, client, tiny):
    photo_tree(tmp_path / "in", 3)
    address = client.scheduler.address
    code, err = run(capsys, "-e", tmp_path / "none.onnx", tmp_path / "in", "-o", tmp_path / "out", "--dask", address)
    assert (code, err) == (2, [f"error: {tmp_path / 'none.onnx'}: no such engine file"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    code, err = run(capsys, "-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--dask", f"tcp://127.0.0.1:{port}",
                    "--dask-timeout", "2")  # fmt: skip
    assert code == 2 and len(err) == 1 and time.monotonic() - started < 15
    assert err[0].startswith(f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s")


def test_a_scheduler_that_dies_mid_run_is_one_line_and_exit_2(tmp_path, tiny):
    """Scheduler and worker in processes of their own; the scheduler is SIGKILLed while the CLI runs."""
    names = big_photos(tmp_path / "in", 16)
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                 env=env, **quiet)  # fmt: skip
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                           "1", "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "5"],
                                          env=env, **quiet))  # fmt: skip
        cli = subprocess.Popen([sys.executable, "-m", "runtime.infer", "-e", str(tiny), str(tmp_path / "in"), "-o",
                                str(tmp_path / "out"), "--dask", str(scheduler_file), "--task-size", "1",
                                "--no-progress", *SLOW], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(cli)
        while time.monotonic() < deadline and len(list((tmp_path / "out").rglob("*.png"))) < 2:
            time.sleep(0.02)
        scheduler.kill()
        _, err = cli.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert cli.returncode == 2, err
        assert lines[-1].startswith(f"error: lost the Dask scheduler at {address}; "), err
        assert f"their outputs are complete in {tmp_path / 'out'}" in lines[-1]
        assert not any(line.startswith(("Traceback", "error: ")) for line in lines[:-1]), err
    finally:
        for process in processes:
            process.kill()
            process.wait(30)
    finished = [p for p in (tmp_path / "out").rglob("*.png") if not p.name.startswith(".")]
    assert 0 < len(finished) < len(names)
    assert all(is_complete(p, "png") for p in finished)  # what finished is kept, and whole
    code = main([str(a) for a in ("-e", tiny, tmp_path / "in", "-o", tmp_path / "out", "--skip-existing",
                                  "--no-progress", *SLOW)])  # fmt: skip
    assert code == 0 and sorted(files(tmp_path / "out")) == names  # a local rerun does the rest and cleans up


def test_task_sizes_and_addresses():
    assert task_images(1000, 1, 2) == 8  # at most 8 engine batches
    assert task_images(20, 1, 2) == 3  # about 4 tasks per worker thread
    assert task_images(20, 8, 2) == 8  # whole batches, however few files
    assert task_images(10_000, 16, 64) == 48  # 3 batches: 208 tasks, about 4 per worker thread
    assert task_images(100_000, 16, 64) == 128
    assert FORMATS["png"].suffix == ".png"
    assert dask_address("local") == "local" and dask_address("local:3") == "local:3"
    import argparse

    for bad in ("local:0", "local:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            dask_address(bad)
