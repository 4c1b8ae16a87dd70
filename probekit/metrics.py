"""Classification metrics with bootstrap confidence intervals, shared by every probe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]

# Most (resample x test row) cells kept as a count matrix (float32: 256 MB); above it the resamples
# are scored by indexing, which gives the same statistics more slowly (resample_stats)
COUNT_CELLS = 2**26


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (paper 2's metric)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in classes]
    return float(np.mean(recalls))


METRICS: dict[str, Metric] = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy}

# Two validation scores closer than this are a tie. Balanced accuracy sums per-class recalls in
# floating point, so scores that are equal as fractions can differ in the last bit, and an
# ``argmax`` would then break the tie by rounding instead of by the stated rule.
SCORE_TIE = 1e-9


def first_best(scores: Sequence[float]) -> int:
    """Index of the first score within :data:`SCORE_TIE` of the best (the first of tied maxima)."""
    s = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(s >= np.nanmax(s) - SCORE_TIE))


def resampled(fn: Metric, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``fn`` on every bootstrap resample ``idx`` (``(n_boot, n)`` row indices), vectorised for ours.

    Balanced accuracy is counted with one ``bincount`` over (resample, class) cells; a class a
    resample does not draw is left out of that resample's mean, as in :func:`balanced_accuracy`.
    """
    if fn is accuracy:
        return (y_true[idx] == y_pred[idx]).mean(axis=1)
    if fn is balanced_accuracy:
        classes, yt = np.unique(y_true, return_inverse=True)
        k, n_boot = len(classes), len(idx)
        correct = (y_true == y_pred).astype(np.float64)
        cell = (np.arange(n_boot)[:, None] * k + yt[idx]).ravel()
        tot = np.bincount(cell, minlength=n_boot * k).reshape(n_boot, k)
        hit = np.bincount(cell, weights=correct[idx].ravel(), minlength=n_boot * k).reshape(n_boot, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(tot > 0, hit / tot, np.nan), axis=1)
    return np.array([fn(y_true[i], y_pred[i]) for i in idx])


@lru_cache(maxsize=2)
def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` float32 multiplicities of the rows in each bootstrap resample: the draws
    ``default_rng(seed).integers(0, n, size=(n_boot, n))``, counted per resample. Read-only and
    cached: every probe scored on the same test set shares them (the draws depend on ``n`` alone).
    """
    counts = row_counts(np.random.default_rng(seed).integers(0, n, size=(n_boot, n)), n, np.float32)
    counts.flags.writeable = False
    return counts


def row_counts(idx: np.ndarray, n: int, dtype: type = np.float32) -> np.ndarray:
    """``(len(idx), n)`` multiplicities: how often each of ``n`` rows is drawn in each row of ``idx``
    (resample draws, ``(n_boot, k)`` indices in ``[0, n)``)."""
    counts = np.empty((len(idx), n), dtype=dtype)
    for start in range(0, len(idx), 64):  # 64 resamples at a time: the flat cell index stays small
        part = idx[start : start + 64]
        cell = (np.arange(len(part))[:, None] * n + part).ravel()
        counts[start : start + len(part)] = np.bincount(cell, minlength=len(part) * n).reshape(len(part), n)
    return counts


def resample_stats(
    fn: Metric, y_true: np.ndarray, y_pred: np.ndarray, n_boot: int, seed: int | None
) -> np.ndarray:
    """``fn`` on the ``n_boot`` bootstrap resamples of seed ``seed`` (the draws of :func:`resample_counts`).

    Accuracy and balanced accuracy are sums over rows, so a resample's score is a product of its
    row counts with the per-row hits (and, for balanced accuracy, the per-class indicators): one
    matrix product for all resamples, ~25x faster than indexing every resample (``benchmarks/
    bootstrap.py``), with the same numbers: counts, hits and their sums are integers below 2^24,
    exact in float32. Other metrics, test sets too large for :data:`COUNT_CELLS` and ``seed=None``
    (fresh draws each call, nothing to cache) index the resamples (:func:`resampled`).
    """
    n = len(y_true)
    counted = fn in (accuracy, balanced_accuracy) and n * n_boot <= COUNT_CELLS and n < 2**24
    if not counted or seed is None:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        return resampled(fn, y_true, y_pred, idx)
    counts = resample_counts(n, n_boot, seed)
    correct = (y_true == y_pred).astype(np.float32)
    if fn is accuracy:
        return (counts @ correct).astype(np.float64) / n
    classes, yt = np.unique(y_true, return_inverse=True)
    onehot = np.zeros((n, len(classes)), dtype=np.float32)
    onehot[np.arange(n), yt] = 1.0
    tot = (counts @ onehot).astype(np.float64)
    hit = (counts @ (onehot * correct[:, None])).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(tot > 0, hit / tot, np.nan), axis=1)


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metric: Metric | str = accuracy,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap interval of ``metric`` over test samples.

    Resamples test examples with replacement ``n_boot`` times (:func:`resample_stats`). Returns
    ``(value, ci_low, ci_high)``.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one test sample")
    value = fn(y_true, y_pred)
    stats = resample_stats(fn, y_true, y_pred, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return value, float(low), float(high)


def paired_bootstrap_diff(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: Metric | str = accuracy,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``metric(a) - metric(b)`` on the same test samples, with a paired percentile bootstrap interval.

    Both predictions are scored on the same resampled test sets, so the interval reflects the
    difference between the two probes, not the sampling noise each has alone.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    value = fn(y_true, pred_a) - fn(y_true, pred_b)
    stats = resample_stats(fn, y_true, pred_a, n_boot, seed) - resample_stats(
        fn, y_true, pred_b, n_boot, seed
    )
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(value), float(low), float(high)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Spearman's rho of ``x`` and ``y`` with a percentile bootstrap interval over points.

    The interval does not depend on the order the points are given in. Returns ``(rho, ci_low,
    ci_high)``; NaN where it is undefined (fewer than 3 points or a
    constant variable). A resample that draws a constant variable counts as rho = 0 (dropping
    it would condition the interval on the informative resamples).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 3:
        return float("nan"), float("nan"), float("nan")
    # resample the points in one canonical order, so that callers listing the same points in another
    # order (notebook 02 per dataset, notebook 05 per table row) get the same interval
    order = np.lexsort((ys, xs))
    xs, ys = xs[order], ys[order]
    rho = _spearman(xs[None], ys[None])[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(xs), size=(n_boot, len(xs)))
    boots = _spearman(xs[idx], ys[idx])
    boots = np.where(np.isfinite(boots), boots, 0.0)  # a resample with a constant variable has no trend
    if not np.isfinite(rho) or len(boots) == 0:
        return float(rho), float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(rho), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def _spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rho (average ranks for ties) of two (n_rows, n) arrays."""
    from scipy.stats import rankdata

    rx, ry = rankdata(xs, axis=1), rankdata(ys, axis=1)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / np.where(denom > 0, denom, 1), np.nan)


def spearman_permutation_p(
    x: Sequence[float], y: Sequence[float], *, n_perm: int = 20000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of Spearman's rho: exact over all orderings for up to 8 points."""
    import itertools
    import math

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 3:
        return float("nan")
    observed = abs(_spearman(xs[None], ys[None])[0])
    if not np.isfinite(observed):
        return 1.0
    if math.factorial(len(xs)) <= 40320:
        perms = np.array(list(itertools.permutations(range(len(ys)))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_perm, len(ys))), axis=1)
    null = np.abs(np.nan_to_num(_spearman(np.broadcast_to(xs, perms.shape), ys[perms]), nan=0.0))
    return float(np.mean(null >= observed - 1e-12))
