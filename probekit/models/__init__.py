"""Models: load a timm ViT (hub, local file, random init, or the embedded DINOv2-S/14 default)."""

from .backbone import Backbone
from .build import check_vit_structure
from .catalog import list_models
from .embedded import NAME as EMBEDDED
from .load import HubUnavailableError, default_image_size, load_model

__all__ = [
    "EMBEDDED",
    "Backbone",
    "HubUnavailableError",
    "check_vit_structure",
    "default_image_size",
    "list_models",
    "load_model",
]
