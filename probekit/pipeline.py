"""From a model and datasets to feature stores: where every study gets its features.

Each call loads a dataset split from the registry and returns its content-addressed feature
store, extracting only what is not on disk yet. Every notebook goes through here with the same
sites and pools, so a suite extracts each (model, dataset, split) once and the other notebooks
reuse it.

Before anything is extracted the splits are checked for what no probe can learn from: fewer than
two classes, or a class with fewer than two images in a split (:class:`TooFewImagesError`, which
names the class and what to do). ``view="paper1"`` extracts through paper 1's own preprocessing
(:mod:`probekit.data.paper1_views`) into stores of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import ImageDataset, load_dataset
from .errors import ProbekitError
from .extract import features
from .models import Backbone
from .sites import DEFAULT_POOLS
from .store import FeatureStore

MIN_PER_CLASS = 2  # images of every class in every split: one cannot be both fitted and scored
VIEWS = ("eval", "paper1")


class TooFewImagesError(ProbekitError, ValueError):
    """A dataset whose splits cannot train or score a probe: one class, or a class too small for a split."""


@dataclass
class SplitFeatures:
    """A dataset's feature stores by split, with the facts reports need."""

    dataset: str
    classes: list[str]
    stores: dict[str, FeatureStore]
    provenance: dict = field(default_factory=dict)

    @property
    def train(self) -> FeatureStore:
        return self.stores["train"]

    @property
    def test(self) -> FeatureStore:
        return self.stores["test"]

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.stores[split].labels, dtype=np.int64)

    @property
    def skipped(self) -> int:
        """Corrupt or unreadable files skipped while building the splits."""
        return int(self.provenance.get("skipped", 0))


def extraction_kwargs(
    sites: Iterable[str] | None = None,
    pools: Sequence[str] = DEFAULT_POOLS,
    token_sites: Iterable[str] = (),
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """The keywords every analysis passes to :func:`probekit.extract.features`."""
    return {
        "sites": list(sites) if sites is not None else None,
        "pools": tuple(pools),
        "token_sites": tuple(token_sites),
        "batch_size": batch_size,
        "progress": progress,
    }


def per_class_cap(images_per_class: int | None) -> int | None:
    """The per-class cap a study passes to the registry: ``0`` (or ``None``) means every image."""
    if images_per_class is None or int(images_per_class) == 0:
        return None
    if int(images_per_class) < 0:
        raise ValueError(
            f"images_per_class must be a positive number, or 0 for every image; got {images_per_class}"
        )
    return int(images_per_class)


def check_classes(datasets: dict[str, ImageDataset], dataset_id: str) -> None:
    """Fail on splits no probe can learn from: under two classes, or a class with under two images.

    ``datasets`` maps split names to the loaded splits of ``dataset_id``. The message names the
    class, its count in every split and what to do.
    """
    first = next(iter(datasets.values()))
    classes = list(first.classes)
    counts = {split: np.bincount(ds.labels, minlength=len(classes)) for split, ds in datasets.items()}
    present = sorted({c for cnt in counts.values() for c in np.flatnonzero(cnt)})
    if len(present) < 2:
        names = [classes[c] for c in present] or ["none"]
        raise TooFewImagesError(
            f"dataset {dataset_id!r} has {len(present)} class with images ({', '.join(names)}): a probe needs at "
            "least 2 classes to tell apart, so every layer would score 1.000 and the 'best layer' would mean "
            "nothing. Add a second class (for a folder: a second sub-folder of images) or choose another dataset."
        )
    for split, cnt in counts.items():
        small = [c for c in range(len(classes)) if cnt[c] < MIN_PER_CLASS]
        if small:
            c = small[0]
            where = ", ".join(f"{s} {int(counts[s][c])}" for s in counts)
            more = (
                f" (and {len(small) - 1} more class(es): {', '.join(classes[k] for k in small[1:6])})"
                if small[1:]
                else ""
            )
            cap = first.max_per_class
            raise TooFewImagesError(
                f"class {classes[c]!r} of dataset {dataset_id!r} has {int(cnt[c])} image(s) in the {split} split "
                f"({where}){more}; every class needs at least {MIN_PER_CLASS} images in every split to be fitted "
                f"and scored (split rule: {first.provenance.get('split_rule', '?')}). Add images to that class "
                f"(about {MIN_PER_CLASS * 5} for a dataset without official splits), remove it"
                + (f", or raise images_per_class (now {cap})" if cap else "")
                + "."
            )


def dataset_features(backbone: Backbone, dataset: ImageDataset, **extract_kw) -> FeatureStore:
    """The feature store of one loaded dataset (a reference set, a corrupted copy), extracted once.

    ``extract_kw`` go to :func:`probekit.extract.features` unchanged: the shift study asks for its
    own sites, pools and layers; :func:`split_features` is the same for every split of an id.
    """
    return features(backbone, dataset, **extract_kw)


def split_features(
    backbone: Backbone,
    dataset_id: str,
    *,
    splits: Sequence[str] = ("train", "test"),
    max_per_class: int | None = None,
    seed: int = 0,
    view: str = "eval",
    **extract_kw,
) -> SplitFeatures:
    """Feature stores of ``dataset_id`` for each split (extracted once, then reused).

    ``max_per_class`` ``0`` or ``None``: every image. ``view``: ``"eval"`` (the model's own eval
    transform for every split) or ``"paper1"`` (paper 1's train transform for ``train``, its
    resize and centre crop for the others; see :mod:`probekit.data.paper1_views`). Raises
    :class:`TooFewImagesError` before extracting when a split cannot train or score a probe.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {list(VIEWS)}")
    kw = extraction_kwargs(**extract_kw)
    cap = per_class_cap(max_per_class)
    loaded = {split: load_dataset(dataset_id, split=split, seed=seed, max_per_class=cap) for split in splits}
    check_classes(loaded, dataset_id)
    stores, skipped, provenance = {}, 0, {}
    classes = list(next(iter(loaded.values())).classes)
    for split, ds in loaded.items():
        skipped += int(ds.skipped)
        provenance.setdefault("splits", {})[split] = len(ds)
        provenance.setdefault("source", ds.provenance)
        if view == "paper1":
            from .data.paper1_views import paper1_backbone, paper1_view

            stores[split] = features(
                paper1_backbone(backbone),
                paper1_view(ds, backbone.image_size, train=split == "train", seed=seed),
                **kw,
            )
        else:
            stores[split] = features(backbone, ds, **kw)
    provenance["skipped"] = skipped
    provenance["view"] = view
    return SplitFeatures(dataset=dataset_id, classes=classes, stores=stores, provenance=provenance)
