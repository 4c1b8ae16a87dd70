"""Probe input preprocessing, as paper 1 does it: per-sample L2 norm, then per-feature standardising.

Works on stacks of feature sets, ``(F, n, D)`` torch tensors, so every probe of a batch is
standardised with its own training statistics in one call. Statistics match scikit-learn's
``StandardScaler`` (population standard deviation; a constant feature gets scale 1).
"""

from __future__ import annotations

import numpy as np
import torch

L2_EPS = 1e-12  # a row's norm is at least this: all-zero rows stay zero


def l2_rows(x: np.ndarray | torch.Tensor, dtype: type = np.float64) -> np.ndarray | torch.Tensor:
    """Each row (last axis) divided by its Euclidean norm; all-zero rows stay zero.

    A tensor stays a tensor in its own dtype; anything else becomes a numpy array of ``dtype``.
    """
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), L2_EPS)


def prepare(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """L2-normalise rows of every array, standardise all with statistics fitted on ``train``.

    Statistics over samples (dim -2) in the precision of ``train``, two passes (the mean, then the
    centred second moment), like ``StandardScaler``; a feature whose spread is within rounding of
    its mean (``10 eps |mean|``) counts as constant and gets scale 1. Done in place on new tensors
    (the inputs are left alone): about 5x faster on large stacks than out-of-place arithmetic.
    """
    train = l2_rows(train)
    mean = train.mean(dim=-2, keepdim=True)
    train -= mean
    std = train.square().mean(dim=-2, keepdim=True).sqrt_()
    std = torch.where(std < 10 * torch.finfo(std.dtype).eps * mean.abs().clamp_min(1.0), 1.0, std)
    return [train.div_(std)] + [(l2_rows(o) - mean).div_(std) for o in others]
