"""Tensor plumbing shared by the shift measures: float64 tensors on a chosen device, seeded RNGs.

Every measure takes numpy arrays or tensors and a ``device``, ``"cpu"`` by default: the measures
run in float64, which is exact and identical on every machine on the CPU and slow on most GPUs, so
a GPU is opt-in (``device="cuda"``; ``None`` follows :func:`probekit.device.resolve_device`).
Results come back as Python floats or numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from probekit.device import resolve_device
from probekit.metrics import row_counts
from probekit.shift.errors import ShiftInputError

DEFAULT_DEVICE = "cpu"  # float64 measures: exact and the same on every machine (module docstring)


def as_f64(
    x: np.ndarray | torch.Tensor, device: str | torch.device | None = DEFAULT_DEVICE, name: str = "features"
) -> torch.Tensor:
    """A 2-D float64 tensor on ``device``; rejects other ranks and non-finite values with a clear message."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ShiftInputError(
            f"{name} must be a 2-D (samples, dim) array, got shape {tuple(t.shape)}; "
            "pool token features (cls/ap/mean) before measuring shift"
        )
    t = t.to(device=resolve_device(device), dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ShiftInputError(f"{name} contains NaN or inf values; check the extraction that produced it")
    return t


def check_pair(x: torch.Tensor, y: torch.Tensor, min_rows: int = 2) -> None:
    """Both sets need the same dimension and at least ``min_rows`` rows."""
    if x.shape[1] != y.shape[1]:
        raise ShiftInputError(
            f"feature sets have different dimensions ({x.shape[1]} vs {y.shape[1]}); "
            "compare the same key (site and pool) of the same model"
        )
    if min(x.shape[0], y.shape[0]) < min_rows:
        raise ShiftInputError(f"need at least {min_rows} rows per set, got {x.shape[0]} and {y.shape[0]}")


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` multiplicities of a with-replacement resample of ``n`` rows (each row sums to n)."""
    return row_counts(rng.integers(0, n, size=(n_boot, n)), n, np.float64)


def percentile_ci(stats: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` at ``level``; NaNs when there are no resamples."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)
