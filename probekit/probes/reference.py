"""Paper 1's linear-probe recipe, literally, with scikit-learn: the reference the batched trainer is checked against.

Per feature key (paper 1: ``mean`` pooling over all tokens, CLS included; ``cls`` and ``ap`` on
request): per-sample L2 norm, then
``make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=42))``
fitted on the training features, test accuracy reported (papers.md §1.5: no hyper-parameter
search, no validation split). Probes are fitted one after another, as in paper 1's code.

Differences from the paper's loaders, left to the caller: paper 1 trains on the 80% "train"
part of its train/val split and its training loader drops the last partial batch of 512;
here the probe trains on exactly the rows it is given.

Public API::

    reference_probes(train, y_train, test, y_test, *, depth, keys=None, pool="mean", C=1.0,
                     max_iter=5000, seed=42, tol=1e-4, labels=None, metrics=..., n_boot=1000,
                     progress=True, class_weight=None) -> pandas.DataFrame   # trainer="sklearn", split="test"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probekit.keys import parse_key
from probekit.probes.linear import DEFAULT_METRICS, probe_keys
from probekit.probes.standardize import l2_rows
from probekit.probes.table import COLUMNS, probe_rows


def fit_reference(
    x_train: np.ndarray,
    y_train: np.ndarray,
    C: float = 1.0,
    max_iter: int = 5000,
    seed: int = 42,
    tol: float = 1e-4,
    class_weight: str | None = None,
):
    """One paper-1 probe: L2 rows, ``StandardScaler``, multinomial ``LogisticRegression``; returns the pipeline.

    ``tol=1e-4`` is scikit-learn's default (paper 1's setting). With fewer rows than dimensions and
    ``C`` well above 1 it stops far from the optimum (after 10-20 iterations; the test accuracy
    of that point can differ from the optimum's by several points); pass a small ``tol`` (1e-8)
    for the optimum itself.
    """
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=seed, class_weight=class_weight),
    )
    return clf.fit(l2_rows(x_train), y_train)


def reference_probes(
    train: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    depth: int,
    keys: Sequence[str] | None = None,
    pool: str | None = "mean",
    C: float | Sequence[float] = 1.0,
    max_iter: int = 5000,
    seed: int = 42,
    tol: float = 1e-4,
    labels: Mapping[str, object] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 1000,
    progress: bool = True,
    class_weight: str | None = None,
) -> pd.DataFrame:
    """Fit paper 1's probe for every key (of ``pool``, unless ``keys`` or ``pool=None``) and each ``C``.

    Returns the tidy table (:mod:`probekit.probes.table`) with ``trainer="sklearn"`` and
    ``split="test"`` rows. ``class_weight``: scikit-learn's (paper 1 uses none).
    """
    keys = probe_keys(train, test, keys)
    if pool is not None:
        keys = [k for k in keys if parse_key(k).pool == pool]
        if not keys:
            raise ValueError(f"no feature key with pool {pool!r}; pass pool=None or keys=[...]")
    Cs = [float(C)] if np.isscalar(C) else [float(c) for c in C]
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    jobs = [(k, c) for k in keys for c in Cs]
    if progress:
        from probekit.progress import progress_bar

        jobs = progress_bar(jobs, desc="sklearn reference probes", unit="probe")
    rows: list[dict] = []
    for key, c in jobs:
        clf = fit_reference(
            train[key], y_train, C=c, max_iter=max_iter, seed=seed, tol=tol, class_weight=class_weight
        )
        pred = clf.predict(l2_rows(test[key]))
        rows += probe_rows(
            key,
            depth=depth,
            labels=dict(labels or {}),
            trainer="sklearn",
            regularisation=c,
            split="test",
            y_true=y_test,
            y_pred=pred,
            metrics=metrics,
            n_boot=n_boot,
        )
    return pd.DataFrame(rows, columns=list(COLUMNS) + [c for c in rows[0] if c not in COLUMNS])
