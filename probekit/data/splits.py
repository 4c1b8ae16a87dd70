"""Deterministic stratified splits with a per-class cap, and the rule written down for provenance.

Rules (all per class, from one seed):

* the dataset has official train / val / test: kept as they are;
* official train / test only: test kept; ``val`` is a stratified 20 % of the official train,
  ``train`` the other 80 %;
* no official split: stratified 60 / 20 / 20 train / val / test (a class with 2 samples gives
  one to test, a class with 1 sample stays in train);
* ``all``: every sample.

Within each class the members are shuffled once with ``default_rng([seed, class])``; the split
cuts that order, and the per-class cap ``max_per_class`` keeps the first usable members of it.
So split membership never depends on the cap, a smaller cap is a subset of a larger one, and a
broken file is replaced by the next member of the same class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SPLITS = ("train", "val", "test", "all")
VAL_FROM_TRAIN = 0.2
UNOFFICIAL_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def split_rule(official_split: np.ndarray | None) -> str:
    """One sentence naming the rule that produced the splits of a dataset."""
    kinds = set(np.unique(official_split).tolist()) if official_split is not None else set()
    if {"train", "val", "test"} <= kinds:
        return "official train/val/test"
    if {"train", "test"} <= kinds:
        return f"official test; val = stratified {VAL_FROM_TRAIN:.0%} of official train (seeded)"
    return "stratified 60/20/20 train/val/test per class (seeded)"


def _shuffled(members: np.ndarray, seed: int, cls: int) -> np.ndarray:
    return np.random.default_rng([seed, cls]).permutation(members)


def _cut_unofficial(order: np.ndarray, split: str) -> np.ndarray:
    n = len(order)
    n_test = max(1, round(UNOFFICIAL_FRACTIONS["test"] * n)) if n >= 2 else 0
    n_val = max(1, round(UNOFFICIAL_FRACTIONS["val"] * n)) if n >= 3 else 0
    if split == "test":
        return order[:n_test]
    if split == "val":
        return order[n_test : n_test + n_val]
    return order[n_test + n_val :]


def _cut_from_train(order: np.ndarray, split: str) -> np.ndarray:
    n = len(order)
    n_val = min(max(1, round(VAL_FROM_TRAIN * n)), n - 1) if n >= 2 else 0
    return order[:n_val] if split == "val" else order[n_val:]


def split_candidates(
    labels: np.ndarray, official_split: np.ndarray | None, split: str, seed: int
) -> list[np.ndarray]:
    """Per class (index = label), the members of ``split`` in their seeded order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    labels = np.asarray(labels)
    kinds = set(np.unique(official_split).tolist()) if official_split is not None else set()
    has_val = {"train", "val", "test"} <= kinds
    has_test = {"train", "test"} <= kinds
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    out = []
    for cls in range(n_classes):
        in_class = labels == cls
        if split == "all":
            out.append(_shuffled(np.flatnonzero(in_class), seed, cls))
        elif has_val or (has_test and split == "test"):
            out.append(_shuffled(np.flatnonzero(in_class & (official_split == split)), seed, cls))
        elif has_test:
            order = _shuffled(np.flatnonzero(in_class & (official_split == "train")), seed, cls)
            out.append(_cut_from_train(order, split))
        else:
            out.append(_cut_unofficial(_shuffled(np.flatnonzero(in_class), seed, cls), split))
    return out


def select(
    candidates: list[np.ndarray],
    max_per_class: int | None,
    is_broken: Callable[[int], bool] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Take up to ``max_per_class`` usable members of each class, in candidate order.

    Returns the chosen sample indices (sorted: the dataset's order) and the indices skipped as
    broken. ``is_broken`` is only asked about members that would otherwise be taken.
    """
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive integer or None, got {max_per_class}")
    chosen: list[int] = []
    broken: list[int] = []
    for members in candidates:
        taken = 0
        for idx in members.tolist():
            if max_per_class is not None and taken >= max_per_class:
                break
            if is_broken is not None and is_broken(idx):
                broken.append(idx)
                continue
            chosen.append(idx)
            taken += 1
    return np.array(sorted(chosen), dtype=np.int64), sorted(broken)
