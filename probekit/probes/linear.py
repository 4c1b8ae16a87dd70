"""Layer-wise and module-wise linear probes: every (site, layer, pool, C) probe trained at once.

The default trainer. For each feature key (``blocks.7.act/mean``, ...) and each regularisation
value ``C`` it fits scikit-learn's multinomial L2 logistic regression objective with the
batched solver of :mod:`probekit.probes.softmax`, after paper 1's preprocessing (per-sample L2
norm, then per-feature standardising fitted on the training rows of that probe).

Protocol (``val_fraction > 0`` and more than one ``C``): hold out a stratified ``val_fraction`` of
the training rows (:func:`probekit.validation_split.stratified_split`), fit every ``C``, pick per key the
``C`` with the best validation accuracy (ties go to the smaller ``C``, the stronger penalty),
refit on train+val at that ``C``, score test. With ``val_fraction=0`` every ``C`` is fitted on
all training rows and scored on test (no selection); ``Cs=(1.0,), val_fraction=0`` is paper 1's
recipe run by the batched trainer.

Every probe is solved in the principal basis of its training features (:func:`row_space`, an exact
rotation). One reduction beyond it: a pooled ``fc1`` key with more training rows than its input's
width is solved on the ``d_in + 1`` directions its features span (:func:`solved_widths`), leaving
out directions that hold only the float16 store's rounding; scikit-learn fits all 1536 columns.

``C`` and ``class_weight`` (``None`` or ``"balanced"``: each training row's loss weighted by the
inverse frequency of its class) mean what they mean in scikit-learn's ``LogisticRegression``,
two-class tasks included (:func:`probekit.probes.softmax.fit_softmax`). Balanced weights are
computed on the rows each probe is fitted on (the fit part when choosing ``C``, then train+val).

Public API::

    DEFAULT_CS                      # 8 values, 10**-4 ... 10**3, one per decade (C=1 included)
    fit_linear_probes(train, y_train, test, y_test, *, depth, keys=None, Cs=DEFAULT_CS,
                      val_fraction=0.2, seed=0, device=None, labels=None, metrics=..., n_boot=1000,
                      max_iter=1000, tol=1e-4, rtol=0.03, dtype=torch.float32, memory_budget=None,
                      progress=True, predictions=None, class_weight=None) -> pandas.DataFrame

The result is the tidy table of :mod:`probekit.probes.table` with ``trainer="batched"``:
``split="val"`` rows (accuracy of every ``C``, no interval) and ``split="test"`` rows (accuracy
and balanced accuracy with bootstrap 95% intervals).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from probekit.device import resolve_device
from probekit.errors import NonFiniteFeaturesError
from probekit.keys import parse_key
from probekit.parallel import cpu_workers, side_by_side
from probekit.probes.softmax import ONEDNN_ROWS, SoftmaxFit, block_columns, cpu_batch, fit_softmax
from probekit.probes.standardize import prepare
from probekit.probes.table import COLUMNS, base_row, probe_rows
from probekit.products import onednn_products
from probekit.store import FeatureStore
from probekit.validation_split import stratified_split

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 3, 8))
DEFAULT_METRICS = ("accuracy", "balanced_accuracy")


def check_grid(Cs: Sequence[float], val_fraction: float) -> tuple[list[float], float]:
    """The regularisation grid and the validation share as floats, after checking them; errors say what to pass."""
    cs = [_number(c) for c in Cs] if not isinstance(Cs, (str, bytes)) and np.iterable(Cs) else []
    if not cs or not all(np.isfinite(c) and c > 0 for c in cs):
        raise ValueError(
            f"Cs must be a non-empty list of positive, finite numbers (C = 1 / regularisation), "
            f"got {Cs!r}; for example {list(DEFAULT_CS)}"
        )
    vf = _number(val_fraction)
    if not 0.0 <= vf < 1.0:
        raise ValueError(
            f"val_fraction must be a number in [0, 1) (the share of the training split used to "
            f"choose C; 0 fits every C on all training rows), got {val_fraction!r}"
        )
    return cs, vf


def _number(value: object) -> float:
    """``value`` as a float; NaN for anything that is not a number (strings included)."""
    if isinstance(value, (str, bytes)):
        return float("nan")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


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


def solved_widths(
    train: Mapping[str, np.ndarray], keys: Sequence[str], dims: dict[str, int], n: int
) -> dict[str, int]:
    """The width each key's probes are solved at (:func:`row_space`): ``min(D, n)``, and for a pooled
    ``fc1`` key at most the width of its layer's input plus one.

    A pool (token 0, a mean of tokens) commutes with an affine map, so a block's pooled ``fc1``
    features are ``mlp.fc1`` applied to its pooled ``ln2`` features (:func:`probekit.sites.derived_input`):
    every row lies in an affine subspace of the input's width ``d_in`` (384 in ViT-S, against
    ``fc1``'s 1536), and the per-row L2 norm and the standardising keep them in a linear subspace of
    ``d_in + 1`` dimensions. The other ``D - d_in - 1`` principal directions hold only the rounding
    of the float16 store: over the 36 ``fc1`` keys of fashion_mnist at n = 2000 (DINOv2-S/14), the
    first of them has at most 1.8e-6 of the largest eigenvalue. So the probe is solved on the
    ``d_in + 1`` leading directions, 4x fewer columns in a ViT: the probe of the features as
    computed, up to the store's rounding, which a full-width probe may also fit at large ``C``.
    Measured there (``benchmarks/README.md``, "fc1 in its input's span"): every ``fc1`` probe of the
    8 ``C`` values within 0.5 points of test accuracy of the full-width solve, and all 2304 probes
    solved 17% faster. ``d_in`` is the width of the block's ``ln2`` features in ``train`` (any pool,
    ``tokens`` included); without them the key keeps ``min(D, n)``.
    """
    d_in: dict[int, int] = {}  # block -> width of its ln2 features, the last axis of (n, D) or (n, T, D)
    for key in train.keys():
        fk = parse_key(key)
        if fk.site == "ln2" and fk.block is not None:
            d_in.setdefault(fk.block, int(_shape(train, key)[-1]))
    out = {}
    for key in keys:
        fk = parse_key(key)
        span = d_in.get(fk.block) if fk.site == "fc1" and fk.pool != "tokens" else None
        out[key] = min(dims[key], n, dims[key] if span is None else span + 1)
    return out


def _chunks(
    keys: list[str],
    dims: dict[str, int],
    widths: dict[str, int],
    n: int,
    m: int,
    n_cs: int,
    k: int,
    budget: float,
) -> list[list[str]]:
    """Keys grouped by the width they are solved at (``widths``, :func:`solved_widths`), each group cut
    so its tensors fit ``budget`` bytes.

    Keys wider than the ``n`` training rows are all solved in their ``n``-wide row space
    (:func:`row_space`), so they share a chunk whatever their raw width (on a GPU one solve for
    every site's probes rather than one per width; on a CPU, :func:`_parts` cuts it). Within a
    chunk keys are ordered by raw width.
    """
    out = []
    groups: dict[int, list[str]] = {}
    for key in sorted(keys, key=lambda kk: dims[kk]):
        groups.setdefault(widths[key], []).append(key)
    for w, group in groups.items():
        # float32: raw and rotated stacks, then the solver's state for every C (its L-BFGS memory
        # of 2 x 5 pairs and ~12 parameter-sized buffers, the preconditioner's t x t blocks) and
        # ~6 logit-sized buffers
        t = block_columns(n, w)
        per = [4 * ((n + m) * (dims[key] + w) + n_cs * k * (22 * (w + 1) + t * t + 6 * n)) for key in group]
        chunk, used = [], 0.0
        for key, size in zip(group, per):
            if chunk and used + size > budget:
                out.append(chunk)
                chunk, used = [], 0.0
            chunk.append(key)
            used += size
        out.append(chunk)
    return out


def _parts(chunk: list[str], dims: dict[str, int], dev: torch.device) -> list[list[str]]:
    """``chunk`` cut into the pieces one worker prepares, solves and predicts in turn.

    On a CPU, pieces of :func:`probekit.probes.softmax.cpu_batch` keys of one raw width: a piece's
    features then stay in the caches from preparation to prediction, and no worker waits for the
    other between the two (the 288 keys of digits at n = 200: the preparation 0.79 -> 0.62 s with
    pieces of 16 instead of one per worker and width). On a GPU, one piece: the device runs it in
    parallel.
    """
    if dev.type != "cpu":
        return [chunk]
    size = cpu_batch(len(chunk), cpu_workers(dev, len(chunk)))
    parts = []
    for d in sorted({dims[k] for k in chunk}):
        sub = [k for k in chunk if dims[k] == d]
        parts += [sub[i : i + size] for i in range(0, len(sub), size)]
    return parts


def _rotated(
    a: Mapping[str, np.ndarray],
    rows_a: np.ndarray | None,
    b: Mapping[str, np.ndarray],
    rows_b: np.ndarray | None,
    keys: list[str],
    dev: torch.device,
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed (:func:`prepare`) and rotated (:func:`row_space`, its ``width`` leading directions)
    features of ``keys``, fitted on ``a``; keys of each raw width together (each key is prepared on its own)."""
    done = []
    for d in sorted({_shape(a, k)[1] for k in keys}):
        sub = [k for k in keys if _shape(a, k)[1] == d]
        done.append(
            row_space(*prepare(_stack(a, sub, rows_a, dev), _stack(b, sub, rows_b, dev)), width=width)
        )
    return torch.cat([xa for xa, _ in done]), torch.cat([xb for _, xb in done])


def row_space(train: torch.Tensor, *others: torch.Tensor, width: int | None = None) -> list[torch.Tensor]:
    """Express features in the principal basis of the training features: an exact rotation.

    An L2-penalised linear model's weights lie in the span of its training rows (the gradient
    of every loss term does, and so does the penalty's), so with ``X = U S V^T`` the probe on
    ``X V`` (``rank(X) <= min(n, D)`` columns) is the same probe as on ``X`` (``D`` columns), with
    the same penalty: wide features (``act``, ``fc1``) become cheap when ``n < D``. The columns of
    ``X V`` are orthogonal, which makes the solver's diagonal preconditioner nearly exact (see
    :func:`probekit.probes.softmax.fit_softmax`).

    When ``n < D`` nothing ``D x D`` is formed: the eigenvectors ``U`` of the ``n x n`` Gram
    matrix ``X X^T`` give ``X V = U S`` and ``Y V = Y X^T U S^-1`` for the other sets. Directions
    with ``S_j^2 <= 1e-9 max S^2`` (standardising centres the rows, so there is always one) carry
    no training variance, so the optimal weights are zero there; they are set to zero in every
    set rather than divided by a rounding error. Products run in the input precision (the
    features were stored as float16), the ``n x n`` eigendecomposition in float64 (its eigenvalues
    divide), the ``D x D`` one (``n >= D``) in float32; outputs are float32.

    ``width``: keep only that many leading directions (largest variance first; default all
    ``min(n, D)``), for features known to span fewer (:func:`solved_widths`). Columns come in
    ascending order of variance either way, so a ``width`` of ``min(n, D)`` changes nothing.
    """
    with onednn_products(train.shape[-2] >= ONEDNN_ROWS):  # faster without AMX (probekit.products)
        return _row_space(train, *others, width=width)


def _row_space(train: torch.Tensor, *others: torch.Tensor, width: int | None) -> list[torch.Tensor]:
    """:func:`row_space` itself."""
    n, d = train.shape[-2:]
    first = -min(width or n, n, d)  # the leading directions: eigh's eigenvalues ascend
    if n < d:
        lam, u = torch.linalg.eigh(torch.bmm(train, train.transpose(1, 2)).double())
        keep = lam > 1e-9 * lam[:, -1:].clamp_min(1e-300)
        lam, u, keep = lam[:, first:], u[..., first:], keep[:, first:]
        s = lam.clamp_min(0).sqrt()
        z = (u * torch.where(keep, s, 0)[:, None]).float()
        proj = (u * torch.where(keep, 1 / s.clamp_min(1e-300), 0)[:, None]).to(train.dtype)
        xt = train.transpose(1, 2)
        return [z] + [torch.bmm(torch.bmm(o, xt), proj).float() for o in others]
    # n >= D: the eigenvectors of X^T X. Only their orthogonality matters here (nothing is divided
    # by an eigenvalue), which float32 keeps to ~1e-6, so the D x D eigh runs in float32: 2.3x
    # faster than float64 at D = 1536 (0.38 s against 0.87 s a key on one core)
    v = torch.linalg.eigh(torch.bmm(train.transpose(1, 2), train).float())[1][..., first:].to(train.dtype)
    return [torch.bmm(x, v).float() for x in (train, *others)]


def _shape(feats: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    """Shape of one key's features; a feature store answers from its metadata without reading."""
    return feats.shape(key) if isinstance(feats, FeatureStore) else np.shape(feats[key])


def _stack(
    feats: Mapping[str, np.ndarray], keys: list[str], rows: np.ndarray | None, dev: torch.device
) -> torch.Tensor:
    """``(len(keys), n, D)`` float32 on ``dev``. A feature store's arrays are stacked in their stored
    precision (float16 as extracted) and converted by torch, whose conversion is vectorised."""
    arrs = [
        feats.load(k, mmap=True) if isinstance(feats, FeatureStore) else np.asarray(feats[k]) for k in keys
    ]
    x = np.stack([a if rows is None else a[rows] for a in arrs])
    if x.dtype not in (np.float16, np.float32):
        x = x.astype(np.float32)
    out = torch.from_numpy(x).to(dev).float()
    # a sum is finite when every term is (inf and NaN propagate): ~30x cheaper than an elementwise
    # isfinite; a sum that overflows (finite terms near float32's limit) is checked term by term
    suspect = (~torch.isfinite(out.sum((1, 2)))).nonzero().squeeze(1).tolist()
    bad = [keys[i] for i in suspect if not bool(torch.isfinite(out[i]).all())]
    if bad:
        raise NonFiniteFeaturesError.for_keys(bad)
    return out


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
    rtol: float | None = 0.03,
    dtype: torch.dtype = torch.float32,
    memory_budget: float | None = None,
    progress: bool = True,
    predictions: dict[str, np.ndarray] | None = None,
    class_weight: str | None = None,
) -> pd.DataFrame:
    """Train every (key, C) linear probe in batches and return the tidy result table (see module doc).

    ``predictions``: a dict to fill with each key's test predictions (original labels) at its
    selected ``C`` (shape ``(m,)``), or at every ``C`` (``(len(Cs), m)``) when nothing is selected;
    for paired comparisons between probes.
    """
    dev = resolve_device(device)
    labels = dict(labels or {})
    keys = probe_keys(train, test, keys)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes, ytr, _yte = encode_labels(y_train, y_test)
    n_cls = len(classes)
    Cs, val_fraction = check_grid(Cs, val_fraction)
    if class_weight not in (None, "balanced"):
        raise ValueError(
            f"class_weight must be None or 'balanced' (scikit-learn's meaning), got {class_weight!r}"
        )
    select = val_fraction > 0 and len(Cs) > 1
    for k in keys:
        n_tr, n_te = _shape(train, k)[0], _shape(test, k)[0]
        if n_tr != len(y_train) or n_te != len(y_test):
            raise ValueError(
                f"{k!r}: {n_tr}/{n_te} feature rows but {len(y_train)}/{len(y_test)} labels (train/test)"
            )
    if select:
        fit_idx, val_idx = stratified_split(y_train, val_fraction, seed)
    if memory_budget is None:
        memory_budget = 2**30 if dev.type == "cpu" else 0.3 * torch.cuda.mem_get_info(dev)[0]
    dims = {k: int(_shape(train, k)[1]) for k in keys}
    widths = solved_widths(train, keys, dims, len(y_train))
    chunks = _chunks(keys, dims, widths, len(y_train), len(y_test), len(Cs), n_cls, memory_budget)
    parts = [_parts(chunk, dims, dev) for chunk in chunks]
    bar = None
    if progress:
        from probekit.progress import progress_bar

        bar = progress_bar(
            total=sum(map(len, parts)), desc=f"linear probes ({len(keys)} keys x {len(Cs)} C)", unit="batch"
        )
    solver = {"max_iter": max_iter, "tol": tol, "rtol": rtol, "dtype": dtype, "class_weight": class_weight}

    def fit_part(part: list[str]) -> _PartFit:
        """Choose each key's C on the validation rows (when selecting), refit, predict test: one piece."""
        one = {"batch": len(part)} if dev.type == "cpu" else {}  # the piece is the solver's batch
        val_acc, stops = None, {"max_iter": 0, "precision": 0}
        if select:
            xf, xv = _rotated(train, fit_idx, train, val_idx, part, dev, widths[part[0]])
            fit = fit_softmax(xf, torch.from_numpy(ytr[fit_idx]), torch.tensor(Cs), n_cls, **solver, **one)
            val_acc = (fit.predict(xv).cpu().numpy() == ytr[val_idx]).mean(-1)  # (F, C)
            best = val_acc.argmax(1)  # first maximum: the smallest C among ties
            _count_stops(fit, max_iter, stops)
            del xf, xv
            c_fit = torch.tensor([[Cs[b]] for b in best], dtype=torch.float64)
        else:
            c_fit = torch.tensor(Cs, dtype=torch.float64)
        xtr, xte = _rotated(train, None, test, None, part, dev, widths[part[0]])
        fit = fit_softmax(xtr, torch.from_numpy(ytr), c_fit, n_cls, **solver, **one)
        _count_stops(fit, max_iter, stops)
        pred = classes[fit.predict(xte).cpu().numpy()]  # (F, C', m)
        return _PartFit(val_acc, c_fit.expand(len(part), -1).numpy(), pred, stops)

    rows: list[dict] = []
    stopped = {"max_iter": 0, "precision": 0}  # probes that ended before ||grad|| <= tol, by reason
    common = {"depth": depth, "labels": labels, "trainer": "batched", "n_boot": n_boot}
    step = bar.update if bar is not None else None
    for chunk_parts in parts:
        # on for every product of every worker, or for none (probekit.products)
        with onednn_products(len(y_train) >= ONEDNN_ROWS):
            done = side_by_side(fit_part, chunk_parts, cpu_workers(dev, len(chunk_parts)), step)
        # a chunk's validation rows, then its test rows, whatever the pieces (they depend on the cores)
        test_rows: list[dict] = []
        for part, got in zip(chunk_parts, done):
            for reason, count in got.stops.items():
                stopped[reason] += count
            if got.val_acc is not None:
                rows += [
                    _val_row(key, c, got.val_acc[i, j], common)
                    for i, key in enumerate(part)
                    for j, c in enumerate(Cs)
                ]
            pred = got.pred
            if predictions is not None:
                predictions.update(
                    {key: pred[i, 0] if pred.shape[1] == 1 else pred[i] for i, key in enumerate(part)}
                )
            for i, key in enumerate(part):
                for j in range(got.c_fit.shape[1]):
                    test_rows += probe_rows(
                        key,
                        **common,
                        regularisation=got.c_fit[i, j],
                        split="test",
                        y_true=y_test,
                        y_pred=pred[i, j],
                        metrics=metrics,
                    )
        rows += test_rows
    if bar is not None:
        bar.close()
    if stopped["max_iter"]:
        warnings.warn(
            f"{stopped['max_iter']} probe fits stopped at max_iter={max_iter} before their stopping test "
            f"(tol={tol}, rtol={rtol}); raise max_iter for exact agreement with scikit-learn",
            stacklevel=2,
        )
    if stopped["precision"]:
        warnings.warn(
            f"{stopped['precision']} probe fits stopped at the limit of float64 precision before "
            f"their stopping test (tol={tol}, rtol={rtol}); pass a larger tol or rtol",
            stacklevel=2,
        )
    return pd.DataFrame(rows, columns=list(COLUMNS) + [c for c in rows[0] if c not in COLUMNS])


@dataclass
class _PartFit:
    """What :func:`fit_linear_probes` keeps of one piece's fits: the validation accuracy of every
    (key, C) when selecting (else ``None``), the fitted C values ``(F, C')``, the test predictions
    ``(F, C', m)`` in the original labels, and its unconverged probes by reason (:func:`_count_stops`)."""

    val_acc: np.ndarray | None
    c_fit: np.ndarray
    pred: np.ndarray
    stops: dict[str, int]


def _count_stops(fit: SoftmaxFit, max_iter: int, stopped: dict[str, int]) -> None:
    """Add ``fit``'s unconverged probes to ``stopped``: out of iterations, or at the solve's precision."""
    out = ~fit.converged
    stopped["max_iter"] += int((out & (fit.n_iter >= max_iter)).sum())
    stopped["precision"] += int((out & (fit.n_iter < max_iter)).sum())


def _val_row(key: str, c: float, acc: float, common: dict) -> dict:
    """A validation-accuracy row (no interval: it only serves to choose C)."""
    ids = {n: common[n] for n in ("depth", "labels", "trainer")}
    row = base_row(key, **ids, regularisation=c, split="val")
    return row | {"metric": "accuracy", "value": float(acc), "ci_low": float("nan"), "ci_high": float("nan")}
