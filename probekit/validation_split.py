"""Stratified splits of label arrays: the validation split every probe selects its settings on.

``stratified_split(labels, fraction, seed)`` returns ``(keep_idx, held_idx)``: index arrays into
``labels`` with about ``fraction`` of every class held out. Deterministic for a given seed;
a class with at least two samples always keeps one and holds one out, so every class is seen
on both sides. Both index arrays are sorted.
"""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``labels`` into ``(train_idx, val_idx)``, ``fraction`` of each class to val.

    Per class of ``n`` samples, ``round(fraction * n)`` go to validation, clipped to ``[1, n - 1]``
    when ``n >= 2`` (a class with one sample stays in train). ``fraction`` must lie in (0, 1).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"stratified_split needs a 1-d label array, got shape {labels.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"stratified_split: fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        if n < 2:
            continue
        k = int(np.clip(round(fraction * n), 1, n - 1))
        held.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val.astype(np.int64)
