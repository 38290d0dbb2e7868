"""One ``Remover`` shared by the image endpoint's requests: the CLI's load -> run -> render path on a thread pool.

Each image is ``Remover.load_for`` (decode, preprocess), ``Remover.predict`` (the engine) and
``Remover.output`` (postprocess, draw, encode): the three steps ``Remover.render`` and the file pipeline
run, so the endpoint's bytes are the CLI's. Decoding and encoding of one request overlap with another's
inference; the engine call itself is serialised for in-process backends (an OpenVINO infer request or a
TensorRT context serves one caller at a time) and left concurrent for a Triton server, whose dynamic
batcher wants many requests in flight.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from runtime.api import Remover
from runtime.render import RenderOptions

T = TypeVar("T")

LOCAL_ACTIVE = 2  # in-process engine: one image in the engine, one being decoded or encoded beside it
SERVER_ACTIVE = 8  # a Triton server: enough requests in flight for its dynamic batcher


def default_active(remover: Remover) -> int:
    """Images worked on at once: two for an in-process engine (measured: docs/serving.md), eight for a Triton URL."""
    return SERVER_ACTIVE if remover.backend.name == "triton" else LOCAL_ACTIVE


class RenderPool:
    """``max_active`` worker threads around one ``Remover``; ``run`` hands them work from the event loop."""

    def __init__(self, remover: Remover | list[Remover], max_active: int | None = None) -> None:
        self.removers = remover if isinstance(remover, list) else [remover]
        self.remover = self.removers[0]
        self.max_active = max_active or default_active(self.remover) + len(self.removers) - 1
        self.concurrent_engine = self.remover.backend.name == "triton"
        self._free: queue.SimpleQueue[Remover] = queue.SimpleQueue()
        for each in self.removers:
            self._free.put(each)
        self._pool = ThreadPoolExecutor(self.max_active, thread_name_prefix="image")
        self._mean_s = 0.2  # recent time per image, for Retry-After
        self._closed = False

    @property
    def seconds_per_image(self) -> float:
        return self._mean_s

    def render(self, data: bytes | bytearray, options: RenderOptions) -> bytes:
        """Encoded bytes for one image, exactly as ``Remover.render`` makes them (call from a worker thread).

        Decoding and encoding need no engine (any instance's spec serves); the engine call takes a free
        instance, or, for a Triton server, runs concurrently."""
        prepared = self.remover.load_for(data, options)
        if self.concurrent_engine:
            probability = self.remover.predict(prepared.model_input[None])[0]
        else:
            engine = self._free.get()
            try:
                probability = engine.predict(prepared.model_input[None])[0]
            finally:
                self._free.put(engine)
        return self.remover.output(prepared, probability, options)

    async def run(self, job: Callable[[], T]) -> T:
        """``job()`` on a worker thread; its time per image feeds ``seconds_per_image``."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            return await loop.run_in_executor(self._pool, job)
        finally:
            self._mean_s = 0.9 * self._mean_s + 0.1 * (time.perf_counter() - start)

    def close(self) -> None:
        """Finish what was started, then release the engine."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            for each in self.removers:
                each.close()
