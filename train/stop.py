"""SIGTERM behaves like Ctrl-C: the training loop finishes its step, saves ``last.pth`` and exits 128 + signal.

SIGTERM is what ``kill``, systemd, Kubernetes and CI send; before this module it killed a run silently and lost
up to ``--save-every`` iterations. Before the loop is armed (data checks, model set-up) a signal interrupts at
once, as Ctrl-C always did: there is nothing to save yet. While armed, the first signal only sets a flag that
the loop reads at its next step boundary. A second Ctrl-C interrupts at once (a person who wants out now);
repeated SIGTERMs do not, because one stop request often arrives twice (sent to the process group and
forwarded by ``torchrun``'s agent) and the sender's own escalation is SIGKILL after its grace period.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """A stop signal that could not wait for a step boundary; ``exit_status`` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_status = 128 + signum


class StopRequest:
    """Installs the SIGTERM/SIGINT handlers for a ``with`` block (main thread only) and restores the old ones."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received while armed
        self.armed = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            raise Interrupted(signum)
        if self.signum is None:
            self.signum = signum  # only a flag: the loop decides at a step boundary, never mid-step
        elif signum == signal.SIGINT:
            raise Interrupted(signum)

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGTERM/SIGINT sent to the whole process group
    (Ctrl-C in a terminal, systemd's default) so it keeps feeding the last step; the main process ends it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
