"""Notebook 05: across datasets, does distribution shift predict where the best features are?

Reads the tidy tables notebooks 01–04 wrote (``shift.csv``, ``layerwise_best.csv``,
``modulewise_best.csv``, ``fusion_gains.csv``) and relates each dataset's last-layer shift to
three outcomes: the best layer's relative depth (paper 1: lower under shift), the gain of the best
site over the block output (paper 1: larger under shift), and the attentive-fusion gain over the
CLS-last probe (paper 2: larger far from the pretraining domain). Each relation gets Spearman's
rho with a bootstrap interval, and the findings are written from those numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import spearman_ci, spearman_permutation_p
from .probing import SHIFT_MEASURE, shift_scores

OUTCOMES = {
    "relative_depth": ("layerwise_best.csv", None, "the best layer's relative depth", "lower"),
    "best_site_gain": ("modulewise_best.csv", None, "the best site's gain over the block output", "higher"),
    "alf_gain": ("fusion_gains.csv", "alf_attentive", "the attentive-fusion gain over CLS-last", "higher"),
}


def _outcome(results_dir: Path, name: str, model: str | None) -> pd.DataFrame:
    file, method, _, _ = OUTCOMES[name]
    path = results_dir / file
    if not path.exists():
        return pd.DataFrame(columns=["dataset", name])
    t = pd.read_csv(path)
    if model is not None:
        t = t[t["model"] == model]
    if method is not None:
        t = t[t["method"] == method]
    column = "relative_depth" if name == "relative_depth" else "value"
    return t[["dataset", column]].rename(columns={column: name}).groupby("dataset", as_index=False).mean()


def outcomes_by_dataset(results_dir: str | Path, *, measure: str = SHIFT_MEASURE, model: str | None = None) -> pd.DataFrame:
    """One row per dataset: its last-layer shift and the three outcomes (NaN where not measured)."""
    results_dir = Path(results_dir)
    table = shift_scores(results_dir, measure=measure, model=model)
    for name in OUTCOMES:
        table = table.merge(_outcome(results_dir, name, model), on="dataset", how="outer")
    return table.sort_values("shift").reset_index(drop=True)


def correlations(per_dataset: pd.DataFrame, *, seed: int = 0, model: str = "") -> pd.DataFrame:
    """Spearman's rho of shift with each outcome, with a bootstrap interval, as a tidy table."""
    rows = []
    for name, (_, _, label, _) in OUTCOMES.items():
        ok = per_dataset[["shift", name]].dropna()
        rho, lo, hi = spearman_ci(ok["shift"], ok[name], seed=seed)
        rows.append({"model": model, "dataset": "all", "site": "", "layer": np.nan, "pool": "",
                     "metric": f"spearman(shift, {name})", "value": rho, "ci_low": lo, "ci_high": hi,
                     "p_value": spearman_permutation_p(ok["shift"], ok[name], seed=seed),
                     "outcome": label, "n_datasets": len(ok)})  # fmt: skip
    return pd.DataFrame(rows)


def findings(corr: pd.DataFrame) -> list[str]:
    """Plain sentences, one per relation, stating sign, interval and whether it matches the papers."""
    out = []
    for (name, (_, _, label, expected)), row in zip(OUTCOMES.items(), corr.itertuples()):
        if row.n_datasets < 3 or not np.isfinite(row.value):
            out.append(f"Shift against {label}: not enough datasets with both numbers ({row.n_datasets}).")
            continue
        head = (f"Shift against {label}: Spearman ρ = {row.value:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}], "
                f"permutation p = {row.p_value:.3f}, over {row.n_datasets} datasets")
        if row.value == 0:
            out.append(f"{head}; no monotone relation.")
            continue
        direction = "higher" if row.value > 0 else "lower"
        conclusive = row.p_value < 0.05 and (row.ci_low > 0 or row.ci_high < 0)
        agrees = "the direction the papers predict" if direction == expected else "against the papers' prediction"
        verdict = ("significant at the 5% level" if conclusive
                   else "not significant: with this many datasets the direction is only suggestive")
        out.append(f"{head}; more shifted datasets have {direction} values ({agrees}); {verdict}.")
    return out


def record_headlines(corr: pd.DataFrame) -> None:
    """Put each correlation on the suite index as a headline number."""
    from .. import report

    for name, row in zip(OUTCOMES, corr.itertuples()):
        report.headline(f"rho_shift_{name}", row.value, label=f"Spearman ρ(shift, {name})", fmt="+.2f")
