"""Paper 1's preprocessing, literally: the views its probes' training and test features come from.

Odonnat et al. (``ambroiseodt/vit-probing``, ``src/core/data/images/utils.py: build_transform``)
extract the probe's *training* features once through the training transform,
``RandomResizedCrop(size)`` (scale 0.08–1, ratio 3/4–4/3, bilinear) then
``RandomHorizontalFlip()``, and test features through ``Resize(size)`` + ``CenterCrop(size)``;
both normalise with the ImageNet mean and std, whatever the model. Here:

* :func:`paper1_view` wraps a dataset split so ``view[i]`` is the image after that crop (and
  flip), a ``size`` x ``size`` PIL image. The random crop is drawn once per image from
  ``default_rng([seed, crc32(sample key)])``: the same image always gets the same crop, whatever
  the cap, batch or worker, and a corrupted copy gets the crop of its clean image.
* :func:`paper1_backbone` is the backbone with a transform that only converts and normalises.

Both put the view into their ``identity()``, so the feature store of a paper-1 view never
collides with the eval-transform store of the same split (the store is keyed on both identities).

:func:`drop_last_rows` is the paper's ``drop_last=True`` on its shuffled 512-image training loader.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..models import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
TRAIN_BATCH = 512  # paper 1's training loader: batch 512, shuffle, drop_last=True


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random resized crop, drawn as torchvision's ``RandomResizedCrop`` does.

    Ten tries at a random area (``CROP_SCALE`` of the image) and log-uniform aspect ratio
    (``CROP_RATIO``); if none fits, the largest central crop whose ratio is within bounds.
    """
    area = width * height
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        h, w = height, round(height * CROP_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class Paper1View:
    """A dataset split seen through paper 1's train (random crop + flip) or test (resize + centre crop) view."""

    def __init__(self, dataset: Any, size: int, *, train: bool, seed: int = 0) -> None:
        self.dataset = dataset
        self.size = int(size)
        self.train = bool(train)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # labels, classes, split, keys, provenance ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def describe(self) -> dict[str, Any]:
        """The view as stored in the feature-store key."""
        if self.train:
            return {"paper1": "train", "RandomResizedCrop": self.size, "scale": list(CROP_SCALE),
                    "ratio": [round(r, 6) for r in CROP_RATIO], "interpolation": "bilinear",
                    "horizontal_flip": 0.5, "seed": self.seed, "draw": "once per image, rng([seed, crc32(key)])"}
        return {"paper1": "test", "Resize": self.size, "CenterCrop": self.size, "interpolation": "bilinear"}

    def identity(self) -> dict[str, Any]:
        return {**self.dataset.identity(), "view": self.describe()}

    def __getitem__(self, i: int):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image, label = self.dataset[i]
        if not self.train:
            image = F.center_crop(F.resize(image, self.size, InterpolationMode.BILINEAR), self.size)
            return image, label
        key = self.dataset.keys[i if i >= 0 else len(self) + i]
        rng = np.random.default_rng([self.seed, zlib.crc32(str(key).encode())])
        top, left, h, w = crop_box(image.width, image.height, rng)
        image = F.resized_crop(image, top, left, h, w, [self.size, self.size], InterpolationMode.BILINEAR)
        if rng.random() < 0.5:
            image = F.hflip(image)
        return image, label

    def __repr__(self) -> str:
        return f"Paper1View({self.dataset!r}, size={self.size}, {'train' if self.train else 'test'})"


def paper1_view(dataset: Any, size: int, *, train: bool, seed: int = 0) -> Paper1View:
    """``dataset`` through paper 1's train view (``train=True``) or its test view."""
    return Paper1View(dataset, size, train=train, seed=seed)


@dataclass(repr=False)
class Paper1Backbone(Backbone):
    """The backbone with paper 1's tensor conversion: ToTensor + ImageNet normalisation (the crop is in the view)."""

    def identity(self) -> dict:
        ident = super().identity()
        ident["transform"] = {"paper1": "ToTensor + Normalize", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                              "input_size": [3, self.image_size, self.image_size]}
        return ident


def paper1_backbone(backbone: Backbone) -> Paper1Backbone:
    """``backbone`` whose transform converts an already cropped image as paper 1 does."""
    from torchvision import transforms as T

    if isinstance(backbone, Paper1Backbone):
        return backbone
    values = {f.name: getattr(backbone, f.name) for f in fields(Backbone)}
    values["transform"] = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return Paper1Backbone(**values)


def drop_last_rows(n: int, seed: int = 0, batch: int = TRAIN_BATCH) -> np.ndarray:
    """Rows kept by a shuffled loader of ``batch`` with ``drop_last=True``: all but a seeded random ``n % batch``.

    Paper 1's loader drops the last partial batch of a shuffled epoch. With fewer than ``batch``
    images that would drop every image, so then nothing is dropped (a stated deviation).
    """
    if n < batch or n % batch == 0:
        return np.arange(n)
    order = np.random.default_rng([seed, batch]).permutation(n)
    return np.sort(order[: n - n % batch])
