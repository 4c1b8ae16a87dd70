"""From a model and dataset ids to feature stores: where every analysis gets its features.

Each call loads a dataset split from the registry and returns its content-addressed feature
store, extracting only what is not on disk yet. Every notebook goes through here with the same
sites and pools, so a suite extracts each (model, dataset, split) once and the other notebooks
reuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import ImageDataset, load_dataset
from .extract import features
from .models import Backbone
from .sites import DEFAULT_POOLS
from .store import FeatureStore


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


def split_features(
    backbone: Backbone,
    dataset_id: str,
    *,
    splits: Sequence[str] = ("train", "test"),
    max_per_class: int | None = None,
    seed: int = 0,
    **extract_kw,
) -> SplitFeatures:
    """Feature stores of ``dataset_id`` for each split (extracted once, then reused)."""
    kw = extraction_kwargs(**extract_kw)
    stores, skipped, classes, provenance = {}, 0, None, {}
    for split in splits:
        ds: ImageDataset = load_dataset(dataset_id, split=split, seed=seed, max_per_class=max_per_class)
        classes = classes or list(ds.classes)
        skipped += int(ds.skipped)
        provenance.setdefault("splits", {})[split] = len(ds)
        provenance.setdefault("source", ds.provenance)
        stores[split] = features(backbone, ds, **kw)
    provenance["skipped"] = skipped
    return SplitFeatures(dataset=dataset_id, classes=classes or [], stores=stores, provenance=provenance)
