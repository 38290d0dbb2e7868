"""Bulk jobs on a Dask cluster: the command line's run, spread over many worker processes and machines.

    python -m runtime.infer -e u2netp.onnx s3://photos/in -o s3://photos/out --dask tcp://scheduler:8786
    python -m runtime.infer -e u2netp.onnx photos/ -o out --dask local:2        # two worker processes here

    from distributed import Client
    from runtime import bulk
    from runtime.render import RenderOptions
    summary = bulk.run(Client("tcp://scheduler:8786"), ["s3://photos/in"], "s3://photos/out",
                       engine="/models/u2netp.onnx", options=RenderOptions(mode="mask"))

Same inputs, options, output tree and exit status as a local run. The modules, one job each:

- ``batch``: the per-batch function (pairs of paths in, counts and error lines out) and the per-process engine
  cache; no Dask in it, so Spark's ``mapInPandas`` could drive it too;
- ``cluster``: reaching a scheduler (or starting ``local[:N]``) with bounded waits;
- ``runner``: planning on the client, the window of tasks, progress, faults, the summary;
- ``cli``: the ``--dask`` options of ``python -m runtime.infer``.

Nothing here imports Dask until a run starts: ``pip install 'u2net-toolkit[dask]'`` is only needed then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.bulk.batch import BatchResult, EngineSpec, EngineUnusable, RunSettings, process_batch

if TYPE_CHECKING:
    from runtime.pipeline import Summary


def run(client: Any, inputs: Any, out: Any, **kwargs: Any) -> Summary:
    """``runtime.bulk.runner.run``: process ``inputs`` into ``out`` on ``client``'s cluster; returns the Summary."""
    from runtime.bulk.runner import run as run_on_dask

    return run_on_dask(client, inputs, out, **kwargs)


__all__ = ["BatchResult", "EngineSpec", "EngineUnusable", "RunSettings", "process_batch", "run"]
