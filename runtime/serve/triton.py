"""Bind one of the project's backends to a PyTriton server under the exported repository's name and I/O,
and start that server with its control APIs off (``new_triton``, ``start_triton``).

Input ``image`` float32 (3, S, S) and output ``mask`` float32 (1, S, S) per request item, batched
by Triton's dynamic batcher up to ``max_batch``; the preprocessing metadata is published as the
model config's ``parameters``, exactly as ``export.to_triton`` writes them, so the same client
(``runtime.backends.triton``) works against this server and against the official container.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from runtime.artifact import METADATA_PREFIX
from runtime.backends.base import Backend, BackendError

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "mask"


def served_parameters(backend: Backend) -> dict[str, str]:
    """The engine's ``u2net.*`` metadata plus what runs it, as Triton ``parameters`` string values."""
    params = dict(backend.artifact.to_onnx_props())  # the same keys and JSON values as the ONNX file's
    params[f"{METADATA_PREFIX}served_by"] = json.dumps(backend.name)
    return params


def make_infer_function(backend: Backend) -> Any:
    """PyTriton's ``@batch`` callable: the batch Triton formed -> the backend -> the fused maps."""
    from pytriton.decorators import batch

    size = backend.spec.size

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        if image.shape[1:] != (3, size, size):
            raise ValueError(f"input image must be (N, 3, {size}, {size}), got {image.shape}")
        maps = [backend.run(image[i : i + backend.max_batch]) for i in range(0, len(image), backend.max_batch)]
        return {OUTPUT_NAME: np.ascontiguousarray(np.concatenate(maps), np.float32)}

    return infer


def bind_backend(triton: Any, backend: Backend, name: str, max_batch: int, queue_delay_us: int) -> int:
    """Register ``backend`` as model ``name``; returns the max_batch_size used (capped by the engine)."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    size = backend.spec.size
    max_batch = max(1, min(max_batch, backend.max_batch))
    triton.bind(
        model_name=name,
        infer_func=make_infer_function(backend),
        inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(3, size, size))],
        outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(1, size, size))],
        config=ModelConfig(max_batch_size=max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us)),  # fmt: skip
        strict=True,
    )
    _publish_parameters(triton, name, served_parameters(backend))
    return max_batch


def _publish_parameters(triton: Any, name: str, params: dict[str, str]) -> None:
    """Add ``params`` to the generated ``config.pbtxt``.

    PyTriton 0.7.0 has no public hook for model-config parameters; its Model builds one
    ``TritonModelConfig`` (cached) whose ``backend_parameters`` become ``parameters``; with the model
    repository written at bind time (``new_triton``) the config file is generated again. This is
    why the serve extra pins nvidia-pytriton exactly; a change there fails here with one line.
    """
    try:
        model = next(m for m in triton._model_manager.models if m.model_name == name)
        model._get_triton_model_config().backend_parameters.update(params)
        store = triton._model_manager._model_store_path
        if store is not None:  # the repository was written at bind time: write the config again
            quiet = logging.getLogger("pytriton.models.model")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # its "config file is going to be overridden" warning
            try:
                model.generate_model(store)
            finally:
                quiet.setLevel(level)
    except (AttributeError, StopIteration, TypeError) as exc:
        raise BackendError(f"this nvidia-pytriton cannot publish model parameters ({exc}); install 0.7.0") from None


# --- starting Triton with its control APIs off ----------------------------------------------------------
#
# tritonserver takes the header that unlocks a restricted API only on its command line
# (--http-restricted-api=APIS:KEY=VALUE, --grpc-restricted-protocol=...), which every local user can
# read with `ps`: PyTriton's generated access token would guard nothing from them. So no token is made.
# Instead the control APIs are restricted to a header *name* that no request can carry: HTTP/1.1 ends a
# header name at its first colon, and gRPC resets an HTTP/2 stream whose header name holds one (both
# checked against this tritonserver with raw clients). What `ps` shows is then no secret, only a lock
# without a key. Model control runs in mode "none" as well: the model is loaded from the repository at
# start-up and Triton refuses every load and unload, whoever asks. Inference, metadata, health,
# model-config and statistics stay open, as the clients and the load test need them.
CONTROL_APIS = ("shared-memory", "model-repository", "trace", "logging")
UNSENDABLE_HEADER = "x-u2net-control:off=off"  # key "x-u2net-control:off" (a colon: no request can send it)


def new_triton(config: Any, workspace: Any) -> Any:
    """A PyTriton ``Triton`` that writes its model repository before tritonserver starts, without a token."""
    from pytriton.triton import Triton, TritonLifecyclePolicy, TritonSecurityConfig

    triton = Triton(config=config, workspace=workspace, security_config=TritonSecurityConfig(restricted_endpoints=[]),
                    triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True,
                                                                  local_model_store=True))  # fmt: skip
    try:
        server_config = triton._triton_server_config
        server_config["model_control_mode"] = "none"
        server_config["load_model"] = None  # only meaningful in explicit mode
        restriction = f"{','.join(CONTROL_APIS)}:{UNSENDABLE_HEADER}"
        server_config["http_restricted_api"] = restriction
        server_config["grpc_restricted_protocol"] = restriction
    except (AttributeError, KeyError, TypeError) as exc:
        raise BackendError(f"this nvidia-pytriton cannot be configured ({exc}); install 0.7.0") from None
    return triton


def start_triton(triton: Any) -> None:
    """Start tritonserver (it loads the bound model from the repository) and wait until it is served."""
    triton._run_server()
    # PyTriton reads the logging API to warn about verbose logs; that API is off, so give it the defaults.
    checker = getattr(triton, "_log_level_checker", None)
    if checker is None or not hasattr(checker, "_log_settings"):
        raise BackendError("this nvidia-pytriton cannot be started with its logging API off; install 0.7.0")
    checker._log_settings = {}
    triton.connect()
