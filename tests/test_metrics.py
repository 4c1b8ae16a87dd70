"""Bootstrap intervals: the count-matrix route gives exactly what indexing every resample gives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from probekit import metrics
from probekit.metrics import (
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    paired_bootstrap_diff,
    resample_stats,
    resampled,
)
from probekit.shift.backend import bootstrap_counts


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test labels of sklearn's digits and two real probes' predictions (pixels, two penalties)."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    strong = LogisticRegression(C=1e-3, max_iter=2000).fit(x[:400], y[:400]).predict(x[400:])
    weak = LogisticRegression(C=1e-5, max_iter=2000).fit(x[:400], y[:400]).predict(x[400:])
    return y[400:], strong, weak


def indexed(fn, y, pred, n_boot: int, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    return resampled(fn, y, pred, idx)


@pytest.mark.parametrize("fn", [accuracy, balanced_accuracy])
@pytest.mark.parametrize(("rows", "n_boot", "seed"), [(1397, 1000, 0), (200, 333, 7), (9, 500, 1)])
def test_counts_give_the_indexed_resamples_exactly(predictions, fn, rows, n_boot, seed) -> None:
    y, pred, weak = predictions
    y, pred = y[:rows], pred[:rows]
    got = resample_stats(fn, y, pred, n_boot, seed)
    assert np.array_equal(got, indexed(fn, y, pred, n_boot, seed))  # every resample, to the bit
    if rows == 9:  # few rows: many resamples miss a class, which balanced accuracy leaves out
        assert len(np.unique(y)) > 5
    assert got.std() > 0
    _, low, high = bootstrap_ci(y, pred, fn, n_boot=n_boot, seed=seed)
    alpha = (1 - 0.95) / 2
    assert (low, high) == tuple(np.quantile(indexed(fn, y, pred, n_boot, seed), [alpha, 1 - alpha]))


def test_paired_difference_resamples_both_probes_alike(predictions) -> None:
    y, strong, weak = predictions
    value, low, high = paired_bootstrap_diff(y, strong, weak, "balanced_accuracy", n_boot=400, seed=3)
    diffs = indexed(balanced_accuracy, y, strong, 400, 3) - indexed(balanced_accuracy, y, weak, 400, 3)
    assert value == pytest.approx(balanced_accuracy(y, strong) - balanced_accuracy(y, weak), abs=1e-15)
    assert (low, high) == tuple(np.quantile(diffs, [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2]))
    assert low > 0  # C = 1e-3 beats 1e-5 on digits: the paired interval sees it


def test_large_test_sets_and_other_metrics_index_the_resamples(predictions, monkeypatch) -> None:
    y, pred, _ = predictions
    small = resample_stats(accuracy, y, pred, 100, 0)
    monkeypatch.setattr(metrics, "COUNT_CELLS", 10 * len(y))  # 100 resamples no longer fit as counts
    assert np.array_equal(resample_stats(accuracy, y, pred, 100, 0), small)

    def error_rate(t: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(t != p))

    np.testing.assert_allclose(resample_stats(error_rate, y, pred, 100, 0), 1 - small, atol=1e-15)


def test_no_seed_draws_afresh_each_call(predictions) -> None:
    y, pred, _ = predictions
    a, b = (resample_stats(accuracy, y, pred, 200, None) for _ in range(2))
    assert not np.array_equal(a, b)  # nothing cached: two calls, two sets of draws
    assert abs(a.mean() - accuracy(y, pred)) < 0.01


def test_counts_are_shared_and_read_only() -> None:
    a = metrics.resample_counts(50, 20, 0)
    assert a is metrics.resample_counts(50, 20, 0)
    assert not a.flags.writeable
    assert (a.sum(1) == 50).all()


@pytest.mark.parametrize("n, n_boot", [(7, 3), (50, 130), (300, 65)])
def test_row_counts_count_every_draw(n: int, n_boot: int) -> None:
    """The counts the probes' and the shift table's intervals share: each draw counted once, per resample."""
    idx = np.random.default_rng(n).integers(0, n, size=(n_boot, n))
    want = np.zeros((n_boot, n))
    for b, row in enumerate(idx):
        for i in row:
            want[b, i] += 1
    for dtype in (np.float32, np.float64):
        got = metrics.row_counts(idx, n, dtype)
        assert got.dtype == dtype and np.array_equal(got, want)
    assert np.array_equal(bootstrap_counts(n, n_boot, np.random.default_rng(n)), want)
