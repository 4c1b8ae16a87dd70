"""Unbiased squared maximum mean discrepancy (MMD²) with an RBF or a linear kernel, blockwise.

    MMD²_u = 1/(n₁(n₁−1)) Σ_{i≠j} k(xᵢ,xⱼ) + 1/(n₂(n₂−1)) Σ_{i≠j} k(yᵢ,yⱼ) − 2/(n₁n₂) Σ_{i,j} k(xᵢ,yⱼ)

(Gretton et al., "A kernel two-sample test", JMLR 2012, eq. 3). It is ~0 (and can be slightly
negative) when both sets come from one distribution.

* ``rbf``: ``k(a, b) = exp(−‖a − b‖² / (2σ²))`` with σ the median pairwise distance among the
  *reference* rows ``x`` alone (:func:`reference_bandwidth`; on a seeded subsample of at most 1000
  rows). σ never looks at the target, so every target measured against one reference shares one
  kernel and one scale: a target's MMD² does not depend on which other targets are measured, and
  a larger shift cannot widen its own kernel (the pooled median heuristic, :func:`median_bandwidth`,
  grows with the shift and so compresses large shifts; it stays available). The kernel matrix is
  never held whole: it is summed in blocks of ``block_size`` rows (upper-triangle blocks only for
  the within-set sums), so n = 10k per side needs ~2 × block_size² floats, not 10⁸.
* ``linear``: ``k(a, b) = (a − c)ᵀ(b − c)`` with c the pooled mean (MMD²_u itself does not depend on
  c; centring keeps the sums well conditioned and fixes the resamples' convention); the sums
  collapse to ``‖Σ xᵢ‖² − Σ ‖xᵢ‖²`` etc., O(n d), exact.

Weighted rows (bootstrap multiplicities w) give the weighted U-statistic
``(wᵀKw − Σ wᵢ² kᵢᵢ) / ((Σw)² − Σ wᵢ²)`` for each within-set term: copies of one original row are
not counted as a pair, so a resample is not biased upwards by its duplicates (counting them would
add ~(1 − E k) · 2/n). With all weights 1 this is exactly MMD²_u. σ stays at the full sample's value.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from probekit.shift.backend import DEFAULT_DEVICE, as_f64, check_pair
from probekit.shift.errors import ShiftInputError
from probekit.shift.gram import PairGram

Kernel = Literal["rbf", "linear"]
KERNELS: tuple[str, ...] = ("rbf", "linear")
BANDWIDTH_POINTS = 1000  # rows the median distance is taken over (a seeded subsample above this)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_(min=0.0)


def _median_distance(d2: torch.Tensor) -> float:
    """Median of the upper-triangle (i < j) distances of a squared-distance matrix; 1.0 if all are 0."""
    iu = torch.triu_indices(d2.shape[0], d2.shape[0], offset=1, device=d2.device)
    med = float(torch.sqrt(torch.quantile(d2[iu[0], iu[1]], 0.5)))
    return med if med > 0 else 1.0


def _subsample(z: torch.Tensor, max_points: int, seed: int) -> torch.Tensor:
    if z.shape[0] <= max_points:
        return z
    idx = np.sort(np.random.default_rng(seed).choice(z.shape[0], max_points, replace=False))
    return z[torch.from_numpy(idx).to(z.device)]


def reference_bandwidth(
    x: np.ndarray | torch.Tensor, *, max_points: int = BANDWIDTH_POINTS, seed: int = 0
) -> float:
    """σ from the reference alone: the median pairwise distance among the rows of ``x`` (i < j).

    Uses a seeded subsample of at most ``max_points`` rows; falls back to 1.0 when all rows
    coincide. This is the default RBF bandwidth of :func:`mmd2` and of the shift table.
    """
    z = _subsample(
        as_f64(x, x.device if isinstance(x, torch.Tensor) else DEFAULT_DEVICE, "reference"), max_points, seed
    )
    if z.shape[0] < 2:
        raise ShiftInputError("the reference bandwidth needs at least 2 reference rows")
    z = z - z.mean(0, keepdim=True)
    return _median_distance(_sq_dists(z, z))


def median_bandwidth(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_points: int = 1000,
    seed: int = 0,
    gram: PairGram | None = None,
) -> float:
    """σ of the pooled median heuristic: median pairwise distance over the pooled rows (i < j).

    Not the default any more: it depends on the target, so scores of different targets against
    one reference are on different scales (see the module docstring). Uses a seeded subsample of
    at most ``max_points`` pooled rows (all rows, read from ``gram`` when given and small enough);
    falls back to 1.0 when all rows coincide.
    """
    if gram is not None and gram.g.shape[0] <= max_points:
        return _median_distance(gram.sq_dists())
    z = _subsample(torch.cat([x, y]), max_points, seed)
    z = z - z.mean(0, keepdim=True)
    return _median_distance(_sq_dists(z, z))


def _weighted_block_sums(
    a: torch.Tensor,
    b: torch.Tensor,
    wa: torch.Tensor,
    wb: torch.Tensor,
    gamma: float,
    block_size: int,
    same: bool,
) -> torch.Tensor:
    """Σᵢⱼ wa[:, i] wb[:, j] exp(−γ‖aᵢ − bⱼ‖²) for each weight row, in blocks (B,)."""
    total = torch.zeros(wa.shape[0], dtype=torch.float64, device=a.device)
    for r0 in range(0, a.shape[0], block_size):
        ra = a[r0 : r0 + block_size]
        for c0 in range(r0 if same else 0, b.shape[0], block_size):
            d2 = _sq_dists(ra, b[c0 : c0 + block_size])
            if same and c0 == r0:
                d2.fill_diagonal_(0.0)
            k = torch.exp_(d2.mul_(-gamma))
            part = ((wa[:, r0 : r0 + block_size] @ k) * wb[:, c0 : c0 + block_size]).sum(1)
            total += part if not same or c0 == r0 else 2.0 * part
    return total


def _combine(s11, s22, s12, diag1, diag2, w1, w2) -> torch.Tensor:
    """Weighted U-statistic: within-set sums without same-row pairs, normalised by their weight."""
    n1, n2 = w1.sum(1), w2.sum(1)
    pairs1, pairs2 = n1 * n1 - (w1 * w1).sum(1), n2 * n2 - (w2 * w2).sum(1)
    return (s11 - diag1) / pairs1 + (s22 - diag2) / pairs2 - 2.0 * s12 / (n1 * n2)


def mmd2_resamples(
    x: torch.Tensor,
    y: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    kernel: Kernel = "rbf",
    bandwidth: float | None = None,
    block_size: int = 2048,
    gram: PairGram | None = None,
) -> np.ndarray:
    """Unbiased MMD² for each row of weights ``w1`` (B, n1), ``w2`` (B, n2) (multiplicities).

    ``x``, ``y`` are float64 tensors on one device. ``bandwidth`` is σ for ``rbf``
    (:func:`reference_bandwidth` of ``x`` when None). With ``gram`` (a :class:`PairGram` of the
    same rows) the RBF kernel comes from its distances in one piece (small n); otherwise blockwise
    from the features.
    """
    if kernel not in KERNELS:
        raise ShiftInputError(f"unknown MMD kernel {kernel!r}; use one of {KERNELS}")
    if kernel == "linear":
        c = torch.cat([x, y]).mean(0)
        xc, yc = x - c, y - c
        sx, sy = w1 @ xc, w2 @ yc
        s11, s22, s12 = (sx * sx).sum(1), (sy * sy).sum(1), (sx * sy).sum(1)
        diag1, diag2 = (w1 * w1) @ (xc * xc).sum(1), (w2 * w2) @ (yc * yc).sum(1)
        return _combine(s11, s22, s12, diag1, diag2, w1, w2).cpu().numpy()
    sigma = reference_bandwidth(x) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2.0 * sigma * sigma)
    if gram is not None:
        k = torch.exp(gram.sq_dists().mul_(-gamma))
        p = gram.n1
        s11 = ((w1 @ k[:p, :p]) * w1).sum(1)
        s22 = ((w2 @ k[p:, p:]) * w2).sum(1)
        s12 = ((w1 @ k[:p, p:]) * w2).sum(1)
    else:
        c = torch.cat([x, y]).mean(0)
        xc, yc = x - c, y - c
        s11 = _weighted_block_sums(xc, xc, w1, w1, gamma, block_size, same=True)
        s22 = _weighted_block_sums(yc, yc, w2, w2, gamma, block_size, same=True)
        s12 = _weighted_block_sums(xc, yc, w1, w2, gamma, block_size, same=False)
    diag1, diag2 = (w1 * w1).sum(1), (w2 * w2).sum(1)  # k(a, a) = 1
    return _combine(s11, s22, s12, diag1, diag2, w1, w2).cpu().numpy()


def mmd2(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    kernel: Kernel = "rbf",
    bandwidth: float | None = None,
    block_size: int = 2048,
    device: str | torch.device | None = DEFAULT_DEVICE,
) -> float:
    """Unbiased MMD² between the rows of ``x`` (n1, d; the reference) and ``y`` (n2, d).

    See the module docstring. ``rbf`` uses σ = ``bandwidth`` or :func:`reference_bandwidth` of
    ``x``; the kernel is summed in blocks of ``block_size`` rows in float64 on ``device``, so
    memory stays O(block_size²) for any n.
    """
    xt, yt = as_f64(x, device, "x"), as_f64(y, device, "y")
    check_pair(xt, yt)
    w1 = torch.ones(1, xt.shape[0], dtype=torch.float64, device=xt.device)
    w2 = torch.ones(1, yt.shape[0], dtype=torch.float64, device=xt.device)
    return float(mmd2_resamples(xt, yt, w1, w2, kernel=kernel, bandwidth=bandwidth, block_size=block_size)[0])
