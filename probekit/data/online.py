"""The torchvision datasets of the two papers, downloaded when the network allows.

Each entry names the torchvision class, its official splits and the folder it creates under the
root (``data_dir()/torchvision`` unless a root is given), which is how availability is checked
without touching the network. ``download=False`` or ``$PROBEKIT_OFFLINE=1`` never touches it;
a failed download becomes :class:`DatasetDownloadError` saying
where to place the files. Labels are read from the dataset objects' label lists, never by
decoding images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..paths import data_dir
from .errors import DatasetDownloadError
from .images import to_rgb
from .source import Source


@dataclass(frozen=True)
class OnlineSpec:
    """How to build one torchvision dataset."""

    id: str
    cls: str  # torchvision.datasets class name
    splits: dict[str, dict[str, Any]]  # our official split name -> constructor kwargs
    marker: str  # path under the root that exists once the files are in place
    n_classes: int
    size: int  # total images over the splits used
    licence: str
    url: str
    extra: dict[str, Any] = field(default_factory=dict)  # constructor kwargs for every split
    downloads: bool = True  # False: torchvision cannot download it, the user places the files


ONLINE: dict[str, OnlineSpec] = {
    s.id: s
    for s in [
        OnlineSpec("cifar10", "CIFAR10", {"train": {"train": True}, "test": {"train": False}},
                   "cifar-10-batches-py", 10, 60000, "MIT-like (Krizhevsky; no formal licence)",
                   "https://www.cs.toronto.edu/~kriz/cifar.html"),
        OnlineSpec("cifar100", "CIFAR100", {"train": {"train": True}, "test": {"train": False}},
                   "cifar-100-python", 100, 60000, "MIT-like (Krizhevsky; no formal licence)",
                   "https://www.cs.toronto.edu/~kriz/cifar.html"),
        OnlineSpec("pets", "OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}},
                   "oxford-iiit-pet", 37, 7349, "CC BY-SA 4.0",
                   "https://www.robots.ox.ac.uk/~vgg/data/pets/"),
        OnlineSpec("flowers102", "Flowers102",
                   {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                   "flowers-102", 102, 8189, "unknown (VGG, research use)",
                   "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
        OnlineSpec("svhn", "SVHN", {"train": {"split": "train"}, "test": {"split": "test"}},
                   "train_32x32.mat", 10, 99289, "non-commercial research use",
                   "http://ufldl.stanford.edu/housenumbers/"),
        OnlineSpec("dtd", "DTD", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                   "dtd", 47, 5640, "research use (Cimpoi et al.)",
                   "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
        OnlineSpec("eurosat", "EuroSAT", {"all": {}}, "eurosat", 10, 27000, "MIT",
                   "https://github.com/phelber/EuroSAT"),
        OnlineSpec("gtsrb", "GTSRB", {"train": {"split": "train"}, "test": {"split": "test"}},
                   "gtsrb", 43, 39209 + 12630, "CC0 1.0 (per the GTSRB site)",
                   "https://benchmark.ini.rub.de/gtsrb_dataset.html"),
        OnlineSpec("stl10", "STL10", {"train": {"split": "train"}, "test": {"split": "test"}},
                   "stl10_binary", 10, 13000, "research use (Coates et al.)",
                   "https://cs.stanford.edu/~acoates/stl10/"),
        # the public FER2013 test file has no labels: only the labelled train file is used
        OnlineSpec("fer2013", "FER2013", {"all": {"split": "train"}}, "fer2013", 7, 28709,
                   "research use (Kaggle ICML 2013 challenge)",
                   "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge",
                   downloads=False),
        OnlineSpec("pcam", "PCAM", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                   "pcam", 2, 327680, "CC0 1.0", "https://github.com/basveeling/pcam"),
        OnlineSpec("country211", "Country211",
                   {"train": {"split": "train"}, "val": {"split": "valid"}, "test": {"split": "test"}},
                   "country211", 211, 63300, "CC BY (subset of YFCC100M)",
                   "https://github.com/openai/CLIP/blob/main/data/country211.md"),
    ]
}

FALLBACK_CLASSES = {
    "fer2013": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "pcam": ["no tumour", "tumour"],
    "svhn": [str(d) for d in range(10)],
}


def torchvision_root(root: str | Path | None = None) -> Path:
    """Where torchvision datasets live: the given root, else ``data_dir()/torchvision``."""
    return Path(root).expanduser() if root is not None else data_dir() / "torchvision"


def is_available(dataset_id: str, root: str | Path | None = None) -> bool:
    """Whether the files of an online dataset are already in place (no network used)."""
    spec = ONLINE[dataset_id]
    base = torchvision_root(root)
    return (base / spec.marker).exists() or (base / spec.cls.lower() / spec.marker).exists()


def how_to_get(dataset_id: str, root: str | Path | None = None) -> str:
    """One sentence saying how to get an online dataset onto this machine."""
    spec = ONLINE[dataset_id]
    base = torchvision_root(root)
    if not spec.downloads:
        return (f"download it from {spec.url} and place the files in {base / spec.marker}/ "
                f"as torchvision.datasets.{spec.cls} expects")
    return (f"downloads on first use; offline, put the files torchvision.datasets.{spec.cls} "
            f"fetches from {spec.url} in {base}/ (so that {base / spec.marker} exists)")


def place_files(spec: OnlineSpec, base: Path) -> str:
    """The sentence telling a user without network where to put the files."""
    where = "" if not spec.downloads else " (or run once with a network, it downloads itself)"
    return (f"Download the files torchvision.datasets.{spec.cls} uses from {spec.url} and place them "
            f"in {base}/ so that {base / spec.marker} exists{where}.")


def _labels_of(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(ds, attr, None)
        if values is not None:
            return np.asarray(values, dtype=np.int64)
    samples = getattr(ds, "_samples", None)
    if samples is not None:
        return np.asarray([s[1] for s in samples], dtype=np.int64)
    if type(ds).__name__ == "PCAM":  # labels live in an h5 file next to the images
        import h5py

        path = ds._base_folder / ds._FILES[ds._split]["targets"][0]
        with h5py.File(path) as f:
            return np.asarray(f["y"][:, 0, 0, 0], dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)  # last resort: decode


class TorchvisionLoader:
    """Loads sample ``i`` of the concatenated torchvision split objects as RGB; picklable."""

    def __init__(self, parts: list[Any], offsets: list[int]) -> None:
        self.parts = parts
        self.offsets = offsets

    def __call__(self, i: int) -> Image.Image:
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        img = self.parts[part][i - self.offsets[part]][0]
        return to_rgb(img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img)))


def download_allowed(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$PROBEKIT_OFFLINE`` is set to a non-empty value."""
    if download is not None:
        return download
    return not os.environ.get("PROBEKIT_OFFLINE")


def _construct(spec: OnlineSpec, base: Path, kwargs: dict[str, Any], download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.cls, None)
    if cls is None:
        raise DatasetDownloadError(
            f"this torchvision has no datasets.{spec.cls}; upgrade torchvision to use {spec.id!r}."
        )
    args = {**spec.extra, **kwargs}
    if spec.downloads:
        args["download"] = download
    try:
        return cls(str(base), **args)
    except Exception as exc:  # network failure, missing files, checksum error, missing h5py, ...
        raise DatasetDownloadError(
            f"could not load {spec.id!r} ({type(exc).__name__}: {exc}). {place_files(spec, base)} "
            f"Or pass root= to load_dataset pointing at a folder that already holds them."
        ) from exc


def online_source(dataset_id: str, root: str | Path | None = None, download: bool | None = None) -> Source:
    """Build the Source of a torchvision dataset, downloading it if needed and allowed."""
    import torchvision

    spec = ONLINE[dataset_id]
    base = torchvision_root(root)
    base.mkdir(parents=True, exist_ok=True)
    parts, labels, official, keys, offsets = [], [], [], [], []
    for split, kwargs in spec.splits.items():
        ds = _construct(spec, base, kwargs, download_allowed(download))
        part_labels = _labels_of(ds)
        offsets.append(len(keys))
        parts.append(ds)
        labels.append(part_labels)
        official += [split] * len(part_labels)
        keys += [f"{split}/{i:06d}" for i in range(len(part_labels))]
    classes = getattr(parts[0], "classes", None) or FALLBACK_CLASSES.get(dataset_id)
    all_labels = np.concatenate(labels)
    if not classes:  # GTSRB: no names in the files; the class ids, all of them (not just those seen)
        classes = [str(c) for c in range(max(spec.n_classes, int(all_labels.max()) + 1))]
    return Source(
        name=dataset_id,
        keys=keys,
        labels=all_labels,
        classes=[str(c) for c in classes],
        load=TorchvisionLoader(parts, offsets),
        provenance={
            "source": "online", "package": "torchvision", "version": torchvision.__version__,
            "dataset_class": f"torchvision.datasets.{spec.cls}", "licence": spec.licence,
            "url": spec.url, "root": str(base), "image_mode": "RGB (converted)",
        },
        official_split=None if "all" in spec.splits else np.array(official),
    )
