"""Multi-process extraction under ``torchrun``: rank, world size, barriers and device per rank.

``torchrun --nproc-per-node N`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`setup` then
starts a process group (NCCL for CUDA, gloo on CPU) once. A plain ``python`` run is rank 0 of 1
and every helper here is a no-op.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import local_rank


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (rank 0 of 1 without it)."""
    return DistInfo(
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        local_rank(),
    )


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (idempotent); gloo on CPU, NCCL on CUDA."""
    info = env_info()
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        atexit.register(teardown)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)
    return info


def teardown() -> None:
    """Leave the process group (at exit, registered by :func:`setup`): a group left to the
    interpreter's shutdown once aborted a finished rank ("terminate called without an active
    exception") while the other rank was still writing, which failed the whole torchrun job."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def gather(obj: object) -> list:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
