"""Stratified splits on the real label array of scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from probekit.validation_split import stratified_split


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits().target


def test_partition_and_class_proportions(digits_labels: np.ndarray) -> None:
    tr, va = stratified_split(digits_labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(digits_labels)))
    for c in np.unique(digits_labels):
        n = np.sum(digits_labels == c)
        assert abs(np.sum(digits_labels[va] == c) - 0.2 * n) <= 1


def test_deterministic_and_seed_dependent(digits_labels: np.ndarray) -> None:
    a = stratified_split(digits_labels, 0.3, seed=1)
    b = stratified_split(digits_labels, 0.3, seed=1)
    c = stratified_split(digits_labels, 0.3, seed=2)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_tiny_classes_seen_on_both_sides() -> None:
    y = np.array([0, 0, 1, 1, 1, 2])
    tr, va = stratified_split(y, 0.01, seed=0)
    assert set(y[va]) == {0, 1}
    assert set(y[tr]) == {0, 1, 2}


def test_bad_fraction_is_refused(digits_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(digits_labels, 1.0)
