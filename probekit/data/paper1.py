"""Paper 1's deterministic 80/20 cut, and DomainNet domains read as folders with it.

Paper 1 (``ambroiseodt/vit-probing``, ``src/core/utils.py: deterministic_split``) splits the
datasets without an official test set (CIFAR-10-C, DomainNet) by permuting the sample indices with
numpy's legacy generator seeded with 42 and cutting at 80 %. :func:`official_split` reproduces that
cut, so the test images are the paper's when the samples are in the paper's order. probekit's split
rule then keeps that ``test`` and takes a stratified, seeded 20 % of ``train`` as ``val``: the probe
trains on 64 % of the images as in the paper (its 80 % of the train part is drawn by its own
generator, so those are not the same images: a deviation).

``domainnet:<domain>`` reads ``<root>/domainnet/<domain>/<class>/*.jpg`` as the VisDA-2019
multi-source zips unzip (root: ``data_dir()/torchvision`` or ``root=``), in the order of
torchvision's ``ImageFolder`` (sorted classes, sorted files), which is the order the paper cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetDownloadError, InvalidDatasetIdError
from .folder import folder_source
from .source import Source

SPLIT_SEED = 42
TRAIN_FRACTION = 0.8
DOMAINNET_PREFIX = "domainnet:"
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source/"


def official_split(n: int) -> np.ndarray:
    """Per sample ``"train"``/``"test"``: the first 80 % of ``RandomState(42).permutation(n)`` train."""
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    split = np.full(n, "test", dtype="<U5")
    split[order[: int(TRAIN_FRACTION * n)]] = "train"
    return split


RULE = f"paper 1: legacy numpy permutation seeded {SPLIT_SEED}, first {TRAIN_FRACTION:.0%} train, rest test"


def domainnet_folder(domain: str, root: Path) -> Path:
    return Path(root) / "domainnet" / domain


def domainnet_source(dataset_id: str, root: Path) -> Source:
    """One DomainNet domain as an image folder, with paper 1's 80/20 cut as its official split."""
    domain = dataset_id[len(DOMAINNET_PREFIX):]
    if domain not in DOMAINNET_DOMAINS:
        raise InvalidDatasetIdError(
            f"unknown DomainNet domain in {dataset_id!r}; use domainnet:<domain> with one of "
            f"{', '.join(DOMAINNET_DOMAINS)}."
        )
    path = domainnet_folder(domain, root)
    if not path.is_dir():
        raise DatasetDownloadError(
            f"could not load {dataset_id!r}: {path} does not exist. Download {domain}.zip from "
            f"{DOMAINNET_URL} (clipart and painting: from its groundtruth/ folder) and unzip it in "
            f"{path.parent}/ so that {path}/<class>/*.jpg exist."
        )
    source = folder_source(path)
    source.name = dataset_id
    source.official_split = official_split(len(source))
    source.provenance = {**source.provenance, "dataset": f"DomainNet {domain} (Peng et al., ICCV 2019)",
                         "url": DOMAINNET_URL, "split": RULE}
    return source
