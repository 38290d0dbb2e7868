"""What this CPU can do natively, read once from ``/proc/cpuinfo`` (numpy-free, no engine needed).

The OpenVINO backend asks ``native_bf16`` before running BF16 (without AVX-512 BF16 or AMX, BF16 is
emulated and slower than FP32), and the benchmarks name the ISA features in their header.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name people know it by
ISA_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "amx_fp16": "AMX-FP16",
}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first processor's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_features() -> list[str]:
    """Names of the vector/matrix features this CPU has, e.g. ['AVX2', 'AVX-512', 'AVX-512 BF16']."""
    flags = cpu_flags()
    return [name for flag, name in ISA_FEATURES.items() if flag in flags]


def native_bf16() -> bool:
    """True when the CPU computes BF16 in hardware (AVX-512 BF16 dot products or AMX tiles)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def has_amx() -> bool:
    return "amx_bf16" in cpu_flags() or "amx_int8" in cpu_flags()
