"""Peak memory does not grow with the number of batches (docs/runtime.md "Safe batch runs", rule 4).

The memory rule (``runtime.memory.cpu_batch_limit``) lets one batch's activations take
``MEMORY_SHARE`` of the memory available. Before ``enable_mem_pattern = False`` ONNX Runtime held the
first batch's arena chunks *and* the memory-pattern block it takes from the second run on, so a run of
two or more batches peaked at about twice the budget. Each run here is the real CLI in a fresh process
(``benchmarks.memory.peak_rss``) that sees a small amount of memory available, so ``--batch-size
100000`` is cut to ``BATCH``; the photos are small, so the batch's activations dominate what grows.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from benchmarks.memory import batches_peaks
from runtime.memory import MEMORY_SHARE, bytes_per_image

BATCH = 24  # the batch the memory rule must cut --batch-size 100000 to
# What 4 batches may add to the peak of 1, as a share of one batch's activation budget: the decoded
# images of more batches are negligible here, glibc's default allocator (--release-memory) lets ONNX
# Runtime's arena grow once by ~15 % of a batch; the bug added ~100 %.
MARGIN = 0.35


def _available(size: int) -> int:
    """Memory available such that the rule cuts the batch to exactly BATCH."""
    return int(BATCH * bytes_per_image(size) / MEMORY_SHARE) + 1


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_peak_rss_of_4_batches_stays_within_one_batch(tmp_path, random_u2netp, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    size = random_u2netp.size
    budget = BATCH * bytes_per_image(size)
    peaks = batches_peaks(random_u2netp.fp32, backend, tmp_path, batch=BATCH, available=_available(size),
                          pixels=160 * 120, mode="cutout", extra=("--threads", "2"))
    shown = {n: f"{rss / 2**20:.0f} MiB" for n, rss in peaks.items()}
    assert peaks[2] - peaks[1] <= MARGIN * budget, (shown, f"budget {budget / 2**20:.0f} MiB")
    assert peaks[4] - peaks[1] <= MARGIN * budget, (shown, f"budget {budget / 2**20:.0f} MiB")


def test_openvino_keeps_at_most_two_compiled_batch_sizes(random_u2netp):
    """Each static batch size compiled keeps its own activation memory: a caller meeting many sizes
    (the last partial batch of a run, an API server) must not keep one compiled model per size."""
    pytest.importorskip("openvino")
    from runtime.backends import open_backend

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, random_u2netp.size, random_u2netp.size), dtype=np.float32)
    with open_backend(random_u2netp.fp32, backend="openvino", precision="fp32") as backend:
        full = backend.run(x)
        for n in (3, 2, 4, 1, 3):
            np.testing.assert_allclose(backend.run(x[:n]), full[:n], atol=1e-5)
            assert len(backend._compiled) <= 2
        assert list(backend._compiled) == [1, 3]  # the two most recently used
