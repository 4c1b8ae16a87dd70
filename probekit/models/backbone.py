"""The :class:`Backbone`: a frozen timm ViT together with everything needed to feed and name it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Backbone:
    """A frozen ViT, its preprocessing, and the facts extraction and reports need."""

    model: nn.Module  # timm VisionTransformer, eval mode, requires_grad False
    name: str  # what the user asked for: "dinov2_vits14", "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    architecture: str  # timm architecture name
    display_name: str  # how reports name it
    source: str  # where the weights came from
    image_size: int
    data_config: dict  # timm data config; input_size follows image_size
    transform: Callable  # PIL.Image (RGB) -> float tensor (3, H, W)
    weights_digest: str  # short sha256 of the state dict
    extra: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def num_heads(self) -> int:
        return int(self.model.blocks[0].attn.num_heads)

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.model.blocks[0].mlp.fc2.in_features)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    @property
    def has_class_token(self) -> bool:
        return bool(getattr(self.model, "has_class_token", False))

    @property
    def num_patches(self) -> int:
        return int(self.model.patch_embed.num_patches)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def identity(self) -> dict:
        """Everything that changes the features this backbone produces, for store hashing."""
        cfg = self.data_config
        return {
            "name": self.name,
            "architecture": self.architecture,
            "weights_digest": self.weights_digest,
            "image_size": self.image_size,
            "transform": {
                "input_size": list(cfg["input_size"]),
                "interpolation": cfg.get("interpolation"),
                "mean": [float(v) for v in cfg["mean"]],
                "std": [float(v) for v in cfg["std"]],
                "crop_pct": float(cfg.get("crop_pct", 1.0)),
                "crop_mode": cfg.get("crop_mode", "center"),
            },
        }

    def describe(self) -> dict:
        """Facts for a report's run-info table."""
        return {
            "model": self.display_name,
            "timm architecture": self.architecture,
            "weights": self.source,
            "weights sha256": self.weights_digest,
            "image size": self.image_size,
            "depth × width": f"{self.depth} × {self.embed_dim} (MLP {self.mlp_hidden_dim}, {self.num_heads} heads)",
            "prefix tokens": self.num_prefix_tokens,
        }

    def __repr__(self) -> str:
        return (
            f"Backbone({self.display_name!r}, {self.architecture}, {self.image_size}px, "
            f"depth={self.depth}, dim={self.embed_dim}, weights={self.weights_digest})"
        )
