"""Rank helpers that also work undistributed (rank 0 of a world of 1), so the training loop never branches.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``setup`` reads them, joins the process
group (NCCL on GPUs, gloo on CPUs) and returns this process's device.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when absent."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return get_rank() == 0


def setup(device: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun with several processes; return the device.

    ``device``: ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA GPU is available")
    _, world, local_rank = env_ranks()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=target if use_cuda else None)
    return target


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a tensor over all ranks (the tensor itself when undistributed)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values)
    return values
