"""Triton Inference Server backend: ``grpc://HOST:PORT/MODEL[/VERSION]`` or ``http://HOST:PORT/MODEL[/VERSION]``.

Only the network runs on the server; decoding, pre- and postprocessing stay in this process (the same
code as every other backend, so masks are identical). The preprocessing spec comes from the server's
model config ``parameters`` (written by ``export.to_triton`` and by ``runtime.serve``).

A batch larger than the server's ``max_batch_size`` is split into server-sized requests that are sent
together, up to ``in_flight`` at a time, so Triton's dynamic batcher and several model instances are
kept busy. A server that cannot be reached is retried a bounded number of times; every failure is one
``BackendError`` line naming the URL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from runtime.artifact import METADATA_PREFIX, Artifact
from runtime.backends.base import Backend, BackendError
from runtime.errors import first_line

log = logging.getLogger(__name__)

SCHEMES = ("grpc", "http")
INSTALL_HINT = "pip install 'tritonclient[grpc,http]' (this project's extra: '.[triton]')"
_WIRE_TYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16)}
_RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "503", "502")


@dataclass(frozen=True)
class TritonUrl:
    scheme: str
    host: str  # "host:port", as tritonclient wants it
    model: str
    version: str  # "" = the server's policy (newest)

    @classmethod
    def parse(cls, url: str) -> TritonUrl:
        parts = urlsplit(url)
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme.lower() not in SCHEMES or not parts.hostname or len(path) not in (1, 2):
            raise BackendError(f"{url}: expected grpc://HOST:PORT/MODEL[/VERSION] or http://HOST:PORT/MODEL[/VERSION]")
        if len(path) == 2 and not path[1].isdigit():
            raise BackendError(f"{url}: the model version must be a number, not {path[1]!r}")
        try:
            port = parts.port or (8001 if parts.scheme == "grpc" else 8000)  # Triton's default ports
        except ValueError:
            raise BackendError(f"{url}: bad port") from None
        return cls(parts.scheme.lower(), f"{parts.hostname}:{port}", path[0], path[1] if len(path) == 2 else "")


def _import_client(scheme: str, url: str) -> Any:
    try:
        if scheme == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise BackendError(f"{url}: the Triton client is not installed ({exc.name}); {INSTALL_HINT}") from None
    return client


def _status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


@dataclass(frozen=True)
class ServedModel:
    """What a server's model config (its JSON form) says about the model, checked against itself."""

    artifact: Artifact
    input_name: str
    data_type: str
    output_names: tuple[str, ...]
    request_batch: int  # the config's max_batch_size, 1 for a model without batching

    @classmethod
    def from_config(cls, config: dict[str, Any], url: str) -> ServedModel:
        """BackendError naming ``url`` for a config this client cannot use (shape mismatch, wrong types)."""
        model = config.get("name", "?")
        params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
        inputs, outputs = config.get("input") or [], config.get("output") or []
        if len(inputs) != 1 or not outputs:
            raise BackendError(f"{url}: model {model!r} has {len(inputs)} inputs; expected one image input")
        server_batch = int(config.get("max_batch_size", 0))
        dims = [int(d) for d in inputs[0].get("dims", [])]
        if server_batch == 0:  # no batching: the batch axis is part of dims and must be 1
            if not dims or dims[0] != 1:
                raise BackendError(f"{url}: model {model!r} takes input dims {dims} without batching")
            dims = dims[1:]
        if not any(k.startswith(METADATA_PREFIX) for k in params):
            log.warning("%s: the server's model config has no u2net.* parameters; assuming the official "
                        "preprocessing at the input's size", url)  # fmt: skip
            params[f"{METADATA_PREFIX}size"] = str(dims[-1] if dims else 320)
        artifact = Artifact.from_onnx_props(params, f"{url} (model config parameters)")
        size = artifact.spec.size
        if len(dims) != 3 or dims[0] != 3 or any(d not in (size, -1) for d in dims[1:]):
            raise BackendError(f"{url}: shape mismatch: the server's input is {dims}, "
                               f"the model's parameters say 3x{size}x{size}")  # fmt: skip
        data_type = str(inputs[0].get("data_type", "TYPE_FP32"))
        if data_type not in _WIRE_TYPES:
            raise BackendError(f"{url}: input data type {data_type} is not a float image type")
        names = tuple(str(o.get("name")) for o in outputs)
        return cls(artifact, str(inputs[0]["name"]), data_type, names, max(1, server_batch))


class TritonBackend(Backend):
    name = "triton"

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        in_flight: int = 4,
    ) -> None:
        url = os.fspath(path)
        super().__init__(url)
        for option, value in (("--provider", provider), ("--threads", threads), ("precision", precision)):
            if value is not None:
                raise BackendError(f"{url}: a Triton URL runs on the server, where {option} does not apply")
        self.url = url
        self.target = TritonUrl.parse(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self._module = _import_client(self.target.scheme, url)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        try:
            self._connect()
            self._read_config()
        except BaseException:
            self._close()
            raise
        self.in_flight = max(1, in_flight)
        self.max_batch = self.request_batch * self.in_flight  # what one run() may carry
        self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="triton")
        log.debug("%s", self.describe())

    @property
    def preferred_batch(self) -> int:
        return self.max_batch  # fill every request slot

    # -- connecting ------------------------------------------------------------------------------
    def _client(self) -> Any:
        """One client per thread: the HTTP client is not thread-safe, gRPC's is cheap to have several of."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.target.scheme == "grpc":
                client = self._module.InferenceServerClient(self.target.host)
            else:
                client = self._module.InferenceServerClient(
                    self.target.host, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, what: str, fn: Any) -> Any:
        """``fn(client)`` with bounded retries while the server is unreachable; BackendError naming the URL."""
        for attempt in range(self.retries + 1):
            try:
                return fn(self._client())
            except Exception as exc:
                status, line = _status(exc), first_line(exc)
                if "DEADLINE_EXCEEDED" in status or "timed out" in line.lower() or isinstance(exc, TimeoutError):
                    # Not retried: the server may still be working on it, and a retry would double its load.
                    raise BackendError(f"{self.url}: no answer to {what} within {self.timeout_s:g} s") from None
                unreachable = isinstance(exc, OSError) or any(s in status or s in line for s in _RETRYABLE) or (
                    "failed to connect" in line.lower() or "connection refused" in line.lower())  # fmt: skip
                if not unreachable:
                    raise BackendError(f"{self.url}: {what} failed: {line}") from None
                if attempt == self.retries:
                    raise BackendError(
                        f"{self.url}: no Triton server reachable at {self.target.host} "
                        f"after {self.retries + 1} tries ({line})"
                    ) from None
                time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    def _connect(self) -> None:
        self._call("the liveness check", lambda c: c.is_server_live())
        model, version = self.target.model, self.target.version
        if not self._call("the readiness check", lambda c: c.is_model_ready(model, version)):
            where = f"version {version} of " if version else ""
            raise BackendError(f"{self.url}: {where}model {model!r} is not ready on the server{self._others()}")
        meta = self._call("reading server metadata", lambda c: c.get_server_metadata(**self._json()))
        self.server_version = str(meta.get("version", "?")) if isinstance(meta, dict) else "?"

    def _others(self) -> str:
        """' (it has: a, b)' from the repository index; empty where the server restricts that API."""
        try:
            index = self._client().get_model_repository_index(**self._json())
        except Exception:  # noqa: BLE001 - PyTriton protects this endpoint with a token
            return ""
        entries = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({str(e.get("name")) for e in entries if isinstance(e, dict)})
        return f" (it has: {', '.join(names) or 'no models'})"

    def _json(self) -> dict[str, bool]:
        return {"as_json": True} if self.target.scheme == "grpc" else {}

    # -- the model's description ------------------------------------------------------------------
    def _read_config(self) -> None:
        model, version = self.target.model, self.target.version
        answer = self._call("reading the model config",
                            lambda c: c.get_model_config(model, version, **self._json()))  # fmt: skip
        served = ServedModel.from_config(answer.get("config", answer), self.url)
        self._artifact, self.input_name, self.output_names = served.artifact, served.input_name, served.output_names
        self._wire_type, self._wire_dtype = _WIRE_TYPES[served.data_type]
        self.request_batch = served.request_batch

    # -- running ----------------------------------------------------------------------------------
    def _run(self, batch: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        if self._pool is None:
            raise BackendError(f"{self.url}: backend is closed")
        step = self.request_batch
        chunks = [batch[i : i + step] for i in range(0, len(batch), step)]
        if len(chunks) == 1:
            return self._infer(chunks[0], names)
        parts = list(self._pool.map(lambda chunk: self._infer(chunk, names), chunks))
        return [np.concatenate([part[k] for part in parts]) for k in range(len(names))]

    def _infer(self, chunk: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        module, n, size = self._module, len(chunk), self.spec.size
        data = np.ascontiguousarray(chunk, self._wire_dtype)
        inp = module.InferInput(self.input_name, list(data.shape), self._wire_type)
        if self.target.scheme == "http":
            inp.set_data_from_numpy(data, binary_data=True)
            outs = [module.InferRequestedOutput(name, binary_data=True) for name in names]
            timeout: dict[str, Any] = {}
        else:
            inp.set_data_from_numpy(data)
            outs = [module.InferRequestedOutput(name) for name in names]
            timeout = {"client_timeout": self.timeout_s}
        model, version = self.target.model, self.target.version
        result = self._call(f"a batch of {n}", lambda c: c.infer(model, [inp], model_version=version,
                                                                   outputs=outs, **timeout))  # fmt: skip
        maps = []
        for name in names:
            out = result.as_numpy(name)
            if out is None or out.shape != (n, 1, *chunk.shape[2:]):
                got = None if out is None else out.shape
                raise BackendError(f"{self.url}: shape mismatch: the server returned {name} {got}, "
                                   f"expected {(n, 1, size, size)}")  # fmt: skip
            maps.append(out.astype(np.float32, copy=False))
        return maps

    def _engine_text(self) -> str:
        return (f"Triton {self.server_version} ({self.request_batch} per request, "
                f"{self.in_flight} in flight)")  # fmt: skip

    def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # closing a client whose server is gone can fail; nothing to do
                log.debug("%s: %s", self.url, exc)
