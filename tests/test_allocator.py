"""runtime.allocator: after keep_freed_memory, a large block freed and allocated again costs no page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Each check runs in a fresh interpreter: the setting lasts for the whole process.
_FAULTS = """
import resource, sys
import runtime.allocator

def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(64 << 20)  # 64 MB, zero-filled, so every page is touched
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

agreed = runtime.allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
first = faults_of_one_block()
print(agreed, first, faults_of_one_block())
"""


def _run(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True).stdout
    agreed, first, second = out.split()
    return agreed, int(first), int(second)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_large_blocks_are_reused_only_after_opting_in() -> None:
    agreed, first, second = _run("keep")
    assert agreed == "True"
    assert first > 10_000  # 16384 pages of 4 KB: the block really was touched
    assert second < first // 100  # the same memory again, already mapped
    _, first, second = _run("default")
    assert second > first // 2  # glibc's default: unmapped on free, faulted in again


def test_a_no_op_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.allocator

    monkeypatch.setattr(runtime.allocator.sys, "platform", "darwin")
    assert runtime.allocator.keep_freed_memory() is False


def test_the_cli_keeps_freed_memory_unless_told_not_to(tmp_path, monkeypatch, capsys) -> None:
    from runtime_helpers import make_tiny_onnx, save, scene

    import runtime.allocator
    from runtime.infer import main

    calls: list[bool] = []
    monkeypatch.setattr(runtime.allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    engine = make_tiny_onnx(tmp_path / "tiny.onnx")
    photo = save(tmp_path / "in" / "a.jpg", scene(32, 40))
    assert main(["--engine", str(engine), str(photo), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert calls == [True] and (tmp_path / "out" / "a.png").is_file()
    assert main(["--engine", str(engine), str(photo), "-o", str(tmp_path / "out2"), "--no-progress",
                 "--release-memory"]) == 0
    assert calls == [True] and (tmp_path / "out2" / "a.png").is_file()
