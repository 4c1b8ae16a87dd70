"""Notebook 05: across datasets, does distribution shift predict where the best features are?

Reads the tidy tables notebooks 01–04 wrote (named by the studies that write them:
:data:`.shift.SHIFT_TABLE`, :data:`.probing.LAYERWISE_BEST_TABLE`,
:data:`.probing.MODULEWISE_BEST_TABLE`, :data:`.fusion.GAINS_TABLE`) and relates each dataset's last-layer shift to
three outcomes: the best layer's relative depth (paper 1: lower under shift), the gain of the best
site over the block output (paper 1: larger under shift), and the attentive-fusion gain over the
CLS-last probe (paper 2: larger far from the pretraining domain). Each relation gets Spearman's
rho with a bootstrap interval, and the findings are written from those numbers; a relation that
cannot be computed (fewer than three datasets) says why. A missing table is an error that names
the notebook to run, except notebook 04's: a paper-1-only run (``configs/paper1.yaml``) has no
fusion, and that relation is then not computed (no datasets).

:func:`cls_last_consistency` checks the notebooks against each other: notebook 04's linear probe on
the last layer's CLS token (``cls_last_linear`` in :data:`.fusion.FUSION_TABLE`) and notebook 02's
probe on the same feature (``norm/cls`` in :data:`.probing.PROBES_TABLE`) must agree within :data:`CONSISTENCY_TOLERANCE`
balanced accuracy on every dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..headlines import spearman_why
from ..metrics import spearman_ci, spearman_permutation_p
from ..report import read_table
from . import fusion, probing
from .probing import SHIFT_MEASURE, shift_scores

NOTEBOOK = "05_summary"
SUMMARY_TABLE = "summary"  # the correlations

# outcome -> (table, notebook that writes it, method filter, label, direction the papers predict)
OUTCOMES = {
    "relative_depth": (
        probing.LAYERWISE_BEST_TABLE,
        probing.LAYERWISE_NOTEBOOK,
        None,
        "the best layer's relative depth",
        "lower",
    ),
    "best_site_gain": (
        probing.MODULEWISE_BEST_TABLE,
        probing.MODULEWISE_NOTEBOOK,
        None,
        "the best site's gain over the block output",
        "higher",
    ),
    "alf_gain": (
        fusion.GAINS_TABLE,
        fusion.NOTEBOOK,
        "alf_attentive",
        "the attentive-fusion gain over CLS-last",
        "higher",
    ),
}
OPTIONAL = {"alf_gain"}  # paper 2's outcome: a paper-1-only run skips notebook 04


def _outcome(results_dir: Path, name: str, model: str | None, skip_missing: bool = False) -> pd.DataFrame:
    table, notebook, method, _, _ = OUTCOMES[name]
    if (skip_missing or name in OPTIONAL) and not (results_dir / f"{table}.csv").is_file():
        return pd.DataFrame(columns=["dataset", name])
    t = read_table(table, results_dir, notebook=notebook)
    if model is not None:
        t = t[t["model"] == model]
    if method is not None:
        t = t[t["method"] == method]
    column = "relative_depth" if name == "relative_depth" else "value"
    return t[["dataset", column]].rename(columns={column: name}).groupby("dataset", as_index=False).mean()


def outcomes_by_dataset(
    results_dir: str | Path,
    *,
    measure: str = SHIFT_MEASURE,
    model: str | None = None,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """One row per dataset: its last-layer shift and the three outcomes (NaN where not measured).

    Raises :class:`~probekit.errors.MissingTableError` naming the notebook to run when a table
    other than notebook 04's is missing; with ``skip_missing`` only for the shift table, and an
    outcome whose table is missing is NaN (:func:`missing_outcomes` names them).
    """
    results_dir = Path(results_dir)
    table = shift_scores(results_dir, measure=measure, model=model)
    for name in OUTCOMES:
        table = table.merge(_outcome(results_dir, name, model, skip_missing), on="dataset", how="outer")
    return table.sort_values("shift").reset_index(drop=True)


def missing_outcomes(results_dir: str | Path) -> list[str]:
    """The outcomes whose table is not in ``results_dir``, each as "<label>: run <notebook>"."""
    return [
        f"{label}: run notebook {notebook} ({table}.csv)"
        for table, notebook, _, label, _ in OUTCOMES.values()
        if not (Path(results_dir) / f"{table}.csv").is_file()
    ]


def correlations(per_dataset: pd.DataFrame, *, seed: int = 0, model: str = "") -> pd.DataFrame:
    """Spearman's rho of shift with each outcome, with a bootstrap interval, as a tidy table."""
    rows = []
    for name, (_, _, _, label, _) in OUTCOMES.items():
        ok = per_dataset[["shift", name]].dropna()
        rho, lo, hi = spearman_ci(ok["shift"], ok[name], seed=seed)
        rows.append(
            {
                "model": model,
                "dataset": "all",
                "site": "",
                "layer": np.nan,
                "pool": "",
                "metric": f"spearman(shift, {name})",
                "value": rho,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": spearman_permutation_p(ok["shift"], ok[name], seed=seed),
                "outcome": label,
                "n_datasets": len(ok),
            }
        )
    return pd.DataFrame(rows)


def findings(corr: pd.DataFrame) -> list[str]:
    """Plain sentences, one per relation, stating sign, interval and whether it matches the papers."""
    out = []
    for (_, (_, _, _, label, expected)), row in zip(OUTCOMES.items(), corr.itertuples()):
        if row.n_datasets < 3 or not np.isfinite(row.value):
            out.append(f"Shift against {label}: not computed: {spearman_why(row.n_datasets)}.")
            continue
        head = (
            f"Shift against {label}: Spearman ρ = {row.value:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}], "
            f"permutation p = {row.p_value:.3f}, over {row.n_datasets} datasets"
        )
        if row.value == 0:
            out.append(f"{head}; no monotone relation.")
            continue
        direction = "higher" if row.value > 0 else "lower"
        conclusive = row.p_value < 0.05 and (row.ci_low > 0 or row.ci_high < 0)
        agrees = (
            "the direction the papers predict" if direction == expected else "against the papers' prediction"
        )
        verdict = (
            "significant at the 5% level"
            if conclusive
            else "not significant: with this many datasets the direction is only suggestive"
        )
        out.append(f"{head}; more shifted datasets have {direction} values ({agrees}); {verdict}.")
    return out


def record_headlines(corr: pd.DataFrame) -> None:
    """Put each correlation on the suite index as a headline number."""
    from .. import report

    for name, row in zip(OUTCOMES, corr.itertuples()):
        why = None if np.isfinite(row.value) else spearman_why(row.n_datasets)
        report.headline(
            f"rho_shift_{name}",
            row.value,
            label=f"Spearman ρ(shift, {name})",
            fmt="+.2f",
            ci=(row.ci_low, row.ci_high),
            n=f"{row.n_datasets} datasets",
            why=why,
        )


CONSISTENCY_TOLERANCE = 0.02  # balanced accuracy: the same probe on the same feature in two notebooks
FUSION_BASELINE = "cls_last_linear"  # notebook 04: linear probe on the last layer's CLS token
LAYERWISE_KEY = "norm/cls"  # notebook 02: the same feature (final norm, CLS token)


def cls_last_consistency(
    results_dir: str | Path, *, model: str | None = None, tolerance: float = CONSISTENCY_TOLERANCE
) -> pd.DataFrame:
    """Per dataset: notebook 04's ``cls_last_linear`` beside notebook 02's ``norm/cls`` test balanced accuracy.

    Columns ``dataset``, ``fusion_cls_last`` (04), ``layerwise_norm_cls`` (02), ``gap`` (04 − 02)
    and ``agrees`` (``|gap| <= tolerance``), for the datasets both notebooks ran. Empty (with the
    same columns) when either table is missing: the check needs both notebooks, and a
    paper-1-only run has no notebook 04 (:func:`consistency_text` then says the check did not run).
    """
    results_dir = Path(results_dir)
    cols = ["dataset", "fusion_cls_last", "layerwise_norm_cls", "gap", "agrees"]
    if _absent(results_dir):
        return pd.DataFrame(columns=cols)
    fusion_t = read_table(fusion.FUSION_TABLE, results_dir, notebook=fusion.NOTEBOOK)
    probes = read_table(probing.PROBES_TABLE, results_dir, notebook=probing.LAYERWISE_NOTEBOOK)
    if model is not None:
        fusion_t, probes = fusion_t[fusion_t["model"] == model], probes[probes["model"] == model]
    fusion_t = fusion_t[(fusion_t["method"] == FUSION_BASELINE) & (fusion_t["metric"] == "balanced_accuracy")]
    probes = probes[
        (probes["key"] == LAYERWISE_KEY)
        & (probes["split"] == "test")
        & (probes["metric"] == "balanced_accuracy")
    ]
    a = fusion_t.groupby("dataset", sort=False)["value"].mean().rename("fusion_cls_last")
    b = probes.groupby("dataset", sort=False)["value"].mean().rename("layerwise_norm_cls")
    table = pd.concat([a, b], axis=1, join="inner").rename_axis("dataset").reset_index()
    table["gap"] = table["fusion_cls_last"] - table["layerwise_norm_cls"]
    table["agrees"] = table["gap"].abs() <= tolerance + 1e-12
    return table[cols]


def _absent(results_dir: Path) -> bool:
    """Whether a table of the CLS-last check is missing from ``results_dir``."""
    return not all(
        (results_dir / f"{name}.csv").is_file() for name in (fusion.FUSION_TABLE, probing.PROBES_TABLE)
    )


def consistency_text(table: pd.DataFrame, tolerance: float = CONSISTENCY_TOLERANCE) -> str:
    """One paragraph: do notebooks 02 and 04 give the same number for the CLS-last linear probe?"""
    if table.empty:
        return (
            f"The CLS-last check needs notebook 04's `{fusion.FUSION_TABLE}.csv` and notebook 02's "
            f"`{probing.PROBES_TABLE}.csv` in the same results folder; one of them is missing, so it was not run."
        )
    bad = table[~table["agrees"]]
    head = (
        f"Notebook 04's linear probe on the last layer's CLS token (`cls_last_linear`) against notebook 02's "
        f"probe on the same feature (`norm/cls`), test balanced accuracy, on {len(table)} dataset(s): "
    )
    if bad.empty:
        return head + f"every gap is within {tolerance:.2f} (largest {table['gap'].abs().max():.3f})."
    listed = "; ".join(
        f"{r.dataset}: 04 {r.fusion_cls_last:.3f} vs 02 {r.layerwise_norm_cls:.3f} (gap {r.gap:+.3f})"
        for r in bad.itertuples()
    )
    return (
        head
        + f"**{len(bad)} differ by more than {tolerance:.2f}**: {listed}. The same model class on the same "
        "features should give the same number; a gap means one of the two probes is not at its optimum "
        "(see notebook 04's convergence columns) or they were trained on different images."
    )
