"""Reaching a Dask cluster: a scheduler's address, a scheduler file, or ``local[:N]`` (N worker processes here).

Every wait is bounded: the scheduler must answer, and a first worker must join, within ``timeout`` seconds,
or ``ClusterUnreachable`` says so in one line. ``local:N`` binds to 127.0.0.1 only, serves no dashboard, and
runs N worker processes of one thread each (each engine then gets cores / N threads): the same shape as a
real cluster, so what runs here is what runs there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import first_line

if TYPE_CHECKING:
    from distributed import Client

DEFAULT_TIMEOUT = 30.0  # seconds for the scheduler to answer and for a first worker to join


class ClusterUnreachable(Exception):
    """No usable cluster: the scheduler did not answer, no worker joined, or Dask is not installed."""


def parse_local(address: str) -> int | None:
    """``local`` -> one worker per core, ``local:N`` -> N; None for anything else (a scheduler address)."""
    name, sep, count = address.partition(":")
    if name != "local":
        return None
    if not sep:
        return os.cpu_count() or 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected local or local:N with N >= 1, not {address!r}")
    return int(count)


def quiet_dask_logs() -> None:
    """Dask's own loggers at CRITICAL: a lost worker or scheduler is reported by the run in one line of its own,
    not by pages of tracebacks from the client's reconnection attempts (``-v`` keeps them)."""
    for name in ["distributed", *[n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def connect(address: str, *, timeout: float = DEFAULT_TIMEOUT, quiet: bool = True) -> Iterator[Client]:
    """A ``distributed.Client`` for ``address`` (``tcp://host:8786``, a scheduler JSON file, ``local[:N]``),
    closed on exit, with a ``local`` cluster's processes. Raises ``ClusterUnreachable``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterUnreachable("--dask needs Dask: pip install 'u2net-toolkit[dask]'") from None
    if quiet:
        quiet_dask_logs()
    workers = parse_local(address)
    cluster = None
    try:
        if workers is not None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.CRITICAL if quiet else logging.WARNING)  # fmt: skip
            client = Client(cluster, timeout=timeout)
        elif address.endswith(".json") and Path(address).is_file():
            client = Client(scheduler_file=address, timeout=timeout)
        else:
            client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ClusterUnreachable(f"cannot reach the Dask scheduler at {address} within {timeout:g} s: "
                                 f"{first_line(exc)}") from None  # fmt: skip
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise ClusterUnreachable(f"no Dask worker joined the scheduler at {address} within {timeout:g} s") from None
        yield client
    finally:
        close(client, cluster)


def close(client: Client, cluster: object | None = None, timeout: float = 5.0) -> None:
    """Close the client (bounded, also when its scheduler is gone) and a local cluster's processes."""
    try:
        client.close(timeout=timeout)
    except Exception:  # noqa: BLE001, S110 - a scheduler that died cannot be told goodbye; nothing to keep
        pass
    if cluster is not None:
        try:
            cluster.close(timeout=timeout)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001, S110 - the worker processes are ended either way
            pass


__all__ = ["DEFAULT_TIMEOUT", "ClusterUnreachable", "close", "connect", "parse_local", "quiet_dask_logs"]
