"""The one rule for choosing a torch device.

Every ``device`` argument in probekit means the same thing: a torch device (``"cpu"``, ``"cuda"``,
``"cuda:1"``, a :class:`torch.device`) is used as given, and ``None`` means the CUDA GPU of this
process when CUDA is available (``cuda:<LOCAL_RANK>`` under ``torchrun``; ``cuda:0`` otherwise),
else the CPU. A function that prefers the CPU whatever the machine (the shift measures compute in
float64) says so with a default of ``"cpu"``, never by giving ``None`` another meaning.
"""

from __future__ import annotations

import os

import torch


def local_rank() -> int:
    """This process's rank on its machine under ``torchrun`` (``LOCAL_RANK``); 0 without it."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None``: this process's CUDA GPU if there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")
