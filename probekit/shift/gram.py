"""The pooled Gram matrix of two feature sets: one matmul that FD (n < d) and both MMDs share.

For ``x`` (n1, d) and ``y`` (n2, d), both centred by their pooled mean ``c``, ``G = Z Zᵀ`` with
``Z = [x; y] - c``. Every FD and MMD quantity is a function of ``G`` and of row weights (all ones
for the point estimate, bootstrap multiplicities for resamples), so resamples cost O(n²), not
O(n² d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairGram:
    """``g`` is the (n1 + n2)² Gram matrix of the pooled-centred rows of ``x`` then ``y``."""

    g: torch.Tensor
    n1: int
    n2: int
    dim: int

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor) -> PairGram:
        z = torch.cat([x, y])
        z = z - z.mean(dim=0, keepdim=True)
        return cls(z @ z.T, x.shape[0], y.shape[0], x.shape[1])

    @property
    def g11(self) -> torch.Tensor:
        return self.g[: self.n1, : self.n1]

    @property
    def g12(self) -> torch.Tensor:
        return self.g[: self.n1, self.n1 :]

    @property
    def g22(self) -> torch.Tensor:
        return self.g[self.n1 :, self.n1 :]

    def sq_dists(self) -> torch.Tensor:
        """All pairwise squared distances ``‖z_i − z_j‖² = G_ii + G_jj − 2 G_ij`` (diagonal exactly 0)."""
        diag = torch.diagonal(self.g)
        d2 = (diag[:, None] + diag[None, :] - 2.0 * self.g).clamp_(min=0.0)
        d2.fill_diagonal_(0.0)
        return d2
