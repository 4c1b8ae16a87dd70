"""Notebook 01: how far each dataset is from the pretraining stand-in, at every layer and site.

The shift of a dataset is measured between its features and those of a reference set (the
offline photo crops, or a user folder such as ImageNet val), per (site, layer, pool), with
bootstrap intervals. The corruption dial applies each corruption family at rising severity to
one dataset and measures each severity against the clean version of that same dataset: the
shift the corruption alone introduces, which must grow with severity.

One scale: MMD² (RBF) takes each key's bandwidth from the reference set alone (the median
pairwise distance among its features, :func:`probekit.shift.mmd.reference_bandwidth`), so all
datasets measured against one reference share one kernel per key and a dataset's score does not
depend on which other datasets are in the run. The last-layer MMD² (:data:`SCORE_SITE`,
:data:`SCORE_POOL`) is the per-dataset shift score the later notebooks read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ..cache import cached
from ..data import load_dataset, reference_set
from ..models import Backbone
from ..pipeline import dataset_features
from ..shift import MEASURES, ShiftInputError, SmallSampleWarning, shift_table
from ..shift.backend import DEFAULT_DEVICE
from ..sites import resolve_sites
from .datasets import base_and_corruption, corrupted_ids, load_all

# The per-dataset scalar later notebooks relate to probe results: the shift at the last layer.
SCORE_SITE, SCORE_POOL = "norm", "mean"

# The tables notebook 01 writes (``<results_dir>/<name>.csv``) and later notebooks read.
NOTEBOOK = "01_distribution_shift"
SHIFT_TABLE = "shift"  # every dataset against the reference
DIAL_TABLE = "shift_dial"  # the corruption dial


def _as_dataset(ds: Any) -> Any:
    return load_dataset(ds) if isinstance(ds, str) else ds


def _name(ds: Any) -> str:
    return str(getattr(ds, "id", None) or getattr(ds, "name", None) or type(ds).__name__)


def measure_shift(
    backbone: Backbone,
    reference: Any,
    targets: Any | Sequence[Any],
    *,
    sites: Iterable[str] | None = None,
    pools: Sequence[str] = ("cls", "ap", "mean"),
    layers: Iterable[int] | None = None,
    measures: Sequence[str] = MEASURES,
    n: int | None = None,
    n_boot: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
    measure_device: str | torch.device = DEFAULT_DEVICE,
    extract_kw: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Shift of each target dataset from ``reference`` at every (site, layer, pool), with CIs.

    ``backbone`` is a :func:`probekit.models.load_model` result; ``reference`` and ``targets`` are
    datasets (``ds[i] -> (PIL image, label)`` with ``.id``) or dataset ids, whose feature stores
    come through :func:`probekit.pipeline.dataset_features` (cached by content hash, so a second
    call only measures). ``sites``, ``pools``, ``layers`` choose the keys as in
    :func:`probekit.extract.extract` (``tokens`` pools are skipped), ``extract_kw`` passes more
    (``batch_size``, ``root``, ...). Every image of each dataset is extracted (size them with
    ``max_per_class`` or ``reference_set(n=...)``); ``n`` images per side are then drawn at random
    for the measures (default: the smaller dataset). ``device`` is where extraction runs
    (:func:`probekit.device.resolve_device`), ``measure_device`` where the float64 measures run
    (the CPU unless asked). Other arguments go to :func:`~probekit.shift.shift_table`. Returns the
    concatenated tidy tables.
    """
    kw = dict(extract_kw or {})
    kw.setdefault("progress", progress)
    if device is not None:
        kw.setdefault("device", device)
    pools = [p for p in pools if p != "tokens"]
    if not pools:
        raise ShiftInputError("shift measures need pooled features: pass pools from ('cls', 'ap', 'mean')")
    many = isinstance(targets, (list, tuple))
    target_list = [_as_dataset(t) for t in (targets if many else [targets])]
    reference = _as_dataset(reference)
    ref_store = dataset_features(backbone, reference, sites=sites, pools=pools, layers=layers, **kw)
    keys = [
        k
        for k in resolve_sites(backbone.model, sites=sites, pools=pools, layers=layers)
        if not k.endswith("/tokens")
    ]
    tables = []
    for target in target_list:
        tgt_store = dataset_features(backbone, target, sites=sites, pools=pools, layers=layers, **kw)
        labels = {"model": str(backbone.name), "dataset": _name(target), "reference": _name(reference)}
        tables.append(
            shift_table(
                ref_store,
                tgt_store,
                keys=keys,
                depth=int(backbone.depth),
                labels=labels,
                measures=measures,
                n=n,
                n_boot=n_boot,
                seed=seed,
                device=measure_device,
                progress=progress,
            )
        )
    return pd.concat(tables, ignore_index=True)


def _per_target(backbone: Backbone, reference, targets: list, kw: dict) -> pd.DataFrame:
    """``measure_shift`` one target at a time, each result cached by what determines it."""
    tables = []
    for target in targets:
        inputs = dict(
            model=backbone.identity(),
            reference=reference.identity(),
            target=target.identity(),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
        )
        tables.append(
            cached("shift", inputs, lambda target=target: measure_shift(backbone, reference, [target], **kw))
        )
    return pd.concat(tables, ignore_index=True)


def _measure_quietly(run: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Run a measurement, folding the per-pair small-sample warnings into one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        table = run()
    small = [w for w in caught if issubclass(w.category, SmallSampleWarning)]
    for w in caught:
        if w not in small:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    fd = (
        table[(table["measure"] == "fd") & (table["n"] < table["dim"])]
        if "fd" in set(table["measure"])
        else table[:0]
    )
    if len(fd):  # from the table, so a cached result warns too
        warnings.warn(
            SmallSampleWarning(
                f"Fréchet distance measured with fewer images than dimensions for {fd['dataset'].nunique()} dataset(s) "
                f"(n = {int(fd['n'].min())} to {int(fd['n'].max())} per side, d up to {int(fd['dim'].max())}): FD is "
                "biased upwards there, so compare FD only at equal n, or read MMD², which is unbiased."
            ),
            stacklevel=3,
        )
    return table


def _tidy(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["metric"] = table["measure"]
    parts = [base_and_corruption(d) for d in table["dataset"]]
    table["base"] = [p[0] for p in parts]
    table["corruption"] = [p[1] for p in parts]
    table["severity"] = [p[2] for p in parts]
    return table


def shift_study(
    backbone: Backbone,
    datasets: Sequence[str],
    *,
    reference_folder: str | None = None,
    reference_images: int = 300,
    images_per_class: int = 40,
    n: int | None = None,
    sites: Sequence[str] | None = None,
    pools: Sequence[str] = ("cls", "ap", "mean"),
    measures: Sequence[str] = ("fd", "mmd_rbf", "mmd_linear", "domain_acc", "proxy_a"),
    n_boot: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Shift of every dataset (training split, ``images_per_class`` per class) from the reference.

    Each pair uses ``n`` images per side (default: as many as the smaller side has). MMD² is
    unbiased, so it compares datasets of different sizes; FD is biased upwards at small n.
    """
    reference = reference_set(n=reference_images, seed=seed, folder=reference_folder)
    targets = load_all(datasets, split="train", max_per_class=images_per_class, seed=seed)
    table = _measure_quietly(
        lambda: _per_target(
            backbone,
            reference,
            targets,
            {"sites": sites, "pools": pools, "measures": measures, "n": n, "n_boot": n_boot, "seed": seed},
        )
    )
    return _tidy(table)


def corruption_dial(
    backbone: Backbone,
    base: str,
    *,
    families: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 3, 5),
    images_per_class: int = 40,
    sites: Sequence[str] | None = ("resid_post", "norm"),
    pools: Sequence[str] = ("cls", "ap", "mean"),
    measures: Sequence[str] = ("fd", "mmd_rbf"),
    n_boot: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Shift of ``base`` corrupted at each family × severity from clean ``base``, per layer.

    The clean images are the reference: their features fix the RBF bandwidth, so every family
    and severity is scored on one scale. Corruptions run at their parameters' working scale
    (:mod:`probekit.data.corruptions`).
    """
    from ..data import CORRUPTIONS

    ids = corrupted_ids(base, families or CORRUPTIONS, severities)
    clean = load_all([base], split="train", max_per_class=images_per_class, seed=seed)[0]
    targets = load_all(ids, split="train", max_per_class=images_per_class, seed=seed)
    table = _measure_quietly(
        lambda: _per_target(
            backbone,
            clean,
            targets,
            {"sites": sites, "pools": pools, "measures": measures, "n_boot": n_boot, "seed": seed},
        )
    )
    return _tidy(table)


def last_layer(
    table: pd.DataFrame, measure: str = "mmd_rbf", site: str = SCORE_SITE, pool: str = SCORE_POOL
) -> pd.DataFrame:
    """One row per dataset: the shift at the final layer, ranked from nearest to farthest."""
    rows = table[(table["measure"] == measure) & (table["site"] == site) & (table["pool"] == pool)]
    return rows.sort_values("value").reset_index(drop=True)


def dial_is_monotone(
    dial: pd.DataFrame, measure: str = "mmd_rbf", site: str = SCORE_SITE, pool: str = SCORE_POOL
) -> pd.DataFrame:
    """Per corruption family: the shift at each severity and whether it rises with severity."""
    rows = dial[(dial["measure"] == measure) & (dial["site"] == site) & (dial["pool"] == pool)]
    out = []
    for family, grp in rows.groupby("corruption"):
        grp = grp.sort_values("severity")
        values = grp["value"].to_numpy()
        out.append(
            {
                "corruption": family,
                **{f"severity {s}": v for s, v in zip(grp["severity"], values)},
                "rises": bool((values[1:] > values[:-1]).all()),
            }
        )
    return pd.DataFrame(out)


def reading(ranked: pd.DataFrame, dial_check: pd.DataFrame | None = None, measure: str = "mmd_rbf") -> str:
    """A one-line plain-language reading of the measured shift."""
    if ranked.empty:
        return "No shift measured."
    near, far = ranked.iloc[0], ranked.iloc[-1]
    text = (
        f"At the last layer ({SCORE_SITE}/{SCORE_POOL}, {measure}, {int(near['n'])}+ images per side), {near['dataset']} is nearest to the "
        f"reference ({near['value']:.3g} [{near['ci_low']:.3g}, {near['ci_high']:.3g}]) and "
        f"{far['dataset']} farthest ({far['value']:.3g} [{far['ci_low']:.3g}, {far['ci_high']:.3g}])."
    )
    if dial_check is not None and not dial_check.empty:
        rising = int(dial_check["rises"].sum())
        text += f" The corruption dial rises with severity for {rising} of {len(dial_check)} families."
    return text
