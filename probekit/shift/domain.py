"""Domain-classifier accuracy and the proxy A-distance: how well a linear model tells two sets apart.

A linear classifier learns "reference (−1) or target (+1)" from features; its cross-validated
accuracy is ~0.5 for one distribution and → 1 as the sets separate. The proxy A-distance
(Ben-David et al., "Analysis of representations for domain adaptation", NeurIPS 2006; Ganin et
al., JMLR 2016) is ``d_A = 2 (1 − 2ε)`` with ε the cross-validated error, i.e. ``2 (2·acc − 1)``
(reported unclipped: slightly negative values mean "indistinguishable").

Classifier: ridge regression on ±1 labels (a least-squares linear classifier), features
z-scored over the pooled sample (label-free), a regularised intercept, penalty
``ridge · n_total`` (default 0.01: on digits and on synthetic 1536-d features it separated the
same shifts as ridge 0.1–1 and as sklearn ``LogisticRegression``, with at least their power).
Cross-validation is exact and closed-form: with the kernel ``K = Z Zᵀ / d + 1`` and ``P = (K + λI)⁻¹``, the held-out residuals of fold F are
``(P_FF)⁻¹ (P y)_F`` (An, Liu and Venkatesh, "Fast cross-validation algorithms for least squares
support vector machine and kernel ridge regression", Pattern Recognition 2007). One Cholesky
inverse of an N × N matrix then replaces k refits (~10 ms at N = 600 on one core, against ~40 ms
for sklearn ``LogisticRegression`` with 5 refits on 64-d features).

Both sets are balanced by subsampling the larger one (seeded), so chance level is exactly 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probekit.shift.backend import DEFAULT_DEVICE, as_f64, check_pair
from probekit.shift.errors import ShiftInputError


@dataclass(frozen=True)
class DomainResult:
    """Cross-validated domain-classifier outcome; ``correct`` is per row, reference rows first."""

    accuracy: float
    proxy_a_distance: float
    correct: np.ndarray  # (n1 + n2,) float: 1 right, 0 wrong, 0.5 tie
    n_per_side: int


def proxy_a_distance(accuracy: float | np.ndarray) -> float | np.ndarray:
    """``d_A = 2 (1 − 2ε)`` with ε = 1 − accuracy (Ben-David et al. 2006)."""
    return 2.0 * (2.0 * accuracy - 1.0)


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per row, each class spread evenly over ``folds`` folds in a seeded random order."""
    out = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out[rng.permutation(idx)] = np.arange(len(idx)) % folds
    return out


def cv_correct(
    x: torch.Tensor, y: torch.Tensor, *, folds: int = 5, ridge: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Per-row held-out correctness (1, 0, or 0.5 for a tie) of the ridge domain classifier.

    ``x`` (reference) and ``y`` (target) are float64 tensors on one device; rows of ``x`` are
    labelled −1, rows of ``y`` +1. See the module docstring for the closed-form k-fold CV.
    """
    n1, n2 = x.shape[0], y.shape[0]
    n = n1 + n2
    if folds < 2 or folds > min(n1, n2):
        raise ShiftInputError(f"folds must be in [2, {min(n1, n2)}] for {n1} + {n2} rows, got {folds}")
    z = torch.cat([x, y])
    z = z - z.mean(0, keepdim=True)
    std = z.std(0, keepdim=True)
    z = z / torch.where(std > 0, std, torch.ones_like(std))
    labels = np.r_[-np.ones(n1), np.ones(n2)]
    t = torch.from_numpy(labels).to(z)
    zf = z.float()  # the kernel in float32 (half the cost); the solve stays in float64
    k = (zf @ zf.T).double() / z.shape[1] + 1.0
    k.diagonal().add_(ridge * n)
    p = torch.cholesky_inverse(torch.linalg.cholesky(k))
    alpha = p @ t
    fold_of = stratified_folds(labels, folds, np.random.default_rng(seed))
    pred = torch.empty_like(t)
    for f in range(folds):
        idx = torch.from_numpy(np.flatnonzero(fold_of == f)).to(z.device)
        resid = torch.linalg.solve(p[idx][:, idx], alpha[idx])
        pred[idx] = t[idx] - resid
    s = torch.sign(pred).cpu().numpy()
    return np.where(s == 0, 0.5, (s == labels).astype(np.float64))


def domain_classifier(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    folds: int = 5,
    ridge: float = 0.01,
    seed: int = 0,
    device: str | torch.device | None = DEFAULT_DEVICE,
) -> DomainResult:
    """Cross-validated accuracy of a linear reference-vs-target classifier, and the proxy A-distance.

    The larger set is subsampled (seeded) to the size of the smaller. ``ridge`` scales the
    penalty λ = ridge · (rows in total) on z-scored features; ``folds``-fold stratified CV.
    """
    xt, yt = as_f64(x, device, "x"), as_f64(y, device, "y")
    check_pair(xt, yt, min_rows=folds)
    m = min(xt.shape[0], yt.shape[0])
    rng = np.random.default_rng(seed)
    if xt.shape[0] > m:
        xt = xt[torch.from_numpy(np.sort(rng.choice(xt.shape[0], m, replace=False))).to(xt.device)]
    if yt.shape[0] > m:
        yt = yt[torch.from_numpy(np.sort(rng.choice(yt.shape[0], m, replace=False))).to(yt.device)]
    correct = cv_correct(xt, yt, folds=folds, ridge=ridge, seed=seed)
    acc = float(correct.mean())
    return DomainResult(acc, float(proxy_a_distance(acc)), correct, m)
