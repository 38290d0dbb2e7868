"""runtime.infer --shard K/N: N jobs with the same arguments cover every input exactly once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from runtime_helpers import make_tiny_onnx, save, scene

from runtime.infer import main
from runtime.shard import Shard


def outputs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def test_shards_cover_every_input_once_and_keep_the_layout(tmp_path, capsys):
    engine = make_tiny_onnx(tmp_path / "tiny.onnx")
    names = [f"{d}/img{i}.png" for d in ("a", "b/c") for i in range(9)]
    for i, name in enumerate(names):
        save(tmp_path / "in" / name, scene(20 + i, 40, seed=i))
    parts = []
    for k in (1, 2, 3):
        code = main(["--engine", str(engine), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--mode", "mask",
                     "--shard", f"{k}/3", "--no-progress"])  # fmt: skip
        assert code == 0
        parts.append(outputs(tmp_path / "out") - set().union(*parts))
    assert set().union(*parts) == set(names)  # every input, in one shared output tree
    assert sum(len(p) for p in parts) == len(names)  # and none twice
    assert all(parts), "18 files over 3 shards: a hash that sends all to one shard is broken"
    err = capsys.readouterr().err
    assert f"{len(parts[0])} ok" in err


def test_the_split_is_deterministic_and_independent_of_other_files():
    keys = [f"x/{i}" for i in range(200)]
    owners = {k: [s for s in range(1, 5) if Shard(s, 4).owns(k)] for k in keys}
    assert all(len(v) == 1 for v in owners.values())
    again = {k: [s for s in range(1, 5) if Shard(s, 4).owns(k)] for k in keys[::-1]}
    assert again == owners  # no state, no order: what other files exist does not move a file
    assert min(sum(o == [s] for o in owners.values()) for s in range(1, 5)) > 25  # roughly balanced


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", ""])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        Shard.parse(text)
    assert Shard.parse("2/3") == Shard(2, 3)
