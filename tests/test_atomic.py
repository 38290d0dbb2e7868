"""The one atomic-write helper: no partial files, short temporary names, leftovers of dead runs removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime import atomic


def test_write_bytes_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.png"
    atomic.write_bytes(target, b"first")
    atomic.write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_failure_inside_atomic_path_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_temporary_names_do_not_grow_with_the_final_name(tmp_path):
    name = "x" * 250 + ".png"  # valid on every common file system (limit 255 bytes)
    atomic.write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert len(atomic.temp_name(".png")) < 40


def test_staged_dir_is_removed_with_whatever_is_left_in_it(tmp_path):
    with atomic.staged_dir(tmp_path) as stage:
        (stage / "a.onnx").write_bytes(b"1")
        os.replace(stage / "a.onnx", tmp_path / "a.onnx")
        (stage / "b.onnx").write_bytes(b"2")  # not published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


def test_remove_stale_removes_dead_writers_files_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{atomic.TEMP_PREFIX}{dead_pid}-{'a' * 12}.png"
    stale.write_bytes(b"partial")
    stale_dir = tmp_path / f"{atomic.TEMP_PREFIX}{dead_pid}-{'b' * 12}.dir"
    stale_dir.mkdir()
    (stale_dir / "x").write_bytes(b"1")
    live = tmp_path / atomic.temp_name(".png")  # this process is alive
    live.write_bytes(b"in progress")
    user_file = tmp_path / ".u2tmp-notes.txt"  # not our pattern
    user_file.write_bytes(b"keep")
    removed = atomic.remove_stale(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert live.exists() and user_file.exists()
    assert not stale.exists() and not stale_dir.exists()


def test_remove_live_cleans_this_process_temporaries(tmp_path):
    manager = atomic.atomic_path(tmp_path / "out.bin")
    tmp = manager.__enter__()
    tmp.write_bytes(b"partial")
    atomic.remove_live()  # what a SIGTERM handler calls before exiting
    assert not tmp.exists()
    assert list(tmp_path.iterdir()) == []


def test_publish_is_all_or_none(tmp_path):
    stage, out = tmp_path / "stage", tmp_path / "out"
    stage.mkdir()
    out.mkdir()
    for name in ("a.json", "a.plan"):
        (stage / name).write_text(name)
    (stage / "folder").mkdir()
    (stage / "folder" / "x").write_text("x")
    atomic.publish([(stage / "a.json", out / "a.json"), (stage / "folder", out / "1"), (stage / "a.plan", out / "a.plan")])
    assert sorted(p.name for p in out.iterdir()) == ["1", "a.json", "a.plan"] and (out / "1" / "x").read_text() == "x"

    (stage / "b.json").write_text("side")
    (stage / "c.json").write_text("side")
    with pytest.raises(OSError):  # the second target's folder does not exist: the first rename is undone
        atomic.publish([(stage / "b.json", out / "b.json"), (stage / "c.json", out / "missing" / "c.json")])
    assert not (out / "b.json").exists() and sorted(p.name for p in out.iterdir()) == ["1", "a.json", "a.plan"]
