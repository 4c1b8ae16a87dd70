"""Domain classifier: closed-form CV equals refits; chance for one distribution, high under shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from probekit.shift import domain_classifier, proxy_a_distance
from probekit.shift.domain import cv_correct, stratified_folds


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm].astype(np.float64), y[perm]


def test_closed_form_cv_equals_explicit_refits(digits):
    x, labels = digits
    a, b = x[labels < 5][:90], x[labels >= 5][:90]
    ridge, folds, seed = 0.05, 5, 4
    got = cv_correct(torch.from_numpy(a), torch.from_numpy(b), folds=folds, ridge=ridge, seed=seed)
    z = np.r_[a, b]
    z = z - z.mean(0)
    std = z.std(0, ddof=1)
    z = z / np.where(std > 0, std, 1.0)
    feats = np.c_[z / np.sqrt(z.shape[1]), np.ones(len(z))]  # kernel Z Zᵀ/d + 1
    y = np.r_[-np.ones(90), np.ones(90)]
    fold_of = stratified_folds(y, folds, np.random.default_rng(seed))
    pred = np.empty(len(y))
    for f in range(folds):
        tr = fold_of != f
        w = np.linalg.solve(
            feats[tr].T @ feats[tr] + ridge * len(y) * np.eye(feats.shape[1]), feats[tr].T @ y[tr]
        )
        pred[~tr] = feats[~tr] @ w
    np.testing.assert_array_equal(got, (np.sign(pred) == y).astype(float))


def test_chance_for_one_distribution_high_under_shift(digits):
    x, labels = digits
    same = domain_classifier(x[:400], x[400:800])
    assert abs(same.accuracy - 0.5) < 0.1
    assert abs(same.proxy_a_distance) < 0.4
    content = domain_classifier(x[labels < 5][:300], x[labels >= 5][:300])
    assert content.accuracy > 0.8
    brighter = domain_classifier(x[:400], x[400:800] + 2.0)
    assert brighter.accuracy > 0.95
    assert brighter.proxy_a_distance == pytest.approx(proxy_a_distance(brighter.accuracy))


def test_balanced_by_subsampling_and_deterministic(digits):
    x, _ = digits
    r1 = domain_classifier(x[:300], x[300:800] + 1.0, seed=7)
    r2 = domain_classifier(x[:300], x[300:800] + 1.0, seed=7)
    assert r1.n_per_side == 300 and len(r1.correct) == 600
    assert r1.accuracy == r2.accuracy and np.array_equal(r1.correct, r2.correct)


def test_proxy_a_distance_formula():
    assert proxy_a_distance(0.5) == 0.0
    assert proxy_a_distance(1.0) == 2.0
    assert proxy_a_distance(0.75) == pytest.approx(2.0 * (1.0 - 2.0 * 0.25))
