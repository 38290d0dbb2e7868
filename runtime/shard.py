"""``--shard K/N``: split any input set between N independent jobs, each file going to exactly one.

A file's shard is a hash of its output path relative to the output folder (extension dropped), so the
split needs no shared state and no listing up front: a Kubernetes indexed Job or a Slurm array runs
``--shard $((INDEX+1))/N`` on every worker with the same arguments, each writes its own part of the
output tree, and adding files later moves none of the others to another shard.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as people count workers: 1/4 .. 4/4
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'K/N' with 1 <= K <= N; argparse.ArgumentTypeError otherwise (so it can be an argparse type)."""
        k, sep, n = text.partition("/")
        if not sep or not k.strip().isdigit() or not n.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected K/N such as 1/4, not {text!r}")
        shard = cls(int(k), int(n))
        if not 1 <= shard.index <= shard.count:
            raise argparse.ArgumentTypeError(f"K/N needs 1 <= K <= N, not {text!r}")
        return shard

    def owns(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def select(self, items: Iterable[T], out_dir: Path) -> Iterator[T]:
        """The jobs (and input problems, by name) of this shard, lazily and in the original order."""
        for item in items:
            target = getattr(item, "target", None)
            if target is not None:
                key = Path(target).relative_to(out_dir).with_suffix("").as_posix()
            else:
                key = str(getattr(item, "name", item))
            if self.owns(key):
                yield item

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
