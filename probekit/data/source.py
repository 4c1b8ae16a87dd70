"""A dataset before splitting: stable sample keys, labels, class names, a loader and provenance.

Every registry entry builds one :class:`Source`. Labels are known without decoding any image;
``load(i)`` decodes sample ``i`` to an RGB image at its native size. File-backed sources also
give ``paths`` so broken files can be found and skipped before anyone extracts features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# the official split an item belongs to, where the dataset has one
OFFICIAL_SPLITS = ("train", "val", "test")


@dataclass
class Source:
    """All samples of one dataset, in a fixed order, plus what is needed to read them."""

    name: str  # registry id of the clean dataset
    keys: list[str]  # one stable, unique string per sample (file path relative to the root, index)
    labels: np.ndarray  # int64, one per sample
    classes: list[str]
    load: Callable[[int], Image.Image]  # sample index -> RGB image at native size
    provenance: dict[str, Any]  # package, version, licence, url, image mode, ...
    official_split: np.ndarray | None = None  # per sample "train" / "val" / "test", if official
    paths: list[Path] | None = None  # per sample file, for file-backed sources (checked for damage)
    skipped_files: list[str] = field(default_factory=list)  # found broken while building the source

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.keys) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.keys)} keys but {len(self.labels)} labels")
        if self.official_split is not None and len(self.official_split) != len(self.keys):
            raise ValueError(f"{self.name}: official split does not cover every sample")

    def __len__(self) -> int:
        return len(self.keys)


class GrayArrayLoader:
    """Loads sample ``i`` of an (N, H, W) gray array scaled from ``[0, top]``; picklable."""

    def __init__(self, pixels: np.ndarray, top: float = 255.0) -> None:
        self.pixels = pixels
        self.top = top

    def __call__(self, i: int) -> Image.Image:
        from .images import gray_array_to_image

        return gray_array_to_image(self.pixels[i], self.top)


class RGBArrayLoader:
    """Loads sample ``i`` of an (N, H, W, 3) uint8 array; picklable."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.pixels[i]))


class FileLoader:
    """Loads sample ``i`` from its image file, converted to RGB; picklable."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> Image.Image:
        from .images import load_rgb

        return load_rgb(self.paths[i])

    def reduced(self, i: int, min_side: int) -> Image.Image:
        """Sample ``i`` possibly decoded smaller, shorter side still ≥ ``min_side`` (for resampling callers)."""
        from .images import load_rgb

        return load_rgb(self.paths[i], min_side=min_side)
