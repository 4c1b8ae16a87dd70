"""Paper 2's experiment on feature stores: fusion tokens, the five baselines, ALF, attention heatmaps.

``run_fusion(train, y_train, test, y_test, depth=...)`` trains, from one pair of feature mappings
(``key -> (N, D)``, e.g. ``probekit.store.FeatureStore``), every method of paper 2's Table 1 with
the shared loop in ``probekit.train`` and returns a tidy result table plus the attention that
the fused probe puts on each layer of the test set.

Tokens follow ``lciernik/attentive-layer-fusion`` (``src/models/thingsvision.py`` and the
``all_layers_CLS_AP`` configs): CLS and AP at ``blocks.i.ln2`` for blocks ``1..L-1`` plus the final
``norm``, 2L tokens, each L2-normalised (``load_features(normalize=True)``), zero-padded to the
widest (``StackedZeroPadFeatureCombiner``) and stacked; linear probes concatenate the same vectors.
Any block sites may feed the fusion (``sites=("act",)`` or ``("ln2", "act")``): paper 1's module
finding tested inside paper 2's probe.

The all-tokens baseline (AAT: every token of the final norm, 8 heads) is normalised as paper 2
does it, ``F.normalize(x, dim=1)`` on the ``(N, T, D)`` tensor (``src/utils/utils.py``): each
feature dimension divided by its norm across the tokens of the image. The per-token variant (each
token over its width, like the CLS/AP tokens) is ``tokens_last_attentive_per_token``, by name.

Training: the three linear baselines are solved to their optimum by the batched softmax solver
(:mod:`probekit.probes.fusion_linear`, notebook 02's ``C`` grid and selection, class-weighted as
paper 2's loss; ``linear_solver="adamw"`` trains them with paper 2's loop instead); the attentive
probes run paper 2's loop in cosine cycles until their training loss has converged
(:mod:`probekit.train`). Every row of the result table records its solver, final training loss,
steps and a ``converged`` flag; :func:`convergence_note` words the fits that did not converge.

Layer numbering in the attention table follows the paper's figure 4: the tokens of block ``i``
are layer ``i`` and the final norm is layer ``L`` (= ``depth``), so the published set is exactly
layers ``1..L``; ``relative_depth = layer / depth``. (``probekit.keys`` numbers block ``i`` as
``i + 1`` elsewhere; here that would put block ``L-1`` and the final norm on the same layer.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from probekit.device import resolve_device
from probekit.errors import NonFiniteFeaturesError, ProbekitError
from probekit.keys import make_key
from probekit.metrics import paired_bootstrap_diff
from probekit.probes.attentive import AttentiveProbe
from probekit.probes.fusion_linear import fit_exact_linear
from probekit.probes.linear import DEFAULT_CS
from probekit.probes.standardize import l2_rows
from probekit.train import TrainConfig, cpu_default_max_steps, resolve_grid, select_and_fit


class FusionInputError(ProbekitError, KeyError):
    """Feature keys the fusion needs but the store does not hold, or inputs that do not line up."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Token:
    """One input token of the fusion probe: its feature key, site, paper-2 layer index and pool."""

    key: str
    site: str
    block: int | None
    layer: int
    pool: str


@dataclass(frozen=True)
class Method:
    """A row of paper 2's Table 1: which tokens, and a linear or attentive probe over them."""

    name: str
    label: str
    kind: str  # "linear" or "attentive"
    tokens: str  # "cls_last", "clsap_last", "fusion", "tokens_last", "tokens_last_per_token"
    num_heads: int | None = None  # None: one head per token
    layer_embedding: bool = False
    sites: tuple[str, ...] | None = None  # None: the run's sites


METHODS: tuple[Method, ...] = (
    Method("cls_last_linear", "CLS last layer (linear)", "linear", "cls_last"),
    Method("clsap_last_linear", "CLS+AP last layer (linear)", "linear", "clsap_last"),
    Method("clsap_all_linear", "CLS+AP all layers (linear)", "linear", "fusion"),
    # AAT: all tokens of the last layer, 8 heads (papers.md §2.5); needs the opt-in norm/tokens key
    Method(
        "tokens_last_attentive", "All tokens last layer (attentive)", "attentive", "tokens_last", num_heads=8
    ),
    Method("clsap_last_attentive", "CLS+AP last layer (attentive)", "attentive", "clsap_last"),
    Method("alf_attentive", "CLS+AP all layers (attentive) = ALF", "attentive", "fusion"),
)
# available by name, not run by default
EXTRA_METHODS: tuple[Method, ...] = (
    Method(
        "tokens_last_attentive_per_token",
        "All tokens last layer, each token normalised (attentive)",
        "attentive",
        "tokens_last_per_token",
        num_heads=8,
    ),
)
BASELINE = "cls_last_linear"
LINEAR_SOLVERS = ("exact", "adamw")


def fusion_variant(name: str, *, sites: Sequence[str] | None = None, layer_embedding: bool = False) -> Method:
    """An extra ALF run beyond the paper: other token sites and/or a learned layer embedding."""
    return Method(
        name,
        name,
        "attentive",
        "fusion",
        layer_embedding=layer_embedding,
        sites=None if sites is None else tuple(sites),
    )


def normalise_all_tokens(tokens: np.ndarray, over: str = "tokens") -> np.ndarray:
    """``(N, T, D)`` token features L2-normalised, as float32.

    ``over="tokens"`` (paper 2's AAT, ``F.normalize(x, dim=1)``): each feature dimension of an
    image divided by its norm across the ``T`` tokens. ``over="width"``: each token divided by
    its norm across the ``D`` features (how the CLS/AP tokens are normalised).
    """
    x = np.asarray(tokens, dtype=np.float32)
    if x.ndim != 3:
        raise FusionInputError(f"all-token features must be (N, tokens, D), got shape {x.shape}")
    if over not in ("tokens", "width"):
        raise FusionInputError(f"normalise over 'tokens' (paper 2) or 'width', not {over!r}")
    axis = 1 if over == "tokens" else 2
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def fusion_token_list(
    *,
    sites: Sequence[str] = ("ln2",),
    depth: int,
    pools: Sequence[str] = ("cls", "ap"),
    include_norm: bool = True,
    blocks: Sequence[int] | None = None,
) -> list[Token]:
    """The fusion's tokens in order: blocks ``1..depth-1`` (paper 2 leaves out block 0), each site,
    each pool, then the final ``norm`` pools."""
    blocks = range(1, depth) if blocks is None else blocks
    tokens = [Token(make_key(s, b, p), s, b, b, p) for b in blocks for s in sites for p in pools]
    if include_norm:
        tokens += [Token(make_key("norm", None, p), "norm", None, depth, p) for p in pools]
    return tokens


def _require(features: Mapping[str, np.ndarray], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in features]
    if missing:
        raise FusionInputError(
            f"the feature store lacks {len(missing)} key(s) the fusion needs, e.g. {missing[:4]}; "
            "extract those sites and pools (the final norm's 'tokens' pool is opt-in) or choose other sites"
        )


def _normalised(features: Mapping[str, np.ndarray], keys: Sequence[str]) -> list[np.ndarray]:
    """Each key's features L2-normalised (float32), after checking they are all finite."""
    _require(features, keys)
    arrays = [np.asarray(features[k]) for k in keys]
    bad = [k for k, a in zip(keys, arrays) if not np.isfinite(a).all()]
    if bad:
        raise NonFiniteFeaturesError.for_keys(bad)
    return [l2_rows(a, np.float32) for a in arrays]


def stack_tokens(features: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """``(N, T, D)``: each key's ``(N, D_k)`` features L2-normalised and zero-padded to the widest."""
    arrays = _normalised(features, keys)
    n, width = arrays[0].shape[0], max(a.shape[1] for a in arrays)
    if any(a.ndim != 2 or a.shape[0] != n for a in arrays):
        raise FusionInputError(f"fusion keys {list(keys)} must all be (N, D) arrays with the same N")
    out = np.zeros((n, len(arrays), width), dtype=np.float32)
    for t, a in enumerate(arrays):
        out[:, t, : a.shape[1]] = a
    return out


def concat_features(features: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """``(N, sum D_k)``: each key's features L2-normalised, then concatenated (paper 2's linear input)."""
    return np.concatenate(_normalised(features, keys), axis=1)


def fusion_tokens(
    features: Mapping[str, np.ndarray],
    *,
    sites: Sequence[str] = ("ln2",),
    depth: int,
    pools: Sequence[str] = ("cls", "ap"),
    include_norm: bool = True,
    blocks: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[Token]]:
    """Stacked, L2-normalised, zero-padded fusion tokens ``(N, T, D)`` and what each token is."""
    tokens = fusion_token_list(
        sites=sites, depth=depth, pools=pools, include_norm=include_norm, blocks=blocks
    )
    return stack_tokens(features, [t.key for t in tokens]), tokens


def _inputs(
    method: Method, features: Mapping[str, np.ndarray], sites: Sequence[str], depth: int
) -> np.ndarray:
    last = [make_key("norm", None, p) for p in ("cls", "ap")]
    if method.tokens in ("tokens_last", "tokens_last_per_token"):
        key = make_key("norm", None, "tokens")
        _require(features, [key])
        tokens = np.asarray(features[key])
        if not np.isfinite(tokens).all():
            raise NonFiniteFeaturesError.for_keys([key])
        return normalise_all_tokens(tokens, "tokens" if method.tokens == "tokens_last" else "width")
    if method.tokens == "cls_last":
        keys = last[:1]
    elif method.tokens == "clsap_last":
        keys = last
    else:
        keys = [t.key for t in fusion_token_list(sites=method.sites or sites, depth=depth)]
    return concat_features(features, keys) if method.kind == "linear" else stack_tokens(features, keys)


def _builder(method: Method, x: np.ndarray, num_classes: int) -> Callable[[dict[str, float]], nn.Module]:
    if method.kind == "linear":
        return lambda p: nn.Linear(x.shape[1], num_classes)
    _, t, d = x.shape
    return lambda p: AttentiveProbe(
        d,
        num_classes,
        t,
        num_heads=method.num_heads,
        attn_drop=p["attn_drop"],
        layer_embedding=method.layer_embedding,
    )


@torch.no_grad()
def mean_attention(
    model: AttentiveProbe, x: np.ndarray, *, device: torch.device | str | None = None, batch_size: int = 4096
) -> np.ndarray:
    """Softmax weights averaged over samples, then heads: one weight per token, summing to 1
    (``src/utils/attention_utils.py: get_attention_weights`` + the figure-4 notebook)."""
    dev = resolve_device(device)
    model.eval().to(dev)
    total = None
    for i in range(0, len(x), batch_size):
        model(torch.as_tensor(x[i : i + batch_size], device=dev))
        s = model.last_attention.sum(0)[:, 0, :].double()  # (heads, T)
        total = s if total is None else total + s
    return (total / len(x)).mean(0).cpu().numpy()


def attention_by_layer(weights: np.ndarray, tokens: Sequence[Token], depth: int) -> pd.DataFrame:
    """Per (site, layer): ``weight`` = mean over its tokens (CLS/AP, as in the paper's heatmap) and
    ``mass`` = their sum (a distribution over layers)."""
    df = pd.DataFrame([{"site": t.site, "block": t.block, "layer": t.layer, "pool": t.pool} for t in tokens])
    df["token_weight"] = weights
    g = df.groupby(["site", "layer"], sort=False, dropna=False)
    out = g.agg(
        block=("block", "first"), weight=("token_weight", "mean"), mass=("token_weight", "sum")
    ).reset_index()
    out["block"] = out["block"].astype("Int64")  # <NA> for the final norm
    out["relative_depth"] = out["layer"] / depth
    return out


def attention_summary(attention: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (and model, method): attention mass on the last layer and attention-weighted
    relative depth (papers.md §2.8: 0.39 / 0.82 for natural multi-domain data down to 0.19 / 0.69
    for specialised data)."""
    keys = [c for c in ("model", "dataset", "method") if c in attention.columns]

    def one(g: pd.DataFrame) -> pd.Series:
        mass = g["mass"] / g["mass"].sum()
        return pd.Series(
            {
                "last_layer_mass": float(mass[g["relative_depth"] >= 1.0].sum()),
                "weighted_relative_depth": float((mass * g["relative_depth"]).sum()),
                "num_layers": int(g["layer"].nunique()),
            }
        )

    out = attention.groupby(keys, sort=False).apply(one, include_groups=False).reset_index()
    return out.astype({"num_layers": int})


def attention_matrix(
    attention: pd.DataFrame, method: str = "alf_attentive", value: str = "weight"
) -> pd.DataFrame:
    """The heatmap of figure 4: rows ``(model, dataset)``, columns layer (and site when several
    sites feed the fusion), cells ``value`` (``weight``: mean over CLS/AP as in the paper; ``mass``)."""
    df = attention[attention["method"] == method]
    rows = [c for c in ("model", "dataset") if c in df.columns]
    cols = ["site", "layer"] if df["site"].nunique() > 2 else ["layer"]  # ln2 + norm is one site set
    if cols == ["layer"]:
        df = df.groupby(rows + ["layer"], sort=False, as_index=False)[value].sum()
    return df.pivot_table(index=rows, columns=cols, values=value, sort=False)


def paired_gain_ci(
    y: np.ndarray,
    pred: np.ndarray,
    base_pred: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the balanced-accuracy gain of ``pred`` over ``base_pred``, resampling
    the same test samples for both (a paired bootstrap)."""
    _, lo, hi = paired_bootstrap_diff(
        y, pred, base_pred, "balanced_accuracy", n_boot=n_boot, level=level, seed=seed
    )
    return lo, hi


def run_fusion(
    train: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    depth: int,
    grid: str = "small",
    sites: Sequence[str] = ("ln2",),
    seed: int = 0,
    device: torch.device | str | None = None,
    labels: Mapping[str, str] | None = None,
    methods: Sequence[str | Method] | None = None,
    variants: Sequence[Method] = (),
    max_steps: int | None | str = "auto",
    max_cycles: int | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    linear_solver: str = "exact",
    class_weight: str | None = "balanced",
    n_boot: int = 1000,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paper 2's Table 1 for one model and dataset: the five baselines, ALF and any ``variants``.

    ``methods`` defaults to all of ``METHODS`` (``EXTRA_METHODS`` by name); the all-tokens
    baseline is skipped when the store lacks ``norm/tokens``. Linear methods: ``linear_solver``
    ``"exact"`` (the optimum on the ``Cs`` grid, chosen on a ``val_fraction`` split as notebook 02
    chooses, :mod:`probekit.probes.fusion_linear`) or ``"adamw"`` (paper 2's loop on ``grid``).
    Attentive methods: paper 2's loop on ``grid`` in cosine cycles until converged
    (:mod:`probekit.train`); ``max_steps="auto"`` caps one cycle at
    ``probekit.train.CPU_MAX_STEPS`` steps on CPU and uses the paper's schedule on a GPU;
    ``max_cycles`` (None: ``TrainConfig``'s) bounds the cycles. Returns the tidy result table (one
    row per method, with the gain over the CLS-last linear baseline and its paired bootstrap
    interval, and ``solver, train_loss, steps, cycles, converged``) and the attention table of
    every attentive fusion method.
    """
    dev = resolve_device(device)
    labels = dict({"model": "", "dataset": ""}, **(labels or {}))
    by_name = {m.name: m for m in METHODS + EXTRA_METHODS}
    unknown = [m for m in (methods or ()) if isinstance(m, str) and m not in by_name]
    if unknown:
        raise FusionInputError(f"unknown method(s) {unknown}; use {list(by_name)} or fusion_variant(...)")
    if linear_solver not in LINEAR_SOLVERS:
        raise FusionInputError(f"linear_solver must be one of {list(LINEAR_SOLVERS)}, got {linear_solver!r}")
    chosen = [by_name[m] if isinstance(m, str) else m for m in (methods or METHODS)]
    if methods is None and make_key("norm", None, "tokens") not in train:
        chosen = [m for m in chosen if not m.tokens.startswith("tokens_last")]
    chosen += list(variants)
    steps = cpu_default_max_steps(dev) if max_steps == "auto" else max_steps
    config = TrainConfig(seed=seed, max_steps=steps)
    if max_cycles is not None:
        config = TrainConfig(seed=seed, max_steps=steps, max_cycles=max_cycles)
    y_train, y_test = np.asarray(y_train, dtype=np.int64), np.asarray(y_test, dtype=np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    grid_obj = resolve_grid(grid)

    rows, preds, attention = [], {}, []
    for m in chosen:
        start = time.perf_counter()
        x_tr, x_te = _inputs(m, train, sites, depth), _inputs(m, test, sites, depth)
        if m.kind == "linear" and linear_solver == "exact":
            ex = fit_exact_linear(
                x_tr,
                y_train,
                x_te,
                y_test,
                Cs=Cs,
                val_fraction=val_fraction,
                seed=seed,
                class_weight=class_weight,
                device=dev,
                n_boot=n_boot,
            )
            fitted = {
                "value": ex.value,
                "ci_low": ex.ci_low,
                "ci_high": ex.ci_high,
                "val_balanced_accuracy": ex.val_score,
                "solver": "lbfgs_exact",
                "C": ex.C,
                "lr": np.nan,
                "weight_decay": np.nan,
                "attn_drop": np.nan,
                "grid": "Cs",
                "grid_points": len(ex.search) or 1,
                "train_loss": ex.train_loss,
                "steps": ex.steps,
                "cycles": 1,
                "converged": ex.converged,
                "epochs": np.nan,
                "batch_size": np.nan,
                "seconds_per_point": np.nan,
            }
            pred, model = ex.test_pred, None
        else:
            fit = select_and_fit(
                _builder(m, x_tr, num_classes),
                x_tr,
                y_train,
                x_te,
                y_test,
                grid=grid_obj,
                attentive=m.kind == "attentive",
                config=config,
                device=dev,
                n_boot=n_boot,
            )
            fitted = dict(
                value=fit.value,
                ci_low=fit.ci_low,
                ci_high=fit.ci_high,
                val_balanced_accuracy=fit.val_score,
                solver="adamw_cosine",
                C=np.nan,
                **fit.params,
                grid=grid if isinstance(grid, str) else "custom",
                grid_points=len(fit.search) or 1,
                train_loss=fit.log.train_loss,
                steps=fit.log.steps,
                cycles=fit.log.cycles,
                converged=fit.log.converged,
                epochs=fit.log.epochs,
                batch_size=fit.log.batch_size,
                seconds_per_point=float(fit.search["seconds"].mean()) if len(fit.search) else np.nan,
            )
            pred, model = fit.test_pred, fit.model
        used_sites = ("norm",) if m.tokens != "fusion" else (m.sites or tuple(sites))
        preds[m.name] = pred
        rows.append(
            dict(
                labels,
                method=m.name,
                label=m.label,
                probe=m.kind,
                sites="+".join(used_sites),
                layer_embedding=m.layer_embedding,
                num_tokens=1 if x_tr.ndim == 2 else x_tr.shape[1],
                metric="balanced_accuracy",
                chance=1.0 / len(np.unique(y_test)),
                **fitted,
                seconds=time.perf_counter() - start,
                n_train=len(y_train),
                n_test=len(y_test),
                seed=seed,
                device=dev.type,
            )
        )
        if m.kind == "attentive" and m.tokens == "fusion":
            tokens = fusion_token_list(sites=m.sites or sites, depth=depth)
            att = attention_by_layer(mean_attention(model, x_te, device=dev), tokens, depth)
            attention.append(att.assign(**labels, method=m.name))
        if log is not None:
            r = rows[-1]
            flag = "" if r["converged"] else ", NOT converged"
            log(
                f"{labels.get('dataset', '')} {m.name}: {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                f"({r['seconds']:.1f} s, {r['steps']} steps{flag})"
            )

    table = pd.DataFrame(rows)
    table["gain"], table["gain_low"], table["gain_high"] = np.nan, np.nan, np.nan
    if BASELINE in preds:
        base = table.loc[table["method"] == BASELINE, "value"].iloc[0]
        for i, name in enumerate(table["method"]):
            lo, hi = paired_gain_ci(y_test, preds[name], preds[BASELINE], n_boot=n_boot, seed=seed)
            table.loc[i, ["gain", "gain_low", "gain_high"]] = [table.loc[i, "value"] - base, lo, hi]
    lead = [c for c in ("model", "dataset") if c in table.columns]
    att_cols = lead + ["method", "site", "block", "layer", "relative_depth", "weight", "mass"]
    att_df = (
        pd.concat(attention, ignore_index=True)[att_cols] if attention else pd.DataFrame(columns=att_cols)
    )
    return table, att_df


def convergence_note(results: pd.DataFrame) -> str:
    """One readable sentence on the fits of a fusion table that stopped before converging ("" if none).

    Linear baselines (``lbfgs_exact``) converge when the solver's gradient test is met; attentive
    probes when one more cosine cycle moved the training loss by less than the stated tolerance
    (:mod:`probekit.train`). An unconverged probe's number is a lower bound on what it can do.
    """
    if "converged" not in results or results.empty:
        return ""
    bad = results[~results["converged"].astype(bool)]
    if bad.empty:
        return ""
    cycles = bad["cycles"].astype(int) if "cycles" in bad else pd.Series(1, index=bad.index)
    parts = [
        f"{r.get('dataset', '')} {r['method']} ({int(r['steps'])} steps, {c} cycle{'s' * (c != 1)}, "
        f"training loss {r['train_loss']:.3f})"
        for (_, r), c in zip(bad.iterrows(), cycles)
    ]
    return (
        f"**Warning: {len(bad)} of {len(results)} fits stopped before converging**: {'; '.join(parts)}. "
        "Their scores (and gains over CLS-last involving them) are lower bounds, not the methods' capacity: "
        "raise `max_cycles` or `max_steps`, or run on a GPU with the paper's schedule."
    )
