"""The per-(site, layer, pool) shift table of a reference/target feature-store pair.

For every feature key present in both stores, ``shift_table`` draws the same ``n`` images from each
side (equal sample sizes, one seeded draw shared by all keys so layers stay comparable), computes
each measure and a percentile bootstrap interval, and returns one tidy row per key × measure.

Bootstrap: ``n_boot`` resamples of the rows of both sides (with replacement), shared by all keys.
FD and MMD are recomputed on each resample from the pooled Gram matrix (O(n²) plus one n × n
eigenvalue problem for FD, no new features); the domain classifier is not refit: its held-out
correctness is resampled (the interval covers evaluation noise, not refitting noise). Intervals
are percentile intervals; for FD the resampled values are first shifted by their mean bias
(mean − point estimate), because a resample holds only ~63% distinct rows and FD grows as the
number of distinct rows falls (its ~d/n bias): unshifted, the interval would miss the estimate.
MMD resamples use a weighted U-statistic that skips duplicate pairs, so they need no shift. The default
``n_boot = 20`` keeps one table of ~300 keys at n = 300 under a minute on one CPU core; use ≥ 200
for publication-grade intervals.

One scale for ``mmd_rbf``: each key's RBF bandwidth σ is the median pairwise distance among that
key's *reference* rows (a seeded subsample of at most 1000 of all the reference store's rows, the
same for every target and every ``n``), never the target's. So every target measured against one
reference with one seed is scored with the same kernel, a target's score does not change when
other targets are added to or removed from a run, and a farther target cannot widen its own kernel.

Measures (``measure`` column): ``fd`` (:mod:`probekit.shift.frechet`), ``mmd_rbf`` and
``mmd_linear`` (:mod:`probekit.shift.mmd`), ``domain_acc`` and ``proxy_a``
(:mod:`probekit.shift.domain`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from probekit.device import resolve_device
from probekit.keys import FeatureKey, model_order, parse_key
from probekit.shift.backend import DEFAULT_DEVICE, as_f64, bootstrap_counts, percentile_ci
from probekit.shift.domain import cv_correct, proxy_a_distance
from probekit.shift.errors import ShiftInputError, SmallSampleWarning
from probekit.shift.frechet import frechet_resamples, use_gram_route
from probekit.shift.gram import PairGram
from probekit.shift.mmd import BANDWIDTH_POINTS, mmd2_resamples, reference_bandwidth

MEASURES: tuple[str, ...] = ("fd", "mmd_rbf", "mmd_linear", "domain_acc", "proxy_a")
COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "reference",
    "site",
    "layer",
    "pool",
    "measure",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "dim",
)


def shift_keys(reference: Mapping[str, np.ndarray], target: Mapping[str, np.ndarray]) -> list[str]:
    """Feature keys present in both stores, token-level (``/tokens``) keys excluded, in depth order."""
    common = []
    for key in reference:
        if key not in target:
            continue
        try:
            parsed = parse_key(key)
        except ValueError:
            continue  # labels, metadata: not a feature key
        if parsed.pool != "tokens":
            common.append(parsed)
    return [str(k) for k in sorted(common, key=_order)]


def _order(k: FeatureKey) -> tuple:
    return (*model_order(k.site, k.block), k.pool)


def _rows_of(store: Mapping[str, np.ndarray], keys: Sequence[str], side: str) -> int:
    counts = {len(store[k]) for k in keys}
    if len(counts) != 1:
        raise ShiftInputError(
            f"{side} store has keys with different row counts {sorted(counts)}; "
            "re-extract it so every key covers the same images"
        )
    return counts.pop()


def _take(store: Mapping[str, np.ndarray], key: str, idx: np.ndarray, dev: torch.device) -> torch.Tensor:
    arr = store[key]
    if np.ndim(arr) != 2:
        raise ShiftInputError(
            f"key {key!r} has shape {np.shape(arr)}; shift measures need pooled (N, D) features"
        )
    return as_f64(np.asarray(arr[idx]), dev, key)


_BANDWIDTHS: dict[tuple[str, str, str], float] = {}


def _bandwidth(reference: Mapping[str, np.ndarray], key: str, idx: np.ndarray, dev: torch.device) -> float:
    """The reference's RBF bandwidth for ``key``, computed once per process for a feature store
    (content-addressed, so its path names its contents): every target measured against the same
    reference shares it."""
    path = getattr(reference, "path", None)
    tag = None if path is None else (str(path), key, hashlib.sha256(idx.tobytes()).hexdigest())
    if tag is not None and tag in _BANDWIDTHS:
        return _BANDWIDTHS[tag]
    sigma = reference_bandwidth(_take(reference, key, idx, dev))
    if tag is not None:
        _BANDWIDTHS[tag] = sigma
    return sigma


def shift_table(
    reference: Mapping[str, np.ndarray],
    target: Mapping[str, np.ndarray],
    *,
    depth: int,
    labels: Mapping[str, str],
    keys: Iterable[str] | None = None,
    measures: Sequence[str] = MEASURES,
    n: int | None = None,
    n_boot: int = 20,
    level: float = 0.95,
    seed: int = 0,
    folds: int = 5,
    device: str | torch.device | None = DEFAULT_DEVICE,
    progress: bool = True,
) -> pd.DataFrame:
    """Shift between ``reference`` and ``target`` features for every key × measure, with bootstrap CIs.

    ``reference`` and ``target`` map feature keys (``blocks.7.act/cls``) to (N, D) arrays, e.g.
    two :class:`~probekit.store.FeatureStore`. ``keys`` defaults to :func:`shift_keys`. ``n`` rows
    are drawn per side (default: the smaller store's N); ``depth`` is the model's block count (the
    ``norm`` site's layer); ``labels`` fills the ``model``, ``dataset`` and ``reference`` columns.
    ``measures`` is any subset of :data:`MEASURES`. Warns :class:`SmallSampleWarning` once when
    FD is measured with n < d. Returns columns :data:`COLUMNS`; deterministic for a given ``seed``.
    """
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ShiftInputError(f"unknown measures {unknown}; choose from {MEASURES}")
    missing = [c for c in ("model", "dataset", "reference") if c not in labels]
    if missing:
        raise ShiftInputError(
            f"labels needs {missing} (e.g. labels=dict(model=..., dataset=..., reference=...))"
        )
    keys = shift_keys(reference, target) if keys is None else list(keys)
    if not keys:
        raise ShiftInputError("the two stores share no pooled feature keys; extract the same sites and pools")
    absent = [k for k in keys if k not in reference or k not in target]
    if absent:
        raise ShiftInputError(f"keys missing from one of the stores: {absent[:5]}")
    n_ref, n_tgt = _rows_of(reference, keys, "reference"), _rows_of(target, keys, "target")
    n = min(n_ref, n_tgt) if n is None else int(n)
    if n > min(n_ref, n_tgt) or n < max(folds, 3):
        raise ShiftInputError(
            f"n = {n} rows per side must lie in [{max(folds, 3)}, {min(n_ref, n_tgt)}] "
            f"(reference has {n_ref}, target {n_tgt})"
        )
    rng = np.random.default_rng(seed)
    idx_ref = np.sort(rng.choice(n_ref, n, replace=False))
    idx_tgt = np.sort(rng.choice(n_tgt, n, replace=False))
    dev = resolve_device(device)
    ones = np.ones((1, n))
    w1 = torch.from_numpy(np.r_[ones, bootstrap_counts(n, n_boot, rng)]).to(dev)
    w2 = torch.from_numpy(np.r_[ones, bootstrap_counts(n, n_boot, rng)]).to(dev)
    cv_seed = int(rng.integers(2**31))
    # the RBF bandwidth's rows: from the reference alone, independent of the target and of n
    idx_bw = np.sort(
        np.random.default_rng([seed, 1]).choice(n_ref, min(n_ref, BANDWIDTH_POINTS), replace=False)
    )

    rows: list[dict] = []
    small: list[tuple[str, int]] = []
    iterator: Iterable[str] = keys
    if progress:
        from probekit.progress import progress_bar

        iterator = progress_bar(keys, desc=f"shift {labels['dataset']} vs {labels['reference']}", unit="key")
    for key in iterator:
        parsed = parse_key(key)
        x, y = _take(reference, key, idx_ref, dev), _take(target, key, idx_tgt, dev)
        dim = x.shape[1]
        gram = PairGram.of(x, y) if use_gram_route(n, n, dim) or "mmd_rbf" in measures else None
        stats: dict[str, np.ndarray] = {}
        if "fd" in measures:
            stats["fd"] = frechet_resamples(x, y, w1, w2, gram=gram)
            if n < dim:
                small.append((key, dim))
        if "mmd_rbf" in measures:
            sigma = _bandwidth(reference, key, idx_bw, dev)
            stats["mmd_rbf"] = mmd2_resamples(x, y, w1, w2, kernel="rbf", bandwidth=sigma, gram=gram)
        if "mmd_linear" in measures:
            stats["mmd_linear"] = mmd2_resamples(x, y, w1, w2, kernel="linear")
        if "domain_acc" in measures or "proxy_a" in measures:
            correct = cv_correct(x, y, folds=folds, seed=cv_seed)
            wc = torch.cat([w1, w2], dim=1).cpu().numpy()
            acc = wc @ correct / (2 * n)
            if "domain_acc" in measures:
                stats["domain_acc"] = acc
            if "proxy_a" in measures:
                stats["proxy_a"] = proxy_a_distance(acc)
        for m in (m for m in MEASURES if m in stats):
            boot = stats[m][1:]
            if m == "fd":  # resamples hold ~0.63 n distinct rows: FD's n-dependent bias, removed
                boot = boot - (boot.mean() - stats[m][0])
            low, high = percentile_ci(boot, level)
            rows.append(
                {
                    "model": labels["model"],
                    "dataset": labels["dataset"],
                    "reference": labels["reference"],
                    "site": parsed.site,
                    "layer": parsed.layer(depth),
                    "pool": parsed.pool,
                    "measure": m,
                    "value": float(stats[m][0]),
                    "ci_low": low,
                    "ci_high": high,
                    "n": n,
                    "dim": dim,
                }
            )
    if small:
        dims = sorted({d for _, d in small})
        warnings.warn(
            f"Fréchet distance measured with n = {n} images per side on {len(small)} keys of dimension "
            f"{dims} (e.g. {small[0][0]}): n < d, so FD is biased upwards (~d/n); compare FDs only at "
            f"equal n and d, or raise n above {max(dims)}",
            SmallSampleWarning,
            stacklevel=2,
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))
