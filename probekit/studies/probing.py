"""Notebooks 02 and 03: linear probes on every (site, layer, pool) of every dataset, and summaries.

:func:`probe_study` trains every probe of every dataset with the batched trainer (regularisation
chosen on a validation split, refit, scored on the test split) and keeps each probe's test
predictions, so gaps between two probes get paired bootstrap intervals. The summaries answer
paper 1's questions from that table: the best layer against the last one, the best site against
the block output, paper 1's per-site table, and which site wins under weak and strong shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..keys import make_key
from ..metrics import paired_bootstrap_diff, spearman_ci
from ..models import Backbone
from ..pipeline import split_features
from ..probes.linear import DEFAULT_CS, fit_linear_probes
from .shift import SCORE_POOL, SCORE_SITE

BLOCK_OUTPUT = "resid_post"  # paper 1's "layer": the block output (RC2)


@dataclass
class ProbeStudy:
    """The tidy probe table plus test labels and predictions, for paired comparisons."""

    table: pd.DataFrame
    depth: int
    y_test: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # dataset -> key -> pred

    def test_rows(self, metric: str = "accuracy") -> pd.DataFrame:
        t = self.table
        return t[(t["split"] == "test") & (t["metric"] == metric)]


def probe_study(
    backbone: Backbone,
    datasets: Sequence[str],
    *,
    sites: Sequence[str] | None = None,
    pools: Sequence[str] = ("cls", "ap", "mean"),
    probe_pools: Sequence[str] | None = None,
    images_per_class: int = 40,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> ProbeStudy:
    """Every linear probe on every dataset: extract (or reuse) train/test stores, then train at once.

    ``sites``/``pools`` choose what is extracted (the same for every notebook, so stores are
    shared); ``probe_pools`` restricts the pools probed (default: all extracted).
    """
    tables, y_test, preds = [], {}, {}
    for dataset in datasets:
        sf = split_features(backbone, dataset, max_per_class=images_per_class, seed=seed, sites=sites,
                            pools=pools, progress=progress)  # fmt: skip
        keys = [k for k in sf.train.keys() if not k.endswith("/tokens")
                and (probe_pools is None or k.rsplit("/", 1)[1] in probe_pools)]  # fmt: skip
        preds[dataset] = {}
        tables.append(fit_linear_probes(
            sf.train, sf.labels("train"), sf.test, sf.labels("test"), depth=backbone.depth, keys=keys,
            Cs=Cs, val_fraction=val_fraction, seed=seed, labels={"model": backbone.name, "dataset": dataset},
            predictions=preds[dataset], progress=progress,
        ))  # fmt: skip
        y_test[dataset] = sf.labels("test")
    return ProbeStudy(pd.concat(tables, ignore_index=True), backbone.depth, y_test, preds)


def _paired(study: ProbeStudy, dataset: str, key_a: str, key_b: str, metric: str, seed: int) -> tuple[float, float, float]:
    p = study.predictions[dataset]
    return paired_bootstrap_diff(study.y_test[dataset], p[key_a], p[key_b], metric, seed=seed)


def best_vs_last(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0) -> pd.DataFrame:
    """Per dataset: the best block output (or final norm) against the last block output, with the gap.

    The gap ``best - last`` has a paired bootstrap interval over test images. ``relative_depth``
    is the best layer over the model's depth.
    """
    rows = study.test_rows(metric)
    rows = rows[rows["site"].isin([BLOCK_OUTPUT, "norm"]) & (rows["pool"] == pool)]
    last_key = make_key(BLOCK_OUTPUT, study.depth - 1, pool)
    out = []
    for dataset, grp in rows.groupby("dataset", sort=False):
        best = grp.loc[grp["value"].idxmax()]
        last = grp[grp["key"] == last_key].iloc[0]
        gap, lo, hi = _paired(study, dataset, best["key"], last_key, metric, seed)
        out.append({
            "model": best["model"], "dataset": dataset, "site": best["site"], "layer": int(best["layer"]),
            "pool": pool, "metric": f"{metric}_gap_best_minus_last", "value": gap, "ci_low": lo, "ci_high": hi,
            "best_key": best["key"], "best_value": best["value"], "last_value": last["value"],
            "relative_depth": int(best["layer"]) / study.depth,
        })  # fmt: skip
    return pd.DataFrame(out)


def best_sites(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0) -> pd.DataFrame:
    """Per dataset: the best (site, layer) overall against the best block output, with the paired gain."""
    rows = study.test_rows(metric)
    rows = rows[rows["pool"] == pool]
    out = []
    for dataset, grp in rows.groupby("dataset", sort=False):
        best = grp.loc[grp["value"].idxmax()]
        blocks = grp[grp["site"] == BLOCK_OUTPUT]
        ref = blocks.loc[blocks["value"].idxmax()]
        gain, lo, hi = _paired(study, dataset, best["key"], ref["key"], metric, seed)
        out.append({
            "model": best["model"], "dataset": dataset, "site": best["site"], "layer": int(best["layer"]),
            "pool": pool, "metric": f"{metric}_gain_over_block_output", "value": gain, "ci_low": lo,
            "ci_high": hi, "best_key": best["key"], "best_value": best["value"], "block_output_key": ref["key"],
            "block_output_value": ref["value"],
        })  # fmt: skip
    return pd.DataFrame(out)


def site_summary(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy") -> pd.DataFrame:
    """Paper 1's table: per dataset and site, the best-layer accuracy; then the mean over datasets."""
    rows = study.test_rows(metric)
    rows = rows[(rows["pool"] == pool) & ~rows["site"].isin(["embed", "norm"])]
    per = rows.loc[rows.groupby(["dataset", "site"])["value"].idxmax()]
    return per[["model", "dataset", "site", "layer", "pool", "metric", "value", "ci_low", "ci_high"]].reset_index(drop=True)


def shift_scores(results_dir: str | Path, *, measure: str = "fd") -> pd.DataFrame:
    """Per dataset, the last-layer shift from notebook 01's table (``shift.csv``), if it exists."""
    path = Path(results_dir) / "shift.csv"
    if not path.exists():
        return pd.DataFrame(columns=["dataset", "shift", "shift_low", "shift_high"])
    t = pd.read_csv(path)
    t = t[(t["measure"] == measure) & (t["site"] == SCORE_SITE) & (t["pool"] == SCORE_POOL)]
    return t.rename(columns={"value": "shift", "ci_low": "shift_low", "ci_high": "shift_high"})[
        ["dataset", "shift", "shift_low", "shift_high"]]  # fmt: skip


def against_shift(per_dataset: pd.DataFrame, shifts: pd.DataFrame, column: str, *, seed: int = 0) -> tuple[pd.DataFrame, tuple[float, float, float]]:
    """Join a per-dataset result with the shift scores; Spearman's rho of ``column`` with shift."""
    joined = per_dataset.merge(shifts, on="dataset", how="inner")
    if joined.empty:
        return joined, (float("nan"),) * 3
    return joined, spearman_ci(joined["shift"], joined[column], seed=seed)


def weak_vs_strong(summary: pd.DataFrame, shifts: pd.DataFrame) -> pd.DataFrame:
    """Datasets split at the median shift; per group, each site's mean best-layer accuracy, best first."""
    joined = summary.merge(shifts, on="dataset", how="inner")
    if joined.empty:
        return pd.DataFrame(columns=["shift group", "site", "value", "datasets"])
    median = joined.drop_duplicates("dataset")["shift"].median()
    joined["shift group"] = np.where(joined["shift"] > median, "strong shift", "weak shift")
    out = (joined.groupby(["shift group", "site"])
           .agg(value=("value", "mean"), datasets=("dataset", "nunique")).reset_index()
           .sort_values(["shift group", "value"], ascending=[True, False]))  # fmt: skip
    return out


def winners_text(groups: pd.DataFrame) -> str:
    """Which site wins under weak and under strong shift, stated from the numbers."""
    if groups.empty:
        return "No shift table was found, so datasets could not be split by shift (run notebook 01 first)."
    parts = []
    for group, grp in groups.groupby("shift group", sort=False):
        top = grp.iloc[0]
        runner = grp.iloc[1] if len(grp) > 1 else None
        lead = f" ahead of {runner['site']} ({runner['value']:.3f})" if runner is not None else ""
        parts.append(f"under {group} ({int(top['datasets'])} datasets) {top['site']} wins with a mean best-layer "
                     f"accuracy of {top['value']:.3f}{lead}")  # fmt: skip
    return "; ".join(parts).capitalize() + "."
