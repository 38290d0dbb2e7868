"""Regenerate ``tests/data/tensorrt_enums.json`` from TensorRT's real Python bindings.

The fake ``tensorrt`` (``tests/fake_tensorrt.py``) takes its enum tables (names and values) from
that file, so they are the real module's, per release. Downloads the bindings wheels from PyPI
(``tests/real_tensorrt.py``), imports each over stub libraries and writes the tables the fake uses:

    python tests/dump_tensorrt_enums.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_tensorrt import RELEASES, real_tensorrt  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "tensorrt_enums.json"
ENUMS = ("BuilderFlag", "DataType", "MemoryPoolType", "NetworkDefinitionCreationFlag", "TensorIOMode")


def tables(dump: dict) -> dict[str, dict[str, int]]:
    classes = dump["classes"]
    found = {name: classes[name]["enum"] for name in ENUMS}
    found["ILogger.Severity"] = classes["ILogger"]["members"]["Severity"]["enum"]
    return found


def main() -> None:
    data = {release.version: tables(real_tensorrt(release).dump()) for release in RELEASES}
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(data)} releases: {', '.join(data)})")


if __name__ == "__main__":
    main()
