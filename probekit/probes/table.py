"""Tidy result rows for probes: one row per (probe, trainer, regularisation, split, metric).

Columns (``COLUMNS``): ``model, dataset, site, layer, pool, trainer, regularisation, split, metric,
value, ci_low, ci_high, key``. ``layer`` follows :mod:`probekit.keys` (embed 0, block ``i`` at
``i + 1``, final norm at ``depth``). Intervals are percentile bootstraps over test samples, the
same resampling as :func:`probekit.metrics.bootstrap_ci` (same seed, same draws); balanced
accuracy is bootstrapped here in one vectorised pass instead of a Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from probekit.keys import parse_key
from probekit.metrics import bootstrap_ci

COLUMNS = (
    "model",
    "dataset",
    "site",
    "layer",
    "pool",
    "trainer",
    "regularisation",
    "split",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "key",
)


def bootstrap_balanced_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Balanced accuracy and its percentile bootstrap interval (vectorised in :mod:`probekit.metrics`)."""
    return bootstrap_ci(y_true, y_pred, "balanced_accuracy", n_boot=n_boot, level=level, seed=seed)


def score(y_true: np.ndarray, y_pred: np.ndarray, metric: str, n_boot: int, seed: int) -> tuple[float, ...]:
    """``(value, ci_low, ci_high)`` of ``metric``; ``n_boot=0`` gives NaN bounds."""
    if n_boot == 0:
        from probekit.metrics import METRICS

        return METRICS[metric](y_true, y_pred), float("nan"), float("nan")
    if metric == "balanced_accuracy":
        return bootstrap_balanced_accuracy(y_true, y_pred, n_boot=n_boot, seed=seed)
    return bootstrap_ci(y_true, y_pred, metric, n_boot=n_boot, seed=seed)


def base_row(
    key: str, *, depth: int, labels: Mapping[str, object], trainer: str, regularisation: float, split: str
) -> dict:
    """The identifying columns of a row (all but metric, value and interval); extra labels appended."""
    k = parse_key(key)
    row = {
        "model": labels.get("model", ""),
        "dataset": labels.get("dataset", ""),
        "site": k.site,
        "layer": k.layer(depth),
        "pool": k.pool,
        "trainer": trainer,
        "regularisation": float(regularisation),
        "split": split,
        "key": key,
    }
    return row | {c: v for c, v in labels.items() if c not in ("model", "dataset")}


def probe_rows(
    key: str,
    *,
    depth: int,
    labels: Mapping[str, object],
    trainer: str,
    regularisation: float,
    split: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metrics: Iterable[str],
    n_boot: int,
    seed: int = 0,
) -> list[dict]:
    """Rows for one probe's predictions on one split, one per metric."""
    base = base_row(
        key, depth=depth, labels=labels, trainer=trainer, regularisation=regularisation, split=split
    )
    rows = []
    for m in metrics:
        value, low, high = score(y_true, y_pred, m, n_boot, seed)
        rows.append({**base, "metric": m, "value": value, "ci_low": low, "ci_high": high})
    return rows
