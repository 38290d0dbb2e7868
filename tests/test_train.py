"""The training script end to end: errors, checkpoints, exact resume, SIGTERM, --eval-only, DDP on CPU, learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_checkpoints_log_and_exact_resume(tmp_path, tiny_data):
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


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_data):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", "--data", str(tiny_data), "--val-split", "0.2", "--out", str(run), "--iters", "3",
           "--device", "cpu", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in run.iterdir()} == {"last.pth", "best.pth", "log.jsonl"}  # rank 0 only
    start = read_log(run)[0]
    assert start["world_size"] == 2 and start["iters_per_epoch"] == 2  # 8 pairs / (2 ranks × batch 2)
    # Each record was written once (by rank 0), not once per process.
    assert [r["event"] for r in read_log(run)].count("start") == 1
    assert load_checkpoint(run / "last.pth").raw["iteration"] == 3


@pytest.mark.slow
def test_learns_synthetic_objects_better_than_the_centred_prior(tmp_path):
    # Held-out images come from another seed; the prior is a fixed centred ellipse on the same images.
    train_dir = write_dataset(tmp_path / "train", 160, seed=21, size=48)
    val_dir = write_dataset(tmp_path / "val", 40, seed=22, size=48)
    run = tmp_path / "run"
    argv = ["--data", str(train_dir), "--val", str(val_dir), "--out", str(run), "--model", "u2netp",
            "--size", "48", "--crop", "48", "--batch-size", "8", "--iters", "60", "--val-every", "30",
            "--workers", "0", "--seed", "0"]
    assert main(argv) == 0
    val = [r for r in read_log(run) if r["event"] == "val"]
    prior = val[0]["prior"]
    best = load_checkpoint(run / "best.pth").meta["metrics"]
    assert best["max_f"] == max(r["max_f"] for r in val)
    assert best["max_f"] > prior["max_f"] + 0.15, (best, prior)
    assert best["mae"] < prior["mae"], (best, prior)
