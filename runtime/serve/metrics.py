"""The image endpoint's counters in Prometheus' text format (``GET /metrics``), beside Triton's own on its port.

    u2net_image_requests_total{mode,status}      image requests answered, by mode and HTTP status
    u2net_image_request_seconds{mode}            histogram: headers received -> last byte sent (200s only)
    u2net_image_requests_in_flight               admitted and not yet answered (reading, queued or working)
    u2net_image_requests_active                  being decoded, run or encoded right now
    u2net_image_requests_rejected_total{reason}  refused before any work: busy, too_large, unauthorized, ...

Everything is updated from the event loop's thread only, so plain integers need no lock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

# Seconds: one small photo on a CPU is ~0.1-0.3 s; a queue of 256 of them on two cores reaches a minute.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        out += [f"{name}_sum{{{labels}}} {self.sum:.6f}", f"{name}_count{{{labels}}} {running}"]
        return out


class Metrics:
    """Counters for ``/metrics``; ``in_flight`` and ``active`` are read from the service when rendered."""

    def __init__(self, in_flight: Callable[[], int], active: Callable[[], int]) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.rejected: Counter[str] = Counter()
        self.latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self._in_flight = in_flight
        self._active = active

    def answered(self, mode: str, status: int, seconds: float) -> None:
        self.requests[mode, status] += 1
        if status == 200:
            self.latency[mode].observe(seconds)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def text(self) -> str:
        lines = ["# HELP u2net_image_requests_total Image requests answered, by mode and HTTP status.",
                 "# TYPE u2net_image_requests_total counter"]  # fmt: skip
        lines += [f'u2net_image_requests_total{{mode="{m}",status="{s}"}} {n}' for (m, s), n in sorted(self.requests.items())]
        lines += ["# HELP u2net_image_request_seconds Time from a request's headers to its last byte, answers with 200.",
                  "# TYPE u2net_image_request_seconds histogram"]  # fmt: skip
        for mode, histogram in sorted(self.latency.items()):
            lines += histogram.lines("u2net_image_request_seconds", f'mode="{mode}"')
        lines += ["# HELP u2net_image_requests_in_flight Image requests admitted and not yet answered.",
                  "# TYPE u2net_image_requests_in_flight gauge", f"u2net_image_requests_in_flight {self._in_flight()}",
                  "# HELP u2net_image_requests_active Images being decoded, run or encoded.",
                  "# TYPE u2net_image_requests_active gauge", f"u2net_image_requests_active {self._active()}",
                  "# HELP u2net_image_requests_rejected_total Requests refused before any work, by reason.",
                  "# TYPE u2net_image_requests_rejected_total counter"]  # fmt: skip
        lines += [f'u2net_image_requests_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected.items())]
        return "\n".join(lines) + "\n"
