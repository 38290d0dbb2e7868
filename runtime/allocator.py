"""Keep freed memory in the process for the next image, instead of handing it back to the kernel.

glibc serves every allocation above 32 MB (a 12 MP photo's pixels are 36 MB, its RGBA cutout 48 MB)
with a fresh ``mmap`` and unmaps it on free, so each large photo pays the kernel to map, zero and
unmap a few hundred MB; and blocks freed in one thread's arena are not reused by another thread's.
With mmap and trimming off and one arena, every freed block is reused, whichever thread frees it.
Measured on 12 MP cutouts (2-core Xeon, docs/runtime.md "How it is fast"): kernel time 0.44-0.97 s -> 0.11-0.21 s per
6 photos, 0.23-0.27 -> 0.20-0.22 s per photo; the model's own speed is unchanged. The price: the
process keeps its peak memory until it exits. That suits a batch job, so the CLI opts in
(``python -m runtime.infer``); the library never changes the allocator of a program that imports it.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # free bytes at the heap's top before any is returned: the largest value mallopt takes


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory for the rest of this process; True when it agreed.

    A no-op returning False where the C library is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_ARENA_MAX, 1))
    return all([mallopt(param, value) == 1 for param, value in settings])
