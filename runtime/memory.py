"""How many images an engine may take at once on the CPU, from the engine's input size and the machine's memory.

ONNX Runtime's CPU memory grows linearly with the batch: measured on random-weight exports at
320x320 (AMD EPYC, ONNX Runtime 1.32), batch 1 -> 8 added 254 MB (U²-NetP) and 271 MB (U²-Net) of
peak RSS per image, i.e. ~2.6 KB per input pixel whatever the variant (the activations, not the
weights, dominate). A batch is allowed at most a quarter of the memory still available, so a huge
``--batch-size`` is reduced instead of ending with the kernel's out-of-memory kill.

That figure holds for any number of batches only because the ONNX Runtime backend turns ONNX
Runtime's memory pattern off (``runtime/backends/onnxrt.py``): with it, the second batch of a shape
took one block for its whole plan beside the first batch's arena chunks, ~5 KB per input pixel from
then on, so a run of two or more batches peaked at about twice the budget (U²-NetP 320, batch 8:
2.07 -> 4.03 GiB). Re-measured over 4 batches of 8 (2-core AMD EPYC, ONNX Runtime 1.32, the CLI's
allocator, ``runtime.allocator``): 2.6 KB (U²-NetP) and 2.85 KB (U²-Net) per input pixel, flat from
the first batch on. With glibc's default allocator (the library, ``--release-memory``) the arena
grows once more on the second batch, by 0.2-0.4 GiB whatever the batch. OpenVINO takes ~0.6 KB
(BF16) to ~1.1 KB (FP32) per pixel per compiled batch size, at most two of them kept.
"""

from __future__ import annotations

import resource
from pathlib import Path

BYTES_PER_INPUT_PIXEL = 2800  # per image in the batch; the measured ~2600 rounded up
MEMORY_SHARE = 0.25  # of what is available: leaves room for decoded photos, encoders and other programs


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers, systemd units), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def _address_space_available() -> int | None:
    """Room left under ``ulimit -v`` (RLIMIT_AS), if set."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return soft - int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process can still use: the tightest of free memory, a cgroup limit and RLIMIT_AS."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    return max(0, min(known)) if known else None


def bytes_per_image(input_size: int) -> int:
    return BYTES_PER_INPUT_PIXEL * input_size * input_size


def cpu_batch_limit(input_size: int, available: int | None = None) -> int:
    """Largest CPU batch whose activations fit in ``MEMORY_SHARE`` of ``available`` bytes (default: measured now)."""
    if available is None:
        available = available_memory()
    if available is None:  # unknown platform: a batch of 8 fits any machine that runs U²-Net at all
        return 8
    return max(1, int(available * MEMORY_SHARE) // bytes_per_image(input_size))


__all__ = ["available_memory", "bytes_per_image", "cpu_batch_limit"]
