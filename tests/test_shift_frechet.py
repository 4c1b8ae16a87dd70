"""Fréchet distance: known answers, agreement with scipy's sqrtm route, resampling weights, warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits

from probekit.shift import (
    ShiftInputError,
    SmallSampleWarning,
    frechet_distance,
    frechet_from_stats,
    gaussian_fit,
)
from probekit.shift.frechet import _fd_covariance, _fd_gram, frechet_resamples
from probekit.shift.gram import PairGram


def fd_sqrtm(x: np.ndarray, y: np.ndarray) -> float:
    """The pytorch-fid formula with scipy.linalg.sqrtm, as an independent reference."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular products (n < d) are expected here
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


@pytest.fixture(scope="module")
def photo_patches() -> tuple[np.ndarray, np.ndarray]:
    """Real image statistics: 8×8×3 = 192-d random crops of two scikit-image photos."""
    from skimage import data

    rng = np.random.default_rng(0)

    def crops(img: np.ndarray, k: int) -> np.ndarray:
        h, w = img.shape[:2]
        r, c = rng.integers(0, h - 8, k), rng.integers(0, w - 8, k)
        return np.stack([img[i : i + 8, j : j + 8].ravel() for i, j in zip(r, c)]).astype(np.float64) / 255

    return crops(data.astronaut(), 150), crops(data.coffee(), 120)


def test_identical_sets_give_zero(digits):
    x = digits[0][:400]
    assert abs(frechet_distance(x, x)) < 1e-8 * np.trace(np.cov(x, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        small = x[:40]  # n < d: the Gram route
        assert abs(frechet_distance(small, small)) < 1e-8 * np.trace(np.cov(small, rowvar=False))


def test_closed_form_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_closed_form_non_commuting_2x2():
    """For 2×2 PSD M with real eigenvalues, Tr √M = √(Tr M + 2 √det M)."""
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([1.0, 2.0]), np.array([-1.0, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    assert frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_samples_of_known_gaussians_converge_to_closed_form():
    rng = np.random.default_rng(1)
    d, n = 4, 40_000
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a1 @ a1.T + np.eye(d), a2 @ a2.T + np.eye(d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    exact = frechet_from_stats(mu1, s1, mu2, s2)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=0.03)


def test_agrees_with_sqrtm_on_real_features(digits, photo_patches):
    x, labels = digits
    ours, ref = frechet_distance(x[labels < 5], x[labels >= 5]), fd_sqrtm(x[labels < 5], x[labels >= 5])
    assert ours == pytest.approx(ref, rel=1e-6)  # covariance route, n > d
    a, b = photo_patches
    with pytest.warns(SmallSampleWarning):
        ours = frechet_distance(a, b)  # Gram route, n < d = 192
    assert ours == pytest.approx(fd_sqrtm(a, b), rel=1e-6)


def _weights(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, np.ndarray]:
    idx = rng.integers(0, n, n)
    w = np.stack([np.ones(n), np.bincount(idx, minlength=n)]).astype(np.float64)
    return torch.from_numpy(w), idx


def test_gram_and_covariance_routes_agree_with_weights(digits, photo_patches):
    """Row 0 (all ones) is the point estimate; row 1 (multiplicities) equals FD of the resample."""
    rng = np.random.default_rng(2)
    x, labels = digits
    for a, b in ((x[labels < 5][:150], x[labels >= 5][:120]), photo_patches):  # n > d, then n < d
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        (w1, i1), (w2, i2) = _weights(rng, len(a)), _weights(rng, len(b))
        gram = _fd_gram(PairGram.of(at, bt), w1, w2)
        explicit = fd_sqrtm(a[i1], b[i2])
        assert gram[0] == pytest.approx(fd_sqrtm(a, b), rel=1e-6)
        assert gram[1] == pytest.approx(explicit, rel=1e-5)  # resamples solve in float32
        if len(a) > a.shape[1]:  # the covariance route is exact only when n > d
            cov = _fd_covariance(at, bt, w1, w2)
            assert cov[0] == pytest.approx(gram[0], rel=1e-6)
            assert cov[1] == pytest.approx(explicit, rel=1e-6)
        assert frechet_resamples(at, bt, w1, w2)[0] == pytest.approx(gram[0], rel=1e-6)


def test_gaussian_fit_matches_numpy(digits):
    mu, sigma = gaussian_fit(digits[0][:300])
    np.testing.assert_allclose(mu, digits[0][:300].mean(0))
    np.testing.assert_allclose(sigma, np.cov(digits[0][:300], rowvar=False), atol=1e-10)


def test_small_sample_warning_only_when_n_below_d(digits):
    x = digits[0]
    with pytest.warns(SmallSampleWarning, match="n < d"):
        frechet_distance(x[:30], x[30:60])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallSampleWarning)
        frechet_distance(x[:100], x[100:200])


def test_bad_inputs_raise_clear_errors(digits):
    x = digits[0]
    with pytest.raises(ShiftInputError, match="different dimensions"):
        frechet_distance(x[:100], x[:100, :10])
    with pytest.raises(ShiftInputError, match="2-D"):
        frechet_distance(x[:100].reshape(100, 8, 8), x[:100])
    with pytest.raises(ShiftInputError, match="NaN"):
        frechet_distance(np.full((100, 64), np.nan), x[:100])
