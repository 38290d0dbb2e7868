"""Timing, hardware description and the paper's reference numbers, shared by the benchmarks."""

from __future__ import annotations

import importlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.cpu_info import cpu_model, has_amx, isa_features

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("U2NET_CACHE_DIR", REPO / ".cache" / "benchmarks"))

# Qin et al. 2020: PyTorch, GTX 1080 Ti, 320x320, batch 1.
PAPER_FPS = {"u2net": 30.0, "u2netp": 40.0}
PAPER_DEVICE = "GTX 1080 Ti (paper)"


@dataclass
class Timing:
    latencies_ms: list[float]
    batch_size: int

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def throughput(self) -> float:
        """Images per second from the mean latency of a batch."""
        return self.batch_size * 1000.0 / float(np.mean(self.latencies_ms))


def measure(fn: Callable[[], object], batch_size: int, seconds: float = 5.0, warmup: int = 2,
            min_iters: int = 3, max_iters: int = 500) -> Timing:
    """Call ``fn`` ``warmup`` times, then until ``seconds`` have passed (at least ``min_iters``).

    The count adapts to speed, so a slow CPU row and a fast GPU row each take about ``seconds``.
    ``fn`` must synchronise any device work before returning.
    """
    for _ in range(warmup):
        fn()
    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < max_iters and (len(latencies) < min_iters or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        fn()
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return Timing(latencies, batch_size)


def cpu_name() -> str:
    return cpu_model()


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return f"{props.name} (sm_{props.major}{props.minor})"
    except ImportError:
        pass
    return None


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for module, name in [("numpy", "numpy"), ("cv2", "opencv"), ("torch", "torch"),
                         ("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("tensorrt", "tensorrt")]:
        try:
            versions[name] = importlib.import_module(module).__version__
        except Exception:  # absent or broken install: simply not listed
            continue
    return versions


def hardware_header() -> str:
    gpu = gpu_name()
    features = ", ".join(isa_features()) or "none of AVX2/AVX-512 reported"
    amx = "AMX" if has_amx() else "no AMX"
    lines = [f"CPU: {cpu_name()} ({os.cpu_count()} logical cores; {features}; {amx})", f"GPU: {gpu or 'none'}"]
    lines.append("Libraries: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))
    return "\n".join(lines)
