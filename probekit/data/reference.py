"""The reference set: images standing in for the pretraining distribution.

With a folder (ImageNet val, Imagenette, any photos), ``n`` images drawn from it with the seed.
Offline, ``n`` random square crops of the natural photos bundled with scikit-image and
scikit-learn (id ``photos``): crop side uniform in [35 %, 100 %] of the photo's shorter side,
position uniform, resized to 224x224 (ImageNet's evaluation size), a random horizontal flip;
each crop is named by its photo and box, so the sample list says exactly what was cut.
Grayscale photos are left out: the set should look like colour photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..provisioning import PackageFile, pip_package_file
from .errors import AssetMissingError
from .images import load_rgb
from .source import Source

PHOTO_FILES = [
    ("scikit-image", "skimage/data/astronaut.png"),
    ("scikit-image", "skimage/data/chelsea.png"),
    ("scikit-image", "skimage/data/coffee.png"),
    ("scikit-image", "skimage/data/rocket.jpg"),
    ("scikit-image", "skimage/data/motorcycle_left.png"),
    ("scikit-image", "skimage/data/motorcycle_right.png"),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
]
PHOTO_FILE = PackageFile("scikit-image", "skimage/data/chelsea.png", "scikit-image")  # says the photos are here
CROP_SIZE = 224
MIN_CROP_FRACTION = 0.35


def photo_paths() -> list[Path]:
    """The bundled natural colour photos that are present on this machine."""
    found = [pip_package_file(dist, rel) for dist, rel in PHOTO_FILES]
    return [p for p in found if p is not None]


class CropLoader:
    """Cuts crop ``i`` (photo index, box, flip) from the photos, resized; picklable."""

    def __init__(self, paths: list[Path], boxes: np.ndarray) -> None:
        self.paths = paths
        self.boxes = boxes  # (n, 5): photo, left, top, side, flip
        self._cache: dict[int, Image.Image] = {}

    def __call__(self, i: int) -> Image.Image:
        photo, left, top, side, flip = (int(v) for v in self.boxes[i])
        if photo not in self._cache:
            self._cache[photo] = load_rgb(self.paths[photo])
        crop = self._cache[photo].crop((left, top, left + side, top + side))
        crop = crop.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BICUBIC)
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "boxes": self.boxes, "_cache": {}}


def photos_source(n: int = 500, seed: int = 0) -> Source:
    """``n`` random crops of the bundled photos, spread evenly over the photos."""
    paths = photo_paths()
    if not paths:
        raise AssetMissingError(
            "no bundled natural photos found (scikit-image / scikit-learn sample images). "
            "Run `pip install scikit-image scikit-learn`, or give reference_set(folder=...)."
        )
    sizes = []
    for path in paths:
        with Image.open(path) as img:
            sizes.append(img.size)
    rng = np.random.default_rng([seed, 20260])
    boxes = np.zeros((n, 5), dtype=np.int64)
    for i in range(n):
        photo = i % len(paths)
        width, height = sizes[photo]
        short = min(width, height)
        side = int(rng.uniform(MIN_CROP_FRACTION, 1.0) * short)
        boxes[i] = (photo, rng.integers(0, width - side + 1), rng.integers(0, height - side + 1),
                    side, rng.integers(0, 2))
    names = [p.stem for p in paths]
    keys = [f"{names[b[0]]}/x{b[1]}y{b[2]}s{b[3]}f{b[4]}" for b in boxes]
    return Source(
        name="photos",
        keys=keys,
        labels=boxes[:, 0],
        classes=names,
        load=CropLoader(paths, boxes),
        provenance={
            "source": "offline", "package": "scikit-image + scikit-learn sample images",
            "version": None, "licence": "see skimage/data/README.txt and sklearn/datasets/images/README.txt",
            "url": "https://scikit-image.org/docs/stable/api/skimage.data.html",
            "image_mode": f"RGB {CROP_SIZE}x{CROP_SIZE} crops", "photos": [str(p) for p in paths],
            "crops": n, "crop_seed": seed,
        },
    )
