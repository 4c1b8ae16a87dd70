"""Notebook 07: the models of a sweep side by side, from the tables each model's notebooks wrote.

Paper 2's Table 1 shape: each fusion method's gain over the CLS-last linear probe (notebook 04's
:data:`.fusion.GAINS_TABLE`), per model and dataset, and its mean over datasets per model with a
bootstrap interval over datasets (:func:`probekit.headlines.mean_ci`). Paper 1's findings per model:
Spearman's rho of shift with the best layer's relative depth and with the best site's gain
(notebook 05's relations, :func:`.summary.correlations`, recomputed per model), and which site is best
under weak and under strong shift (:func:`.probing.weak_vs_strong` on notebook 03's
:data:`.probing.MODULEWISE_SITES_TABLE`). Shift is measured in each model's own feature space, so
rhos are compared across models, never shift values.

Where the tables are (:func:`model_results_dirs`): a sweep writes each model's tables to
``<out>/<model folder>/results`` and this notebook's to ``<out>/results``; a single-model suite writes
both to ``<out>/results``. A model whose tables are missing is listed with the notebook to run,
never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MissingTableError
from ..headlines import mean_ci, spearman_why
from ..paths import model_folder
from ..report import TABLE_COLUMNS, read_table
from . import fusion, probing, summary
from .shift import SHIFT_TABLE

NOTEBOOK = "07_models"
TABLE1_TABLE = "models_fusion"  # per model x fusion method: mean gain over CLS-last across datasets
FINDINGS_TABLE = "models_findings"  # per model: Spearman rho of shift with notebook 05's outcomes
SITES_TABLE = "models_sites_by_shift"  # per model x shift group x site: mean best-layer accuracy

HEADLINE_METHOD = "alf_attentive"  # paper 2's attentive layer fusion: the method its Table 1 leads with
DEPTH = "spearman(shift, relative_depth)"
SITE_GAIN = "spearman(shift, best_site_gain)"


def model_results_dirs(results_dir: str | Path, models: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """Each model's results folder: ``<results_dir>/../<model folder>/results`` where a sweep wrote it,
    else ``results_dir`` itself (one model). ``models`` empty: every model whose tables are found."""
    results_dir = Path(results_dir)
    models = list(models) or discover_models(results_dir)
    folders = {}
    for model in models:
        swept = results_dir.parent / model_folder(model) / "results"
        folders[model] = swept if swept.is_dir() else results_dir
    return folders


def discover_models(results_dir: Path) -> list[str]:
    """The models named in the shift, best-layer and fusion tables of ``results_dir`` (a single-model
    suite's folder); when it holds none, those of its sibling model folders (``<results_dir>/../*/results``,
    a sweep's), in folder order."""

    def named(folder: Path) -> list[str]:
        found = []
        for table in (SHIFT_TABLE, probing.LAYERWISE_BEST_TABLE, fusion.GAINS_TABLE):
            path = folder / f"{table}.csv"
            if path.is_file():
                found += [str(m) for m in pd.read_csv(path, usecols=["model"])["model"].unique()]
        return found

    found = named(results_dir) or [m for f in sorted(results_dir.parent.glob("*/results")) for m in named(f)]
    return list(dict.fromkeys(found))


def _empty(*extra: str) -> pd.DataFrame:
    """A table with no rows and the tidy columns (and ``extra``): what a notebook saves when nothing ran."""
    return pd.DataFrame(columns=[*TABLE_COLUMNS, *extra])


def _model_rows(folder: Path, table: str, notebook: str, model: str) -> pd.DataFrame:
    t = read_table(table, folder, notebook=notebook)
    return t[t["model"].astype(str) == model]


def fusion_gains(folders: dict[str, Path]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every model's per-dataset gains over CLS-last (notebook 04), one table; and the models without
    one, with why."""
    tables, missing = [], {}
    for model, folder in folders.items():
        try:
            rows = _model_rows(folder, fusion.GAINS_TABLE, fusion.NOTEBOOK, model)
        except MissingTableError:
            missing[model] = (
                f"no gains over CLS-last: run notebook {fusion.NOTEBOOK} ({fusion.GAINS_TABLE}.csv)"
            )
            continue
        if rows.empty:
            missing[model] = f"notebook {fusion.NOTEBOOK}'s {fusion.GAINS_TABLE}.csv has no rows for it"
        tables.append(rows)
    gains = pd.concat(tables, ignore_index=True) if tables else _empty("method")
    return gains, missing


def table1(gains: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Paper 2's Table 1 shape: per model and method, the mean gain over CLS-last across datasets with a
    95% bootstrap interval over datasets, and the number of datasets."""
    rows = []
    for (model, method), grp in gains.groupby(["model", "method"], sort=False):
        values = grp.groupby("dataset")["value"].mean()
        mean, lo, hi = mean_ci(values.to_numpy(), seed=seed)
        rows.append(
            {
                "model": model,
                "dataset": "mean over datasets",
                "site": str(grp["site"].iloc[0]) if "site" in grp else "",
                "layer": np.nan,
                "pool": "cls+ap",
                "metric": "mean_balanced_accuracy_gain_over_cls_last",
                "value": mean,
                "ci_low": lo,
                "ci_high": hi,
                "method": method,
                "n_datasets": int(values.notna().sum()),
            }
        )
    return pd.DataFrame(rows) if rows else _empty("method", "n_datasets")


def gains_by_dataset(gains: pd.DataFrame, method: str = HEADLINE_METHOD) -> pd.DataFrame:
    """One method's gain per model (rows) and dataset (columns), with the mean per model: the layout of
    paper 2's per-dataset table."""
    rows = gains[gains["method"] == method]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index="model", columns="dataset", values="value", sort=False)
    return wide.assign(mean=wide.mean(axis=1)).round(3)


def shift_findings(
    folders: dict[str, Path], *, measure: str = probing.SHIFT_MEASURE, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Per model, notebook 05's relations of shift with the outcomes (Spearman rho with its interval
    and n); the per-dataset rows they come from; and the models that lack a table, with why."""
    correlations, per_dataset, missing = [], [], {}
    for model, folder in folders.items():
        try:
            rows = summary.outcomes_by_dataset(folder, measure=measure, model=model, skip_missing=True)
        except (MissingTableError, ValueError) as err:  # no shift table: nothing to relate
            missing[model] = _no_shift(err, measure)
            continue
        absent = summary.missing_outcomes(folder)
        if absent:
            missing[model] = "not computed for want of a table: " + "; ".join(absent)
        per_dataset.append(rows.assign(model=model))
        correlations.append(summary.correlations(rows, seed=seed, model=model))
    corr = pd.concat(correlations, ignore_index=True) if correlations else _empty("outcome", "n_datasets")
    rows = (
        pd.concat(per_dataset, ignore_index=True)
        if per_dataset
        else pd.DataFrame(columns=["model", "dataset"])
    )
    return corr, rows, missing


def _no_shift(err: Exception, measure: str) -> str:
    """Why a model has no shift findings, without the local path the error names (pages carry none)."""
    if isinstance(err, MissingTableError):
        return f"no shift table: run notebook 01 ({SHIFT_TABLE}.csv) for it; paper 1's findings need it"
    return f"notebook 01's {SHIFT_TABLE}.csv has no {measure!r} rows (give shift_measure one it measured)"


def rho_rows(correlations: pd.DataFrame) -> pd.DataFrame:
    """Paper 1's two relations per model (depth and site gain, not the fusion one) as one metric, for a
    chart of rho per model coloured by outcome."""
    rows = correlations[correlations["metric"].isin([DEPTH, SITE_GAIN])]
    return rows.assign(metric="spearman_rho")


def sites_by_shift(folders: dict[str, Path], *, measure: str = probing.SHIFT_MEASURE) -> pd.DataFrame:
    """Per model, datasets split at that model's median shift; per group, each site's mean best-layer
    accuracy (notebook 03's site table), best first. Models without notebook 03's or 01's table are
    left out here (:func:`shift_findings` lists them)."""
    tables = []
    for model, folder in folders.items():
        try:
            sites = _model_rows(folder, probing.MODULEWISE_SITES_TABLE, probing.MODULEWISE_NOTEBOOK, model)
            shifts = probing.shift_scores(folder, measure=measure, model=model)
        except (MissingTableError, ValueError):
            continue
        groups = probing.weak_vs_strong(sites, shifts)
        if not groups.empty:
            tables.append(groups.assign(model=model))
    if not tables:
        return _empty("shift group", "datasets")
    out = pd.concat(tables, ignore_index=True)
    tidy = {"dataset": out["shift group"], "layer": np.nan, "pool": "", "metric": "mean_best_layer_accuracy"}
    return out.assign(**tidy, ci_low=np.nan, ci_high=np.nan)


def winners(sites: pd.DataFrame) -> pd.DataFrame:
    """The best site per model and shift group (one row each), with its mean best-layer accuracy."""
    if sites.empty:
        return pd.DataFrame(columns=["model", "shift group", "site", "value", "datasets"])
    top = sites.sort_values("value", ascending=False).groupby(["model", "shift group"], sort=False).head(1)
    return top[["model", "shift group", "site", "value", "datasets"]].sort_values(["model", "shift group"])


def findings(
    models: list[str],
    table: pd.DataFrame,
    correlations: pd.DataFrame,
    sites: pd.DataFrame,
    *missing: dict[str, str],
) -> list[str]:
    """Plain sentences: how many models, then per model its mean ALF gain, its depth and site-gain
    rhos, and its best site under weak and strong shift, each with interval and n; then what is missing."""
    out = []
    if len(models) == 1:
        out.append(
            f"One model ran ({models[0]}), so there is nothing to compare it with: its numbers are shown alone. "
            "A sweep names several models in the config's defaults (models: [a, b])."
        )
    elif not models:
        out.append("No model's tables were found: run the per-model notebooks (01 to 05) first.")
    else:
        out.append(
            f"{len(models)} models: {', '.join(models)}. Shift is measured in each model's own features."
        )
    for model in models:
        parts = []
        alf = (
            table[(table["model"] == model) & (table["method"] == HEADLINE_METHOD)]
            if not table.empty
            else table
        )
        if not alf.empty:
            r = alf.iloc[0]
            parts.append(
                f"ALF gains {r['value']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] balanced accuracy over "
                f"CLS-last on average over {r['n_datasets']} datasets"
            )
        mine = correlations[correlations["model"] == model] if not correlations.empty else correlations
        for metric, what in ((DEPTH, "the best layer's relative depth"), (SITE_GAIN, "the best site's gain")):
            row = mine[mine["metric"] == metric]
            if row.empty or row.iloc[0]["n_datasets"] == 0:  # its table is missing: said below
                continue
            r = row.iloc[0]
            if np.isfinite(r["value"]) and np.isfinite(r["ci_low"]):
                parts.append(
                    f"Spearman ρ(shift, {what}) = {r['value']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] "
                    f"over {r['n_datasets']} datasets"
                )
            else:
                parts.append(f"ρ(shift, {what}) not computed: {spearman_why(int(r['n_datasets']))}")
        best = winners(sites)
        for w in best[best["model"] == model].to_dict("records"):
            parts.append(
                f"best site under {w['shift group']}: {w['site']} "
                f"(mean best-layer accuracy {w['value']:.3f}, {w['datasets']} datasets)"
            )
        if parts:
            out.append(f"**{model}**: " + "; ".join(parts) + ".")
    for notes in missing:
        for model, why in notes.items():
            out.append(f"**{model}**: incomplete: {why}")
    return out


def record_headlines(models: list[str], table: pd.DataFrame, correlations: pd.DataFrame) -> None:
    """Per model on the suite index: its mean ALF gain over CLS-last and its ρ(shift, relative depth),
    each with its interval and n, or why it could not be computed."""
    from .. import report

    def record(name: str, row: pd.Series | None, n: int, **kw) -> None:
        """One headline from one row of a table (value, interval), or its ``why`` when there is none."""
        report.headline(
            name,
            float(row["value"]) if row is not None else float("nan"),
            ci=(row["ci_low"], row["ci_high"]) if row is not None else None,
            n=f"{n} datasets",
            **kw,
        )

    for model in models:
        alf = (
            table[(table["model"] == model) & (table["method"] == HEADLINE_METHOD)]
            if not table.empty
            else table
        )
        r = alf.iloc[0] if not alf.empty else None
        record(
            f"mean_alf_gain.{model_folder(model)}",
            r,
            r["n_datasets"] if r is not None else 0,
            label=f"{model}: mean ALF gain over CLS-last",
            fmt="+.3f",
            why="notebook 04 wrote no gains for this model",
        )
        rho = correlations[(correlations["model"] == model) & (correlations["metric"] == DEPTH)]
        c = rho.iloc[0] if not rho.empty else None
        n = int(c["n_datasets"]) if c is not None else 0
        record(
            f"rho_shift_depth.{model_folder(model)}",
            c,
            n,
            label=f"{model}: Spearman ρ(shift, relative depth)",
            fmt="+.2f",
            why=spearman_why(n),
        )
