"""Bind one of the project's backends to a PyTriton server under the exported repository's name and I/O.

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
    ``TritonModelConfig`` (cached) whose ``backend_parameters`` become ``parameters``. This is
    why the serve extra pins nvidia-pytriton exactly; a change there fails here with one line.
    """
    try:
        models = [m for m in triton._model_manager.models if m.model_name == name]
        config = models[0]._get_triton_model_config()
        config.backend_parameters.update(params)
    except (AttributeError, IndexError, TypeError) as exc:
        raise BackendError(f"this nvidia-pytriton cannot publish model parameters ({exc}); install 0.7.0") from None
