"""Unbiased MMD²: brute-force agreement, blockwise sums, known behaviour under a mean shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist
from sklearn.datasets import load_digits

from probekit.shift import ShiftInputError, median_bandwidth, mmd2, reference_bandwidth
from probekit.shift.gram import PairGram
from probekit.shift.mmd import mmd2_resamples


def brute_mmd2(x: np.ndarray, y: np.ndarray, kernel) -> float:
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


def rbf(sigma: float):
    return lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * sigma**2))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    x = load_digits().data.astype(np.float64)
    return x[np.random.default_rng(0).permutation(len(x))]


def test_matches_brute_force_and_blocks(digits):
    x, y = digits[:200], digits[200:350] + 0.5
    sigma = float(np.median(pdist(x)))  # the reference's own median distance
    expected = brute_mmd2(x, y, rbf(sigma))
    assert mmd2(x, y) == pytest.approx(expected, rel=1e-9)  # the default bandwidth reproduces sigma
    assert mmd2(x, y, bandwidth=sigma, block_size=37) == pytest.approx(expected, rel=1e-9)
    assert mmd2(x, y, kernel="linear") == pytest.approx(brute_mmd2(x, y, lambda a, b: a @ b.T), rel=1e-9)


def test_median_bandwidth_is_the_pooled_median_distance(digits):
    x, y = torch.from_numpy(digits[:100]), torch.from_numpy(digits[100:220])
    expected = np.median(pdist(digits[:220]))
    assert median_bandwidth(x, y) == pytest.approx(expected, rel=1e-12)
    assert median_bandwidth(x, y, gram=PairGram.of(x, y)) == pytest.approx(expected, rel=1e-9)


def test_reference_bandwidth_is_the_reference_median_distance_and_ignores_the_target(digits):
    x = digits[:300]
    assert reference_bandwidth(x) == pytest.approx(np.median(pdist(x)), rel=1e-12)
    sub = np.sort(np.random.default_rng(0).choice(300, 100, replace=False))
    assert reference_bandwidth(x, max_points=100) == pytest.approx(np.median(pdist(x[sub])), rel=1e-6)
    # the pooled heuristic widens with the shift; the reference rule does not move
    near, far = digits[300:500] + 0.5, digits[300:500] * 3.0
    pooled = [median_bandwidth(torch.from_numpy(x), torch.from_numpy(y)) for y in (near, far)]
    assert pooled[1] > 1.5 * pooled[0]
    sigma = reference_bandwidth(x)
    assert mmd2(x, near) == pytest.approx(mmd2(x, near, bandwidth=sigma), rel=1e-12)
    assert mmd2(x, far) == pytest.approx(mmd2(x, far, bandwidth=sigma), rel=1e-12)
    with pytest.raises(ShiftInputError, match="at least 2"):
        reference_bandwidth(x[:1])


def test_self_is_near_zero_and_grows_with_mean_shift(digits):
    x, y = digits[:500], digits[500:1000]  # two halves of one distribution
    for kernel in ("rbf", "linear"):
        sigma = median_bandwidth(torch.from_numpy(x), torch.from_numpy(x))
        values = [mmd2(x, y + s, kernel=kernel, bandwidth=sigma) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
        assert abs(mmd2(x, x, kernel=kernel, bandwidth=sigma)) < 0.05 * values[-1]
        assert abs(values[0]) < 0.05 * values[-1]
        assert np.all(np.diff(values) > 0), (kernel, values)


def test_resample_weights_skip_duplicate_pairs(digits):
    """A resample's MMD² is the U-statistic over distinct original rows: duplicates are no pairs."""
    x, y = digits[:80], digits[80:170] + 0.3
    rng = np.random.default_rng(3)
    i1, i2 = rng.integers(0, 80, 80), rng.integers(0, 90, 90)
    w1 = torch.from_numpy(np.bincount(i1, minlength=80)[None].astype(np.float64))
    w2 = torch.from_numpy(np.bincount(i2, minlength=90)[None].astype(np.float64))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def u_stat(k: np.ndarray, a: np.ndarray, b: np.ndarray, same: bool) -> float:
        kk = k[np.ix_(a, b)]
        if not same:
            return kk.mean()
        off = a[:, None] != b[None, :]
        return kk[off].sum() / off.sum()

    for kernel, kfun in (("rbf", rbf(20.0)), ("linear", lambda a, b: a @ b.T)):
        z = np.r_[x, y]
        z = z - z.mean(0)  # the linear kernel is taken on pooled-centred rows (no effect on rbf)
        k = kfun(z, z)
        j2 = i2 + 80
        expected = u_stat(k, i1, i1, True) + u_stat(k, j2, j2, True) - 2.0 * u_stat(k, i1, j2, False)
        got = mmd2_resamples(xt, yt, w1, w2, kernel=kernel, bandwidth=20.0)[0]
        assert got == pytest.approx(expected, rel=1e-9), kernel
        if kernel == "rbf":
            via_gram = mmd2_resamples(xt, yt, w1, w2, bandwidth=20.0, gram=PairGram.of(xt, yt))[0]
            blocks = mmd2_resamples(xt, yt, w1, w2, bandwidth=20.0, block_size=16)[0]
            assert via_gram == pytest.approx(expected, rel=1e-9)
            assert blocks == pytest.approx(expected, rel=1e-9)


def test_unknown_kernel_is_a_clear_error(digits):
    with pytest.raises(ShiftInputError, match="kernel"):
        mmd2(digits[:10], digits[10:20], kernel="poly")
