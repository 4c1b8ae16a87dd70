"""Notebooks 02 and 03: linear probes on every (site, layer, pool) of every dataset, and summaries.

:func:`probe_study` trains every probe of every dataset with the batched trainer (regularisation
chosen on a validation split, refit, scored on the test split) and keeps each probe's test
predictions, so gaps between two probes get paired bootstrap intervals. The summaries answer
paper 1's questions from that table: the best layer against the last one, the best site against
the block output, paper 1's per-site table, and which site wins under weak and strong shift.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import cached
from ..keys import make_key
from ..metrics import paired_bootstrap_diff, spearman_ci
from ..models import Backbone
from ..pipeline import split_features
from ..probes.linear import DEFAULT_CS, check_grid, fit_linear_probes
from ..sites import resolve_sites
from .datasets import check_inputs
from .shift import SCORE_POOL, SCORE_SITE

BLOCK_OUTPUT = "resid_post"  # paper 1's "layer": the block output (RC2)
BLOCK_SITES = ("ln1", "attn", "resid_mid", "ln2", "fc1", "act", "fc2", "resid_post")

# How probes are trained and how "best" is chosen:
#   validated: C chosen per probe on a stratified validation split, refit on train+val; the best
#              layer / site is chosen by validation accuracy and then scored on the test split.
#   paper1:    paper 1 literally: C = 1, no validation; the best layer / site is the maximum of
#              test accuracy, as in the paper's tables (optimistic: chosen on the test split).
PROTOCOLS = {"validated": None, "paper1": {"Cs": (1.0,), "val_fraction": 0.0}}


def protocol_settings(protocol: str, Cs: Sequence[float], val_fraction: float) -> tuple[tuple[float, ...], float]:
    """The (Cs, val_fraction) a protocol trains with; errors list the protocols."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    fixed = PROTOCOLS[protocol]
    if fixed:
        return tuple(fixed["Cs"]), fixed["val_fraction"]
    cs, val_fraction = check_grid(Cs, val_fraction)
    return tuple(cs), val_fraction


@dataclass
class ProbeStudy:
    """The tidy probe table plus test labels and predictions, for paired comparisons."""

    table: pd.DataFrame
    depth: int
    protocol: str = "validated"
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
    probe_sites: Sequence[str] | None = None,
    probe_pools: Sequence[str] | None = None,
    images_per_class: int = 40,
    protocol: str = "validated",
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> ProbeStudy:
    """Every linear probe on every dataset: extract (or reuse) train/test stores, then train at once.

    ``sites``/``pools`` choose what is extracted (the same for every notebook, so stores are
    shared); ``probe_sites`` and ``probe_pools`` restrict what is probed (default: all extracted).
    ``protocol``:
    see :data:`PROTOCOLS` (``paper1`` overrides ``Cs`` and ``val_fraction``).
    """
    Cs, val_fraction = protocol_settings(protocol, Cs, val_fraction)
    check_inputs(backbone, datasets, probe_sites or sites, probe_pools or pools)
    tables, y_test, preds = [], {}, {}
    for dataset in datasets:
        sf = split_features(backbone, dataset, max_per_class=images_per_class, seed=seed, sites=sites,
                            pools=pools, progress=progress)  # fmt: skip
        wanted = resolve_sites(backbone.model, sites=probe_sites or sites, pools=probe_pools or pools)
        keys = [k for k in wanted if not k.endswith("/tokens")]
        labels = {"model": backbone.name, "dataset": dataset}

        def fit(sf=sf, keys=keys, labels=labels) -> tuple[pd.DataFrame, dict]:
            preds: dict[str, np.ndarray] = {}
            table = fit_linear_probes(sf.train, sf.labels("train"), sf.test, sf.labels("test"), depth=backbone.depth,
                                      keys=keys, Cs=Cs, val_fraction=val_fraction, seed=seed, labels=labels,
                                      predictions=preds, progress=progress)  # fmt: skip
            return table, preds

        inputs = dict(train=sf.train.path.name, test=sf.test.path.name, keys=keys, Cs=list(Cs),
                      val_fraction=val_fraction, seed=seed, labels=labels)  # fmt: skip
        table, preds[dataset] = cached("linear_probes", inputs, fit)
        tables.append(table)
        y_test[dataset] = sf.labels("test")
    table = pd.concat(tables, ignore_index=True)
    table["protocol"] = protocol
    return ProbeStudy(table, backbone.depth, protocol, y_test, preds)


def _choose(study: ProbeStudy, grp: pd.DataFrame, metric: str, prefer: str) -> pd.Series:
    """The best row of ``grp`` (test rows of one dataset), chosen without peeking when possible.

    Under the validated protocol the choice is by validation accuracy at each probe's selected C
    (then reported on test); under paper 1's it is the test maximum, as in the paper. Ties go to
    ``prefer`` (the null: the last layer, or the block output), then to the deeper layer.
    """
    if study.protocol == "validated":
        t = study.table
        val = t[(t["split"] == "val") & (t["metric"] == "accuracy") & (t["dataset"] == grp["dataset"].iloc[0])]
        chosen = grp[["key", "regularisation"]].merge(val, on=["key", "regularisation"], how="left")
        score = pd.Series(chosen["value"].to_numpy(), index=grp.index)
    else:
        score = grp["value"]
    top = grp[score >= score.max() - 1e-12]
    if prefer in set(top["key"]):
        return top[top["key"] == prefer].iloc[0]
    return top.sort_values("layer").iloc[-1]


def _paired(study: ProbeStudy, dataset: str, key_a: str, key_b: str, metric: str, seed: int) -> tuple[float, float, float]:
    p = study.predictions[dataset]
    return paired_bootstrap_diff(study.y_test[dataset], p[key_a], p[key_b], metric, seed=seed)


def best_vs_last(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0) -> pd.DataFrame:
    """Per dataset: the best block output against the last block output (paper 1's "layer"), with the gap.

    The best layer is chosen as :func:`_choose` says (validation accuracy, or the test maximum
    under ``paper1``; ties go to the last layer). The gap ``best - last`` has a paired bootstrap
    interval over test images; ``relative_depth`` is the best block's depth over the model's.
    The final norm is reported beside it (``norm_value``), not as a candidate: paper 1 does not
    probe it, and it normalises the last block.
    """
    rows = study.test_rows(metric)
    rows = rows[(rows["pool"] == pool)]
    norm = rows[rows["site"] == "norm"].set_index("dataset")["value"]
    rows = rows[rows["site"] == BLOCK_OUTPUT]
    last_key = make_key(BLOCK_OUTPUT, study.depth - 1, pool)
    out = []
    for dataset, grp in rows.groupby("dataset", sort=False):
        best = _choose(study, grp, "accuracy", last_key)
        last = grp[grp["key"] == last_key].iloc[0]
        gap, lo, hi = _paired(study, dataset, best["key"], last_key, metric, seed)
        out.append({
            "model": best["model"], "dataset": dataset, "site": best["site"], "layer": int(best["layer"]),
            "pool": pool, "metric": f"{metric}_gap_best_minus_last", "value": gap, "ci_low": lo, "ci_high": hi,
            "best_key": best["key"], "best_value": best["value"], "last_value": last["value"],
            "relative_depth": int(best["layer"]) / study.depth, "norm_value": norm.get(dataset, np.nan),
            "protocol": study.protocol,
        })  # fmt: skip
    return pd.DataFrame(out)


def best_sites(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0) -> pd.DataFrame:
    """Per dataset: the best (site, layer) inside the blocks against the best block output, with the paired gain.

    Both are chosen as :func:`_choose` says (ties go to the block output, so a tie is a zero gain).
    """
    rows = study.test_rows(metric)
    rows = rows[(rows["pool"] == pool) & rows["site"].isin(BLOCK_SITES)]
    out = []
    for dataset, grp in rows.groupby("dataset", sort=False):
        blocks = grp[grp["site"] == BLOCK_OUTPUT]
        last_key = make_key(BLOCK_OUTPUT, study.depth - 1, pool)
        ref = _choose(study, blocks, "accuracy", last_key)
        best = _choose(study, grp, "accuracy", ref["key"])
        gain, lo, hi = _paired(study, dataset, best["key"], ref["key"], metric, seed)
        out.append({
            "model": best["model"], "dataset": dataset, "site": best["site"], "layer": int(best["layer"]),
            "pool": pool, "metric": f"{metric}_gain_over_block_output", "value": gain, "ci_low": lo,
            "ci_high": hi, "best_key": best["key"], "best_value": best["value"], "block_output_key": ref["key"],
            "block_output_value": ref["value"], "protocol": study.protocol,
        })  # fmt: skip
    return pd.DataFrame(out)


def site_summary(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy") -> pd.DataFrame:
    """Paper 1's table: per dataset and site, the best layer's test accuracy (then averaged over datasets).

    The best layer of each site is chosen as :func:`_choose` says (ties go to the deeper layer).
    """
    rows = study.test_rows(metric)
    rows = rows[(rows["pool"] == pool) & rows["site"].isin(BLOCK_SITES)]
    last = {site: make_key(site, study.depth - 1, pool) for site in BLOCK_SITES}
    picked = [_choose(study, grp, "accuracy", last[site]) for (_, site), grp in rows.groupby(["dataset", "site"])]
    cols = ["model", "dataset", "site", "layer", "pool", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(picked)[cols].reset_index(drop=True)


SHIFT_MEASURE = "mmd_rbf"  # unbiased, so comparable across datasets of different sizes


def shift_scores(results_dir: str | Path, *, measure: str = SHIFT_MEASURE, model: str | None = None) -> pd.DataFrame:
    """Per dataset, the last-layer shift from notebook 01's table (``shift.csv``), if it exists.

    ``model`` keeps only that model's rows (a results folder may hold several models' runs).
    """
    path = Path(results_dir) / "shift.csv"
    if not path.exists():
        return pd.DataFrame(columns=["dataset", "shift", "shift_low", "shift_high"])
    t = pd.read_csv(path)
    if measure not in set(t["measure"]):
        raise ValueError(f"shift measure {measure!r} is not in {path}; it has {sorted(set(t['measure']))}")
    if model is not None:
        t = t[t["model"] == model]
    t = t[(t["measure"] == measure) & (t["site"] == SCORE_SITE) & (t["pool"] == SCORE_POOL)]
    return t.rename(columns={"value": "shift", "ci_low": "shift_low", "ci_high": "shift_high"})[
        ["dataset", "shift", "shift_low", "shift_high"]]  # fmt: skip


def against_shift(per_dataset: pd.DataFrame, shifts: pd.DataFrame, column: str, *, seed: int = 0) -> tuple[pd.DataFrame, tuple[float, float, float]]:
    """Join a per-dataset result with the shift scores; Spearman's rho of ``column`` with shift."""
    joined = per_dataset.merge(shifts, on="dataset", how="inner")
    unmatched = sorted(set(per_dataset["dataset"]) - set(joined["dataset"]))
    if unmatched and not shifts.empty:
        warnings.warn(f"no shift measured for {unmatched}: left out of the correlation (run notebook 01 on them)",
                      stacklevel=2)
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
        tied = grp[grp["value"] >= top["value"] - 1e-9]["site"].tolist()
        n = int(top["datasets"])
        if len(tied) > 1:
            parts.append(f"under {group} ({n} datasets) no site wins: {', '.join(tied)} tie at a mean best-layer "
                         f"accuracy of {top['value']:.3f}")  # fmt: skip
            continue
        runner = grp.iloc[1] if len(grp) > 1 else None
        lead = f", ahead of {runner['site']} ({runner['value']:.3f})" if runner is not None else ""
        parts.append(f"under {group} ({n} datasets) {top['site']} is best with a mean best-layer accuracy of "
                     f"{top['value']:.3f}{lead}")  # fmt: skip
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ". Differences of a point or two are within the per-dataset intervals."
