"""Shared fixtures: the embedded model (converted once per session) and small real images."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def embedded_backbone():
    """The embedded DINOv2-S/14 at the CPU default size (112 px)."""
    from probekit.models import load_model

    return load_model("dinov2_vits14", image_size=112, device="cpu")
