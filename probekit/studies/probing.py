"""Notebooks 02 and 03: linear probes on every (site, layer, pool) of every dataset, and summaries.

:func:`probe_study` trains every probe of every dataset with the batched trainer (regularisation
chosen on a validation split, refit, scored on the test split) and keeps each probe's test
predictions, so gaps between two probes get paired bootstrap intervals. The summaries answer
paper 1's questions from that table: the best layer against the last one, the best site against
the block output, paper 1's per-site table, and which site wins under weak and strong shift.

Feature keys that are the same for every image (``embed/cls``, ``blocks.0.ln1/cls``: the class
token before any attention) are flagged in the table (column ``constant``) and never chosen as a
best layer or site: their probe can only predict the majority class.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import cached
from ..keys import BLOCK_SITES, make_key
from ..metrics import paired_bootstrap_diff, spearman_ci
from ..models import Backbone
from ..pipeline import per_class_cap, split_features
from ..probes.linear import DEFAULT_CS, check_grid, fit_linear_probes
from ..report import read_table
from ..sites import resolve_sites
from .datasets import check_inputs
from .shift import NOTEBOOK as SHIFT_NOTEBOOK
from .shift import SCORE_POOL, SCORE_SITE, SHIFT_TABLE

# The tables notebooks 02 and 03 write (``<results_dir>/<name>.csv``); notebooks 04 and 05 read some.
LAYERWISE_NOTEBOOK, MODULEWISE_NOTEBOOK = "02_layerwise_probing", "03_modulewise_probing"
PROBES_TABLE = "probes"  # 02: every probe
LAYERWISE_BEST_TABLE = "layerwise_best"  # 02: each dataset's best layer
MODULEWISE_TABLE = "modulewise"  # 03: every probe
MODULEWISE_BEST_TABLE = "modulewise_best"  # 03: each dataset's best site
MODULEWISE_SITES_TABLE = "modulewise_sites"  # 03: each site's best layer, per dataset

BLOCK_OUTPUT = "resid_post"  # paper 1's "layer": the block output (RC2)

# How probes are trained and how "best" is chosen:
#   validated: C chosen per probe on a stratified validation split, refit on train+val; the best
#              layer / site is chosen by validation accuracy and then scored on the test split.
#   paper1:    paper 1 literally: training features extracted once through its train transform
#              (RandomResizedCrop + flip, seeded per image), test features through Resize + CenterCrop,
#              both ImageNet-normalised; the 512-image training loader's drop_last; C = 1, no
#              validation; the best layer / site is the maximum of test accuracy, as in the paper's
#              tables (optimistic: chosen on the test split). What still differs is listed by
#              :func:`paper1_deviations`.
PROTOCOLS = {"validated": None, "paper1": {"Cs": (1.0,), "val_fraction": 0.0}}
PAPER1_MODEL = "vit_base_patch16_224.orig_in21k"
PAPER1_DATASETS = {"cifar10", "cifar100", "pets", "flowers102", "domainnet:clipart", "domainnet:sketch"} | {
    f"cifar10c:{c}@5" for c in ("contrast", "gaussian_noise", "motion_blur", "snow", "speckle_noise")
}
CONSTANT_RTOL = 1e-3  # a key whose spread over images is within float16 rounding of its size is constant


def protocol_settings(
    protocol: str, Cs: Sequence[float], val_fraction: float
) -> tuple[tuple[float, ...], float]:
    """The (Cs, val_fraction) a protocol trains with; errors list the protocols."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    fixed = PROTOCOLS[protocol]
    if fixed:
        return tuple(fixed["Cs"]), fixed["val_fraction"]
    cs, val_fraction = check_grid(Cs, val_fraction)
    return tuple(cs), val_fraction


def train_rows(n: int, protocol: str, seed: int) -> np.ndarray | None:
    """Training rows a protocol keeps: paper 1's ``drop_last`` on its 512-image loader, else all (None)."""
    if protocol != "paper1":
        return None
    from ..data.paper1_views import drop_last_rows

    rows = drop_last_rows(n, seed)
    return None if len(rows) == n else rows


class RowSubset(Mapping):
    """Some rows of a feature store, read key by key (nothing is loaded until a key is asked for)."""

    def __init__(self, store: Mapping[str, np.ndarray], rows: np.ndarray) -> None:
        self.store, self.rows = store, np.asarray(rows)

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(self.store[key])[self.rows]

    def __iter__(self):
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)


def constant_keys(
    features: Mapping[str, np.ndarray], keys: Sequence[str], rtol: float = CONSTANT_RTOL
) -> list[str]:
    """Keys whose features are the same for every image (up to float16 rounding): nothing to learn from.

    A key is constant when, in every dimension, the spread over images is at most ``rtol`` times
    the key's largest absolute value (``embed/cls`` and ``blocks.0.ln1/cls`` are exactly constant:
    the class token before any attention).
    """
    out = []
    for key in keys:
        x = np.asarray(features[key], dtype=np.float32)
        if len(x) < 2:
            continue
        scale = float(np.abs(x).max())
        if float(np.ptp(x, axis=0).max()) <= rtol * scale:
            out.append(key)
    return out


def paper1_deviations(
    model: str,
    image_size: int | None,
    datasets: Sequence[str],
    images_per_class: int,
    *,
    pool: str = "mean",
    seed: int = 42,
) -> list[str]:
    """What a ``protocol="paper1"`` run still does differently from paper 1, one sentence each (for run info).

    ``model`` and ``image_size`` as the notebook's parameters give them (0 or None: the default size);
    ``pool`` is the pooling compared, ``seed`` the run's seed.
    """
    from ..data.paper1_views import TRAIN_BATCH
    from ..models import default_image_size

    out = []
    if model != PAPER1_MODEL:
        out.append(
            f"model: {model} (paper 1 probes ViT-B/16 pretrained on ImageNet-21k, timm {PAPER1_MODEL})"
        )
    else:
        out.append("model: timm's LayerNorm eps is 1e-6, paper 1's own ViT uses 1e-12")
    size = image_size or default_image_size(model)
    if size is None and "_224" not in model:
        out.append("resolution: the model's default input size (paper 1: 224 px)")
    elif size is not None and size != 224:
        out.append(f"resolution: {size} px crops (paper 1: 224 px)")
    others = [d for d in datasets if d not in PAPER1_DATASETS]
    if others:
        out.append(
            f"datasets: {', '.join(others)} are not paper 1's (CIFAR-10/100, Pets, Flowers102, CIFAR-10-C "
            "severity 5, DomainNet clipart/sketch)"
        )
    if any("+" in d for d in datasets):
        out.append(
            "corruptions: +<family>@<severity> ids are made by probekit's own implementation of the "
            "CIFAR-10-C / ImageNet-C recipes, not read from the released files (cifar10c:<family>@5)"
        )
    out.append(
        "splits: the probe trains on a seeded, stratified 80 % of the training part (paper 1: torch's "
        "random_split with seed 42, so other images), and datasets without an official or paper-1 split "
        "use probekit's stratified 60/20/20"
    )
    if pool != "mean":
        out.append(f"pooling: {pool} (paper 1: the mean of all tokens, CLS included)")
    if seed != 42:
        out.append(f"seed: {seed} for splits and crops (paper 1: 42)")
    if images_per_class:
        out.append(
            f"images: at most {images_per_class} per class and split (paper 1 uses every image; "
            "set images_per_class = 0)"
        )
    out.append(
        f"drop_last: the paper's shuffled {TRAIN_BATCH}-image training loader drops the last partial batch; "
        f"here a seeded random n mod {TRAIN_BATCH} training images are left out, and nothing when there "
        f"are fewer than {TRAIN_BATCH} (the paper's loader would then yield no batch)"
    )
    out.append(
        "solver: the batched L-BFGS solver of the same objective (C = 1, multinomial, StandardScaler after "
        "per-sample L2), not scikit-learn's lbfgs with max_iter=5000; they agree to the solver tolerance"
    )
    out.append(
        "random crops: drawn with numpy per image (seed, sample key), not torch's global generator, so "
        "the crops are not the paper's own draws (seed 42)"
    )
    return out


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
    ``images_per_class``: the cap per class and split; 0 takes every image. ``protocol``: see
    :data:`PROTOCOLS` (``paper1`` overrides ``Cs`` and ``val_fraction``, and extracts its own
    train/test views). The table gets ``constant`` (the key is the same for every training image),
    ``n_train`` and ``n_test``. Datasets with one class, or a class under two images in a split,
    fail before any extraction (:class:`probekit.pipeline.TooFewImagesError`).
    """
    Cs, val_fraction = protocol_settings(protocol, Cs, val_fraction)
    check_inputs(backbone, datasets, probe_sites or sites, probe_pools or pools)
    view = "paper1" if protocol == "paper1" else "eval"
    tables, y_test, preds = [], {}, {}
    for dataset in datasets:
        sf = split_features(
            backbone,
            dataset,
            max_per_class=per_class_cap(images_per_class),
            seed=seed,
            sites=sites,
            pools=pools,
            view=view,
            progress=progress,
        )
        wanted = resolve_sites(backbone.model, sites=probe_sites or sites, pools=probe_pools or pools)
        keys = [k for k in wanted if not k.endswith("/tokens")]
        labels = {"model": backbone.name, "dataset": dataset}
        rows = train_rows(len(sf.train.labels), protocol, seed)

        def fit(sf=sf, keys=keys, labels=labels, rows=rows) -> tuple[pd.DataFrame, dict]:
            preds: dict[str, np.ndarray] = {}
            train = sf.train if rows is None else RowSubset(sf.train, rows)
            y_train = sf.labels("train") if rows is None else sf.labels("train")[rows]
            table = fit_linear_probes(
                train,
                y_train,
                sf.test,
                sf.labels("test"),
                depth=backbone.depth,
                keys=keys,
                Cs=Cs,
                val_fraction=val_fraction,
                seed=seed,
                labels=labels,
                predictions=preds,
                progress=progress,
            )
            table["constant"] = table["key"].isin(constant_keys(train, keys))
            table["n_train"] = len(y_train)
            table["n_test"] = len(sf.labels("test"))
            return table, preds

        inputs = {
            "train": sf.train.path.name,
            "test": sf.test.path.name,
            "keys": keys,
            "Cs": list(Cs),
            "val_fraction": val_fraction,
            "seed": seed,
            "labels": labels,
            "train_rows": None if rows is None else f"drop_last {len(rows)}",
        }
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
    ``prefer`` (the null: the last layer, or the block output), then to the deeper layer. Constant
    keys (column ``constant``) are never chosen, unless every candidate is constant.
    """
    if "constant" in grp and not grp["constant"].all():
        grp = grp[~grp["constant"].astype(bool)]
    if study.protocol == "validated":
        t = study.table
        val = t[
            (t["split"] == "val") & (t["metric"] == "accuracy") & (t["dataset"] == grp["dataset"].iloc[0])
        ]
        chosen = grp[["key", "regularisation"]].merge(val, on=["key", "regularisation"], how="left")
        score = pd.Series(chosen["value"].to_numpy(), index=grp.index)
    else:
        score = grp["value"]
    top = grp[score >= score.max() - 1e-12]
    if prefer in set(top["key"]):
        return top[top["key"] == prefer].iloc[0]
    return top.sort_values("layer").iloc[-1]


def _paired(
    study: ProbeStudy, dataset: str, key_a: str, key_b: str, metric: str, seed: int
) -> tuple[float, float, float]:
    p = study.predictions[dataset]
    return paired_bootstrap_diff(study.y_test[dataset], p[key_a], p[key_b], metric, seed=seed)


def best_vs_last(
    study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0
) -> pd.DataFrame:
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
        out.append(
            {
                "model": best["model"],
                "dataset": dataset,
                "site": best["site"],
                "layer": int(best["layer"]),
                "pool": pool,
                "metric": f"{metric}_gap_best_minus_last",
                "value": gap,
                "ci_low": lo,
                "ci_high": hi,
                "best_key": best["key"],
                "best_value": best["value"],
                "last_value": last["value"],
                "relative_depth": int(best["layer"]) / study.depth,
                "norm_value": norm.get(dataset, np.nan),
                "protocol": study.protocol,
            }
        )
    return pd.DataFrame(out)


def best_sites(
    study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy", seed: int = 0
) -> pd.DataFrame:
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
        out.append(
            {
                "model": best["model"],
                "dataset": dataset,
                "site": best["site"],
                "layer": int(best["layer"]),
                "pool": pool,
                "metric": f"{metric}_gain_over_block_output",
                "value": gain,
                "ci_low": lo,
                "ci_high": hi,
                "best_key": best["key"],
                "best_value": best["value"],
                "block_output_key": ref["key"],
                "block_output_value": ref["value"],
                "protocol": study.protocol,
            }
        )
    return pd.DataFrame(out)


def site_summary(study: ProbeStudy, *, pool: str = "mean", metric: str = "accuracy") -> pd.DataFrame:
    """Paper 1's table: per dataset and site, the best layer's test accuracy (then averaged over datasets).

    The best layer of each site is chosen as :func:`_choose` says (ties go to the deeper layer).
    """
    rows = study.test_rows(metric)
    rows = rows[(rows["pool"] == pool) & rows["site"].isin(BLOCK_SITES)]
    last = {site: make_key(site, study.depth - 1, pool) for site in BLOCK_SITES}
    picked = [
        _choose(study, grp, "accuracy", last[site]) for (_, site), grp in rows.groupby(["dataset", "site"])
    ]
    cols = ["model", "dataset", "site", "layer", "pool", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(picked)[cols].reset_index(drop=True)


SHIFT_MEASURE = "mmd_rbf"  # unbiased, so comparable across datasets of different sizes


def shift_scores(
    results_dir: str | Path, *, measure: str = SHIFT_MEASURE, model: str | None = None
) -> pd.DataFrame:
    """Per dataset, the last-layer shift from notebook 01's table (:data:`~probekit.studies.shift.SHIFT_TABLE`).

    ``model`` keeps only that model's rows (a results folder may hold several models' runs). A
    missing table is a :class:`~probekit.errors.MissingTableError` that says to run notebook 01.
    """
    t = read_table(SHIFT_TABLE, results_dir, notebook=SHIFT_NOTEBOOK)
    if measure not in set(t["measure"]):
        path = Path(results_dir) / f"{SHIFT_TABLE}.csv"
        raise ValueError(f"shift measure {measure!r} is not in {path}; it has {sorted(set(t['measure']))}")
    if model is not None:
        t = t[t["model"] == model]
    t = t[(t["measure"] == measure) & (t["site"] == SCORE_SITE) & (t["pool"] == SCORE_POOL)]
    return t.rename(columns={"value": "shift", "ci_low": "shift_low", "ci_high": "shift_high"})[
        ["dataset", "shift", "shift_low", "shift_high"]
    ]


def against_shift(
    per_dataset: pd.DataFrame, shifts: pd.DataFrame, column: str, *, seed: int = 0
) -> tuple[pd.DataFrame, tuple[float, float, float]]:
    """Join a per-dataset result with the shift scores; Spearman's rho of ``column`` with shift."""
    joined = per_dataset.merge(shifts, on="dataset", how="inner")
    unmatched = sorted(set(per_dataset["dataset"]) - set(joined["dataset"]))
    if unmatched and not shifts.empty:
        warnings.warn(
            f"no shift measured for {unmatched}: left out of the correlation (run notebook 01 on them)",
            stacklevel=2,
        )
    if joined.empty:
        return joined, (float("nan"),) * 3
    return joined, spearman_ci(joined["shift"], joined[column], seed=seed)


def shift_groups(joined: pd.DataFrame) -> np.ndarray:
    """Each row's shift group: "strong shift" above the median shift over datasets, else "weak shift"."""
    median = joined.drop_duplicates("dataset")["shift"].median()
    return np.where(joined["shift"] > median, "strong shift", "weak shift")


def weak_vs_strong(summary: pd.DataFrame, shifts: pd.DataFrame) -> pd.DataFrame:
    """Datasets split at the median shift; per group, each site's mean best-layer accuracy, best first."""
    joined = summary.merge(shifts, on="dataset", how="inner")
    if joined.empty:
        return pd.DataFrame(columns=["shift group", "site", "value", "datasets"])
    joined["shift group"] = shift_groups(joined)
    out = (
        joined.groupby(["shift group", "site"])
        .agg(value=("value", "mean"), datasets=("dataset", "nunique"))
        .reset_index()
        .sort_values(["shift group", "value"], ascending=[True, False])
    )
    return out


def site_gap_by_shift(
    summary: pd.DataFrame, shifts: pd.DataFrame, site: str = "act", versus: str = "ln2", *, seed: int = 0
) -> pd.DataFrame:
    """Paper 1's module finding with its uncertainty: per shift group (split at the median shift as in
    :func:`weak_vs_strong`), the mean over datasets of ``site``'s best-layer accuracy minus ``versus``'s
    (paired by dataset), with a percentile bootstrap interval over the datasets of the group."""
    columns = ["shift group", "site", "versus", "value", "ci_low", "ci_high", "datasets"]
    joined = summary.merge(shifts, on="dataset", how="inner")
    wide = joined.pivot_table(index="dataset", columns="site", values="value")
    if joined.empty or site not in wide or versus not in wide:
        return pd.DataFrame(columns=columns)
    from ..headlines import mean_ci

    per_dataset = joined.drop_duplicates("dataset")
    group_of = pd.Series(shift_groups(per_dataset), index=per_dataset["dataset"])
    gap = (wide[site] - wide[versus]).dropna()
    rows = []
    for group in ("weak shift", "strong shift"):
        values = gap[group_of.reindex(gap.index) == group]
        mean, low, high = mean_ci(values.to_numpy(), seed=seed)
        rows.append([group, site, versus, mean, low, high, len(values)])
    return pd.DataFrame(rows, columns=columns)


def record_site_gaps(gaps: pd.DataFrame) -> None:
    """Each row of :func:`site_gap_by_shift` as a headline: value, interval, n, or why there is none."""
    from .. import report

    for row in gaps.itertuples(index=False):
        group = row[0]
        report.headline(
            f"{row.site}_minus_{row.versus}_{group.split()[0]}_shift",
            row.value,
            label=f"{row.site} − {row.versus} best-layer accuracy, {group}",
            fmt="+.3f",
            ci=(row.ci_low, row.ci_high),
            n=f"{row.datasets} datasets",
            why="no dataset in this group has both sites",
        )


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
            parts.append(
                f"under {group} ({n} datasets) no site wins: {', '.join(tied)} tie at a mean best-layer "
                f"accuracy of {top['value']:.3f}"
            )
            continue
        runner = grp.iloc[1] if len(grp) > 1 else None
        lead = f", ahead of {runner['site']} ({runner['value']:.3f})" if runner is not None else ""
        parts.append(
            f"under {group} ({n} datasets) {top['site']} is best with a mean best-layer accuracy of "
            f"{top['value']:.3f}{lead}"
        )
    text = "; ".join(parts)
    return (
        text[0].upper() + text[1:] + ". Differences of a point or two are within the per-dataset intervals."
    )


def record_rho(name: str, label: str, joined: pd.DataFrame, stats: tuple[float, float, float]) -> float:
    """A Spearman rho from :func:`against_shift` as a headline: with its interval and n, or why it is missing."""
    from .. import report
    from ..headlines import spearman_why

    rho, lo, hi = stats
    why = None if np.isfinite(rho) else spearman_why(len(joined))
    return report.headline(
        name, rho, label=label, fmt="+.2f", ci=(lo, hi), n=f"{len(joined)} datasets", why=why
    )


def record_median(
    name: str, label: str, per_dataset: pd.DataFrame, *, fmt: str = "+.3f", seed: int = 0
) -> float:
    """The median of ``per_dataset["value"]`` over datasets as a headline, with a bootstrap interval over datasets."""
    from .. import report
    from ..headlines import median_ci

    values = per_dataset["value"].dropna()
    median, lo, hi = median_ci(values, seed=seed)
    return report.headline(
        name,
        median,
        label=label,
        fmt=fmt,
        ci=(lo, hi),
        n=f"{len(values)} datasets",
        why="no dataset has a value",
    )


def constant_text(study: ProbeStudy) -> str:
    """Which probed keys are the same for every image (left out of every best-layer and best-site choice)."""
    t = study.table
    if "constant" not in t or not t["constant"].any():
        return "No probed feature key is constant over the images."
    keys = sorted(set(t.loc[t["constant"].astype(bool), "key"]))
    return (
        f"{len(keys)} feature key(s) are the same for every image and are left out of every best-layer and "
        f"best-site choice (their probe can only predict the majority class): {', '.join(keys)}."
    )


def protocol_deviations(
    protocol: str,
    model: str,
    image_size: int | None,
    datasets: Sequence[str],
    images_per_class: int,
    *,
    pool: str = "mean",
    seed: int = 0,
) -> list[str]:
    """:func:`paper1_deviations` under ``protocol="paper1"``; an empty list under any other protocol."""
    protocol_settings(protocol, DEFAULT_CS, 0.2)  # an unknown protocol fails here, listing the known ones
    if protocol != "paper1":
        return []
    return paper1_deviations(model, image_size, datasets, images_per_class, pool=pool, seed=seed)


def deviations_text(deviations: Sequence[str]) -> str:
    """The paper-1 deviations as a markdown list under a heading ("" when there are none)."""
    if not deviations:
        return ""
    return "**Deviations from paper 1 in this run** (everything else follows it):\n\n" + "\n".join(
        f"- {d}" for d in deviations
    )
