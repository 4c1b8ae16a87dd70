"""How a headline number is written: its value with its interval and sample size, or why there is none.

Every headline on a report and on the suite index reads ``value [low, high], n = N``. When the
interval spans zero (a gap or a correlation whose sign the data do not settle) it adds
:data:`NOT_RESOLVED`; when the value could not be computed (NaN, e.g. a Spearman ρ over two
datasets) it shows ``n/a`` and says why, never ``+nan``.

    describe(0.12, "+.2f", ci=(-0.3, 0.5), n="7 datasets")
    # {'display': '+0.12 [-0.30, +0.50], n = 7 datasets', 'note': 'not resolved at this sample size'}
    median_ci([0.1, 0.0, 0.3, -0.1])   # (median, low, high): a bootstrap over the values
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NOT_RESOLVED = "not resolved at this sample size"
MIN_SPEARMAN = 3  # points a Spearman rho needs (below: undefined)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def spans_zero(low: Any, high: Any) -> bool:
    """True when ``[low, high]`` holds 0 and has some width (a zero-width [0, 0] is a resolved zero)."""
    return _finite(low) and _finite(high) and float(low) <= 0.0 <= float(high) and float(low) < float(high)


def _fmt(value: Any, fmt: str | None) -> str:
    if fmt:
        return format(value, fmt)
    if isinstance(value, float) or hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        return f"{float(value):.4g}"
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def describe(
    value: Any,
    fmt: str | None = None,
    *,
    ci: Sequence[float] | None = None,
    n: Any = None,
    why: str | None = None,
) -> dict[str, str]:
    """``{"display": ..., "note": ...}`` for a headline (see the module doc); ``note`` may be empty.

    ``why``: the reason shown when ``value`` is NaN or None (what was missing, what to do).
    """
    parts = []
    note = ""
    if value is None or is_number(value) and not _finite(value):
        parts.append("n/a")
        note = f"not computed: {why or 'the value is undefined for these inputs'}"
    else:
        parts.append(_fmt(value, fmt))
        if ci is not None and _finite(ci[0]) and _finite(ci[1]):
            parts[-1] += f" [{_fmt(ci[0], fmt)}, {_fmt(ci[1], fmt)}]"
            if spans_zero(*ci):
                note = NOT_RESOLVED
    if n is not None:
        parts.append(f"n = {n}")
    return {"display": ", ".join(parts), "note": note}


def median_ci(
    values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The median of ``values`` with a percentile bootstrap interval over them; NaN when empty."""
    return _bootstrap_statistic(values, np.median, n_boot=n_boot, level=level, seed=seed)


def mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The mean of ``values`` with a percentile bootstrap interval over them (paper 2's Table 1 averages
    gains over datasets); NaN when empty."""
    return _bootstrap_statistic(values, np.mean, n_boot=n_boot, level=level, seed=seed)


def _bootstrap_statistic(
    values: Sequence[float], statistic: Any, *, n_boot: int, level: float, seed: int
) -> tuple[float, float, float]:
    x = np.asarray([v for v in values if _finite(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    boots = statistic(x[idx], axis=1)
    alpha = (1 - level) / 2
    return float(statistic(x)), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def spearman_why(n_points: int, what: str = "datasets") -> str:
    """Why a Spearman rho over ``n_points`` could not be computed."""
    if n_points == 0:
        return (
            f"no {what.removesuffix('s')} has both numbers (is notebook 01's shift table in "
            "the same results folder, for the same model and datasets?)"
        )
    if n_points < MIN_SPEARMAN:
        return (
            f"a rank correlation needs at least {MIN_SPEARMAN} {what} with both numbers, this run has "
            f"{n_points}; run more {what}"
        )
    return f"one of the two variables is the same for all {n_points} {what} (no ranking to correlate)"
