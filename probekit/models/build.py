"""Build a frozen :class:`Backbone` from a timm architecture: create it (random initialisation or a
local weights file), check its block structure, freeze it and derive its preprocessing.

The layer under :func:`probekit.models.load_model`, which adds names, the hub and the embedded
default; :mod:`probekit.models.embedded` builds its fingerprint model through here directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..device import resolve_device
from ..errors import NotAViTError
from .backbone import Backbone

BLOCK_PARTS = ("norm1", "attn", "norm2", "mlp")
MLP_PARTS = ("fc2",)  # fc1 is absent from SwiGLU MLPs (fc1_g, fc1_x); the act site reads fc2's input


def timm_kwargs(image_size: int | None, kwargs: dict | None = None) -> dict:
    """Keywords for ``timm.create_model``: no classifier head, the image size when one is given."""
    extra = dict(num_classes=0, **(kwargs or {}))
    if image_size is not None:
        extra["img_size"] = image_size
    return extra


def create_local(
    timm_name: str, *, image_size: int | None, weights: Path | None = None, kwargs: dict | None = None
) -> nn.Module:
    """A timm model without the hub: random initialisation, or loaded strictly from ``weights``."""
    import timm

    from .weights import load_weights_file

    model = timm.create_model(timm_name, pretrained=False, **timm_kwargs(image_size, kwargs))
    if weights is not None:
        load_weights_file(model, weights, timm_name)
    return model


def check_vit_structure(model: nn.Module, name: str) -> None:
    """Raise :class:`NotAViTError` naming what is missing when ``model`` lacks pre-norm ViT blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        children = ", ".join(n for n, _ in model.named_children()) or "none"
        raise NotAViTError(
            f"{name} is not a ViT that probekit can probe: it has no `blocks` sequence of transformer "
            f"blocks (its top-level modules are: {children}). probekit needs timm ViT-family models "
            "(vit_*, deit*, *_dinov2, ...)."
        )
    block = blocks[0]
    from ..sites import check_supported

    check_supported(model)  # post-norm and parallel blocks: refused naming why
    missing = [p for p in BLOCK_PARTS if not hasattr(block, p)]
    mlp = getattr(block, "mlp", None)
    missing += [f"mlp.{p}" for p in MLP_PARTS if mlp is not None and not hasattr(mlp, p)]
    for attr in ("num_prefix_tokens", "patch_embed", "norm"):
        if not hasattr(model, attr):
            missing.append(attr if attr != "norm" else "norm (final)")
    if missing:
        raise NotAViTError(
            f"{name} has `blocks`, but not the pre-norm ViT block structure the site taxonomy needs: "
            f"missing {', '.join(missing)} (block type {type(block).__name__}). Expected "
            "x = x + attn(norm1(x)); x = x + mlp(norm2(x)) with mlp.fc1/mlp.fc2."
        )


def state_digest(model: nn.Module) -> str:
    """Short sha256 over the parameters and buffers, in key order: names the weights exactly."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def frozen_backbone(
    model: nn.Module,
    *,
    name: str,
    architecture: str,
    display_name: str,
    source: str,
    image_size: int | None,
    device: str | torch.device | None,
) -> Backbone:
    """Check, freeze and move ``model``; its transform comes from its own timm data config."""
    from timm.data import create_transform, resolve_model_data_config

    check_vit_structure(model, name)
    model.eval().requires_grad_(False).to(resolve_device(device))
    data_config = dict(resolve_model_data_config(model))
    size = image_size or int(data_config["input_size"][-1])
    data_config["input_size"] = (3, size, size)
    return Backbone(
        model=model,
        name=name,
        architecture=architecture,
        display_name=display_name,
        source=source,
        image_size=size,
        data_config=data_config,
        transform=create_transform(**data_config, is_training=False),
        weights_digest=state_digest(model),
    )
