"""The training script end to end: errors, checkpoints, exact resume, SIGTERM, --eval-only, DDP on CPU, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runtime.preprocess import PreprocessSpec
from train.__main__ import cli as main
from train.checkpoint import load_checkpoint
from train.model import build_model
from train.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "u2netp", "--batch-size", "2", "--size", "32", "--crop", "32", "--workers", "0"]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny"), 10, seed=11, size=40)


def test_missing_or_empty_data_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope: no such directory" in err
    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "empty: no images/ + masks/" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--crop", "64"], "--crop 64 is larger than --size 32"),
    (["--iters", "0"], "--iters must be positive"),
    (["--val-split", "1.5"], "--val-split must be"),
])
def test_bad_options_are_one_line_errors(tmp_path, tiny_data, capsys, extra, message):
    assert main(["--data", str(tiny_data), "--out", str(tmp_path / "run"), *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_mixed_precision_on_cpu(tmp_path, tiny_data):
    run = tmp_path / "amp"
    assert main(["--data", str(tiny_data), "--out", str(run), "--iters", "2", "--amp", *TINY]) == 0
    ckpt = load_checkpoint(run / "last.pth")  # bf16 autocast on CPU; weights stay fp32
    assert all(t.dtype == torch.float32 for t in ckpt.model.parameters())
    assert not (run / "best.pth").exists()  # no validation data, no "best"


def test_strict_refuses_problem_pairs(tmp_path, capsys, caplog):
    data = tmp_path / "data"
    write_dataset(data, 4, seed=1, size=32)
    (data / "masks" / "00000.png").unlink()
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--strict", "--iters", "1", *TINY]) == 2
    assert "1 problem pairs and --strict" in capsys.readouterr().err
    assert "without mask (1): 00000.jpg" in caplog.text  # listed by name before the error


def test_checkpoints_log_and_exact_resume(tmp_path, tiny_data, capsys):
    common = ["--data", str(tiny_data), "--val-split", "0.2", "--seed", "3", "--log-every", "1", *TINY]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*common, "--out", str(straight), "--iters", "5"]) == 0
    assert main([*common, "--out", str(resumed), "--iters", "2"]) == 0
    assert {p.name for p in resumed.iterdir()} == {"last.pth", "best.pth", "log.jsonl"}

    ckpt = load_checkpoint(resumed / "last.pth")  # weights_only loading accepts everything in it
    meta = ckpt.meta
    assert ckpt.variant == "u2netp" and ckpt.raw["iteration"] == 2 and meta["iteration"] == 2
    assert ckpt.spec == PreprocessSpec(size=32)  # stored as a dict next to model_args, not as loose meta keys
    assert ckpt.model_args == build_model("u2netp").model_args()
    assert "(8 pairs)" in meta["dataset"] and "(2 pairs)" in meta["dataset"]  # every 5th of 10 held out
    assert set(meta["metrics"]) >= {"max_f", "mae"} and "git_revision" in meta
    assert {"optimizer", "scaler", "rng"} <= set(ckpt.raw)

    # Without --resume an existing run is not overwritten.
    assert main([*common, "--out", str(resumed), "--iters", "5"]) == 2
    # 2 + 3 resumed iterations land on exactly the weights of 5 straight ones (mid-epoch resume included).
    assert main([*common, "--out", str(resumed), "--iters", "5", "--resume"]) == 0
    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(resumed / "last.pth")
    assert b.raw["iteration"] == 5
    for (name, ta), tb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name

    records = read_log(resumed)
    assert [r["iteration"] for r in records if r["event"] == "train"] == [1, 2, 3, 4, 5]
    assert [r["iteration"] for r in records if r["event"] == "start"] == [0, 2]
    val = [r for r in records if r["event"] == "val"]
    assert val and all(0 <= r["max_f"] <= 1 and 0 <= r["mae"] <= 1 for r in val)
    assert "prior" in val[0]

    # --eval-only scores a checkpoint with the same validation: best.pth's recorded score comes back.
    capsys.readouterr()
    best = load_checkpoint(resumed / "best.pth")
    assert main(["--data", str(tiny_data), "--val-split", "0.2", "--eval-only", str(resumed / "best.pth"), *TINY]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["n_images"] == 2 and scores["variant"] == "u2netp" and scores["size"] == 32
    assert scores["max_f"] == pytest.approx(best.meta["metrics"]["max_f"], abs=1e-9)
    assert scores["mae"] == pytest.approx(best.meta["metrics"]["mae"], abs=1e-9)
    assert {p.name for p in resumed.iterdir()} == {"last.pth", "best.pth", "log.jsonl"}  # it wrote nothing


def test_eval_only_errors_are_one_line(tmp_path, tiny_data, capsys):
    assert main(["--data", str(tiny_data), "--eval-only", str(tmp_path / "x.pth"), *TINY]) == 2
    assert "--eval-only needs validation data" in capsys.readouterr().err
    assert main(["--data", str(tiny_data), "--val-split", "0.2", "--eval-only", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert "x.pth: no such file" in err and err.count("\n") == 1
    assert main(["--data", str(tiny_data)]) == 2
    assert "--data and --out are required" in capsys.readouterr().err


def test_time_limit_is_checked_at_log_boundaries(tmp_path, tiny_data):
    # A limit that has passed before the first step stops the run at the first --log-every boundary, not before.
    run = tmp_path / "limit"
    argv = ["--data", str(tiny_data), "--out", str(run), "--iters", "50", "--log-every", "3", "--time-limit",
            "0.000001", *TINY]
    assert main(argv) == 0
    assert load_checkpoint(run / "last.pth").raw["iteration"] == 3
    assert [r["iteration"] for r in read_log(run) if r["event"] == "train"] == [3]


def _wait_for_train_records(run: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = run / "log.jsonl"
        if log.exists() and sum(r["event"] == "train" for r in read_log(run)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early with status {proc.returncode}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("training did not start in time")


def _train_env() -> dict[str, str]:
    # One thread in every run that is compared bit for bit: reductions over other thread counts round differently.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize(("sig", "status", "workers", "whole_group"), [
    (signal.SIGTERM, 143, "1", True),  # systemd's default: the signal reaches the data-loading worker too
    (signal.SIGINT, 130, "0", False),
])
def test_stop_signal_saves_last_pth_and_resume_is_exact(tmp_path, tiny_data, sig, status, workers, whole_group):
    common = ["-m", "train", "--data", str(tiny_data), "--seed", "3", "--log-every", "1", *TINY, "--workers", workers]
    run = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, *common, "--out", str(run), "--iters", "100000"], cwd=REPO,
                            env=_train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_train_records(run, proc, 2)
        os.killpg(proc.pid, sig) if whole_group else proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err[-2000:]
    stopped = [line for line in err.splitlines() if "stopped at iteration" in line]
    assert len(stopped) == 1 and sig.name in stopped[0] and "continue with --resume" in stopped[0], err[-2000:]
    assert "Traceback" not in err
    assert {p.name for p in run.iterdir()} == {"last.pth", "log.jsonl"}  # no temporary file left behind
    done = load_checkpoint(run / "last.pth").raw["iteration"]
    # Nothing trained was lost: the checkpoint holds the last step the log reported.
    assert done == [r["iteration"] for r in read_log(run) if r["event"] == "train"][-1] >= 2
    if sig != signal.SIGTERM:
        return  # the resume below is the same for either signal; once is enough

    # Resuming continues from there and lands on exactly the weights of an uninterrupted run.
    straight = tmp_path / "straight"
    for argv in ([*common, "--out", str(run), "--iters", str(done + 2), "--resume"],
                 [*common, "--out", str(straight), "--iters", str(done + 2)]):
        finished = subprocess.run([sys.executable, *argv], cwd=REPO, env=_train_env(), capture_output=True,
                                  text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-2000:]
    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(run / "last.pth")
    assert b.raw["iteration"] == done + 2
    for (name, ta), tb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


def test_stop_request_defers_the_first_signal_while_armed():
    from train.stop import Interrupted, StopRequest

    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        with pytest.raises(Interrupted) as unarmed:  # before the loop: nothing to save, stop at once
            signal.raise_signal(signal.SIGTERM)
        assert unarmed.value.exit_status == 143 and not stop.requested
        stop.armed = True
        signal.raise_signal(signal.SIGTERM)  # the first one only asks
        signal.raise_signal(signal.SIGTERM)  # the same request again (process group + torchrun's forward)
        assert stop.requested and stop.name == "SIGTERM" and stop.exit_status == 143
        with pytest.raises(Interrupted) as now:  # Ctrl-C on top does not wait
            signal.raise_signal(signal.SIGINT)
        assert now.value.exit_status == 130
    assert signal.getsignal(signal.SIGTERM) is previous
