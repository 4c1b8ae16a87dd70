"""CIFAR-10-C from its released files: ``cifar10c:<corruption>@<severity>`` (paper 1's shifted sets).

Hendrycks & Dietterich released CIFAR-10-C as ``CIFAR-10-C.tar`` (zenodo record 2535967): one
``<corruption>.npy`` per corruption, ``(50000, 32, 32, 3)`` uint8 holding the 10,000 CIFAR-10 test
images at severity 1, then 2, ... 5, and ``labels.npy`` (50,000 labels in the same order). probekit
reads the 10k rows of one severity from ``<root>/CIFAR-10-C/`` (root: ``data_dir()/torchvision``
or ``root=``), memory-mapped; nothing is downloaded (the tar is 2.9 GB).

Splits follow paper 1 (:mod:`probekit.data.paper1`): of the 10k images of a severity, the 2,000
the paper tests on are the official ``test``, the other 8,000 ``train``; probekit's split rule
keeps ``test`` and takes a stratified, seeded 20 % of ``train`` as ``val``, so the probe trains on
6,400 images as in the paper (not the same 6,400: see :mod:`probekit.data.paper1`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import DatasetDownloadError, InvalidDatasetIdError
from .paper1 import RULE, official_split
from .source import RGBArrayLoader, Source

PREFIX = "cifar10c:"
FOLDER = "CIFAR-10-C"
URL = "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar"
PER_SEVERITY = 10_000
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FAMILIES = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
    "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)
_ID = re.compile(r"^cifar10c:(?P<family>[a-z_]+)@(?P<severity>\d+)$")


def parse(dataset_id: str) -> tuple[str, int]:
    """``("snow", 5)`` for ``cifar10c:snow@5``; a clear error for anything else."""
    match = _ID.match(dataset_id)
    if match is None or match["family"] not in FAMILIES or not 1 <= int(match["severity"]) <= 5:
        raise InvalidDatasetIdError(
            f"cannot read {dataset_id!r}: the released CIFAR-10-C is written cifar10c:<corruption>@<1-5>, "
            f"e.g. cifar10c:snow@5; corruptions: {', '.join(FAMILIES)}."
        )
    return match["family"], int(match["severity"])


def folder(root: Path) -> Path:
    """Where the ``.npy`` files are expected."""
    return Path(root) / FOLDER


def is_available(root: Path) -> bool:
    return (folder(root) / "labels.npy").is_file()


def how_to_get(root: Path) -> str:
    return (f"download {URL} and extract it into {Path(root)}/ (tar xf CIFAR-10-C.tar -C {Path(root)}), "
            f"so that {folder(root) / 'labels.npy'} exists")


def paper1_official_split(n: int = PER_SEVERITY) -> np.ndarray:
    """Per image ``"train"``/``"test"``: paper 1's seeded 80/20 cut of the images of a severity."""
    return official_split(n)


def cifar10c_source(dataset_id: str, root: Path) -> Source:
    """The 10,000 images of one corruption and severity, with paper 1's train/test cut."""
    family, severity = parse(dataset_id)
    base = folder(root)
    images_path, labels_path = base / f"{family}.npy", base / "labels.npy"
    if not images_path.is_file() or not labels_path.is_file():
        missing = images_path if not images_path.is_file() else labels_path
        raise DatasetDownloadError(f"could not load {dataset_id!r}: {missing} does not exist. "
                                   f"To get CIFAR-10-C: {how_to_get(root)}.")
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path)
    if images.shape[1:] != (32, 32, 3) or len(images) != len(labels) or len(images) % 5:
        raise DatasetDownloadError(
            f"{images_path} has shape {images.shape} and {labels_path} {len(labels)} labels; the released "
            "files hold 5 severities x N images of 32x32x3 with one label each. Re-extract the tar."
        )
    n = len(images) // 5
    rows = slice((severity - 1) * n, severity * n)
    return Source(
        name=dataset_id,
        keys=[f"{family}@{severity}/{i:05d}" for i in range(n)],
        labels=np.asarray(labels[rows], dtype=np.int64),
        classes=list(CLASSES),
        load=RGBArrayLoader(images[rows]),
        provenance={
            "source": "released files", "dataset": "CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019)",
            "url": URL, "licence": "CC BY 4.0", "root": str(base), "corruption": family, "severity": severity,
            "split": RULE,
            "image_mode": "RGB",
        },
        official_split=paper1_official_split(n),
    )
