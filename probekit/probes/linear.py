"""Layer-wise and module-wise linear probes: every (site, layer, pool, C) probe trained at once.

The default trainer. For each feature key (``blocks.7.act/mean``, ...) and each regularisation
value ``C`` it fits scikit-learn's multinomial L2 logistic regression objective with the
batched solver of :mod:`probekit.probes.softmax`, after paper 1's preprocessing (per-sample L2
norm, then per-feature standardising fitted on the training rows of that probe).

Protocol (``val_fraction > 0`` and more than one ``C``): hold out a stratified ``val_fraction`` of
the training rows (:func:`probekit.splits.stratified_split`), fit every ``C``, pick per key the
``C`` with the best validation accuracy (ties go to the smaller ``C``, the stronger penalty),
refit on train+val at that ``C``, score test. With ``val_fraction=0`` every ``C`` is fitted on
all training rows and scored on test (no selection); ``Cs=(1.0,), val_fraction=0`` is paper 1's
recipe run by the batched trainer.

Public API::

    DEFAULT_CS                      # 8 values, 10**-4 ... 10**3, one per decade (C=1 included)
    fit_linear_probes(train, y_train, test, y_test, *, depth, keys=None, Cs=DEFAULT_CS,
                      val_fraction=0.2, seed=0, device=None, labels=None, metrics=..., n_boot=1000,
                      max_iter=1000, tol=1e-4, memory_budget=None, progress=True) -> pandas.DataFrame

The result is the tidy table of :mod:`probekit.probes.table` with ``trainer="batched"``:
``split="val"`` rows (accuracy of every ``C``, no interval) and ``split="test"`` rows (accuracy
and balanced accuracy with bootstrap 95% intervals).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from probekit.keys import parse_key
from probekit.probes.softmax import fit_softmax
from probekit.probes.standardize import prepare
from probekit.probes.table import COLUMNS, base_row, probe_rows
from probekit.splits import stratified_split

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 3, 8))
DEFAULT_METRICS = ("accuracy", "balanced_accuracy")


def probe_keys(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], keys: Sequence[str] | None
) -> list[str]:
    """Keys to probe: the given ones (checked), else every pooled key present in both splits."""
    if keys is None:
        keys = [k for k in train if k in test and parse_key(k).pool != "tokens"]
    keys = list(keys)
    for k in keys:
        if parse_key(k).pool == "tokens":
            raise ValueError(f"{k!r}: linear probes need pooled features (cls, ap or mean), not tokens")
        if k not in train or k not in test:
            raise KeyError(f"feature key {k!r} is missing from the train or test features; extract it first")
    if not keys:
        raise ValueError("no feature keys to probe: the train and test features share no pooled key")
    return keys


def encode_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes seen in training, and both label arrays as indices into them (-1: class unseen in train)."""
    classes = np.unique(y_train)
    pos = np.searchsorted(classes, y_test).clip(0, len(classes) - 1)
    te = np.where(classes[pos] == y_test, pos, -1)
    return classes, np.searchsorted(classes, y_train), te


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _chunks(
    keys: list[str], dims: dict[str, int], n: int, n_cs: int, k: int, budget: float
) -> list[list[str]]:
    """Keys grouped by width, each group cut so its tensors fit ``budget`` bytes."""
    out = []
    for d in sorted(set(dims.values())):
        group = [key for key in keys if dims[key] == d]
        per_key = 4 * (4 * n * d + 30 * (d + 1) * n_cs * k + 6 * n * n_cs * k)
        size = max(1, int(budget // per_key))
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def _stack(
    feats: Mapping[str, np.ndarray], keys: list[str], rows: np.ndarray | None, dev: torch.device
) -> torch.Tensor:
    arrs = [np.asarray(feats[k], dtype=np.float32) for k in keys]
    x = np.stack([a if rows is None else a[rows] for a in arrs])
    return torch.from_numpy(x).to(dev)


def fit_linear_probes(
    train: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    depth: int,
    keys: Sequence[str] | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    labels: Mapping[str, object] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 1000,
    max_iter: int = 1000,
    tol: float = 1e-4,
    memory_budget: float | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every (key, C) linear probe in batches and return the tidy result table (see module doc)."""
    dev = torch.device(device) if device is not None else default_device()
    labels = dict(labels or {})
    keys = probe_keys(train, test, keys)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes, ytr, _yte = encode_labels(y_train, y_test)
    n_cls = len(classes)
    Cs = [float(c) for c in Cs]
    select = val_fraction > 0 and len(Cs) > 1
    for k in keys:
        if len(train[k]) != len(y_train) or len(test[k]) != len(y_test):
            raise ValueError(f"{k!r}: {len(train[k])}/{len(test[k])} feature rows but "
                             f"{len(y_train)}/{len(y_test)} labels (train/test)")  # fmt: skip
    if select:
        fit_idx, val_idx = stratified_split(y_train, val_fraction, seed)
    if memory_budget is None:
        memory_budget = 2**30 if dev.type == "cpu" else 0.3 * torch.cuda.mem_get_info(dev)[0]
    dims = {k: int(np.shape(train[k])[1]) for k in keys}
    chunks = _chunks(keys, dims, len(y_train), len(Cs), n_cls, memory_budget)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"linear probes ({len(keys)} keys x {len(Cs)} C)", unit="batch")
    rows: list[dict] = []
    unconverged = 0
    common = {"depth": depth, "labels": labels, "trainer": "batched", "n_boot": n_boot}
    for chunk in chunks:
        if select:
            xf, xv = prepare(_stack(train, chunk, fit_idx, dev), _stack(train, chunk, val_idx, dev))
            fit = fit_softmax(
                xf,
                torch.from_numpy(ytr[fit_idx]),
                torch.tensor(Cs, dtype=torch.float64),
                n_cls,
                max_iter=max_iter,
                tol=tol,
            )
            unconverged += int((~fit.converged).sum())
            val_acc = (fit.predict(xv).cpu().numpy() == ytr[val_idx]).mean(-1)  # (F, C)
            best = val_acc.argmax(1)  # first maximum: the smallest C among ties
            rows += [
                _val_row(key, c, val_acc[i, j], common)
                for i, key in enumerate(chunk)
                for j, c in enumerate(Cs)
            ]
            del xf, xv, fit
            c_fit = torch.tensor([[Cs[b]] for b in best], dtype=torch.float64)
        else:
            c_fit = torch.tensor(Cs, dtype=torch.float64)
        xtr, xte = prepare(_stack(train, chunk, None, dev), _stack(test, chunk, None, dev))
        fit = fit_softmax(xtr, torch.from_numpy(ytr), c_fit, n_cls, max_iter=max_iter, tol=tol)
        unconverged += int((~fit.converged).sum())
        pred = classes[fit.predict(xte).cpu().numpy()]  # (F, C', m)
        c_fit = c_fit.expand(len(chunk), -1).numpy()
        for i, key in enumerate(chunk):
            for j in range(c_fit.shape[1]):
                rows += probe_rows(key, **common, regularisation=c_fit[i, j], split="test", y_true=y_test,
                                   y_pred=pred[i, j], metrics=metrics)  # fmt: skip
        del xtr, xte, fit
    if unconverged:
        warnings.warn(f"{unconverged} probe fits stopped at max_iter={max_iter} before |grad| <= {tol}; "
                      "raise max_iter for exact agreement with scikit-learn", stacklevel=2)  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS) + [c for c in rows[0] if c not in COLUMNS])


def _val_row(key: str, c: float, acc: float, common: dict) -> dict:
    """A validation-accuracy row (no interval: it only serves to choose C)."""
    ids = {n: common[n] for n in ("depth", "labels", "trainer")}
    row = base_row(key, **ids, regularisation=c, split="val")
    return row | {"metric": "accuracy", "value": float(acc), "ci_low": float("nan"), "ci_high": float("nan")}
