"""``python -m runtime.infer ... --dask ADDRESS``: the options, and the run with the CLI's lines and exit status.

Exit status as locally: 0 all done, 1 some inputs failed (one line each), 2 no usable cluster (the scheduler
does not answer, no worker joins, the scheduler dies during the run) or an engine that cannot run on the
workers, each as one line.
"""

from __future__ import annotations

import argparse
import sys

from runtime.argtypes import positive_float, positive_int
from runtime.bulk.cluster import DEFAULT_TIMEOUT, ClusterUnreachable, connect, parse_local
from runtime.render import RenderOptions
from runtime.video import VideoOptions


def dask_address(text: str) -> str:
    """argparse type: ``local``, ``local:N``, a scheduler file or an address; ``local:0`` and ``local:x`` are errors."""
    try:
        parse_local(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_dask_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cluster", "run the same job on a Dask cluster: same inputs, options and outputs")
    g.add_argument("--dask", type=dask_address, metavar="ADDRESS",
                   help="a scheduler's address (tcp://HOST:8786), its scheduler file (.json), or local[:N]: N worker "
                   "processes on this machine (default one per core), loopback only. Local paths must be the same "
                   "on the client and the workers (a shared volume); store URLs work anywhere")
    g.add_argument("--task-size", type=positive_int, metavar="N",
                   help="images per Dask task (default: whole engine batches, at most 8, and about 4 tasks per "
                   "worker thread)")
    g.add_argument("--dask-timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="wait at most this long for the scheduler to answer and for a first worker (default: %(default)g)")


def run_from_args(args: argparse.Namespace, options: RenderOptions, video: VideoOptions) -> int:
    """The CLI's run on Dask; prints the summary line and returns the exit status."""
    from runtime.bulk.batch import EngineUnusable
    from runtime.bulk.runner import SchedulerLost, run

    try:
        with connect(args.dask, timeout=args.dask_timeout, quiet=not args.verbose) as client:
            summary = run(client, args.inputs, args.output, engine=args.engine, options=options, video=video,
                          backend=args.backend, provider=args.provider, threads=args.threads,
                          batch_size=args.batch_size, max_pixels=args.max_pixels, precision=args.precision,
                          skip_existing=args.skip_existing, io_threads=args.io_threads, shard=args.shard,
                          task_size=args.task_size, progress=not (args.no_progress or args.quiet),
                          keep_freed_memory=not args.release_memory)  # fmt: skip
    except (ClusterUnreachable, EngineUnusable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SchedulerLost as exc:
        print(f"error: {exc}; {exc.done} files were done before it, and their outputs are complete in "
              f"{args.output} (run again with --skip-existing to do the rest)", file=sys.stderr)  # fmt: skip
        return 2
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0


__all__ = ["add_dask_arguments", "dask_address", "run_from_args"]
