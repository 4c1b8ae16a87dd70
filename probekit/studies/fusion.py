"""Notebook 04: paper 2's attentive multi-layer fusion against its baselines, on every dataset.

For each dataset, :func:`fusion_study` trains the five baselines and ALF (CLS and AP of ``ln2``
in blocks 1..L-1 plus the final norm), plus variants that feed other sites (paper 1's module
finding inside paper 2's probe) or add layer embeddings. The linear baselines are solved to their
optimum on notebook 02's ``C`` grid (:mod:`probekit.probes.fusion_linear`), the attentive probes
trained by paper 2's loop until their training loss converges (:mod:`probekit.train`); the
table says for every fit whether it converged. Reports the gain of each method over the CLS-last
linear probe with a paired interval, and where on the depth axis the fused probe's attention goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..cache import cached
from ..models import Backbone
from ..pipeline import split_features
from ..probes.fusion import LINEAR_SOLVERS, attention_summary, convergence_note, fusion_variant, run_fusion
from ..probes.linear import DEFAULT_CS, check_grid
from ..train import resolve_grid
from .datasets import check_inputs

# The tables notebook 04 writes (``<results_dir>/<name>.csv``); notebook 05 reads them.
NOTEBOOK = "04_attentive_fusion"
FUSION_TABLE = "fusion"  # every method on every dataset
GAINS_TABLE = "fusion_gains"  # each method's gain over the CLS-last linear probe


def fusion_study(
    backbone: Backbone,
    datasets: Sequence[str],
    *,
    token_sites: Sequence[str] = ("ln2",),
    extra_sites: Sequence[str] = (),
    layer_embedding: bool = False,
    grid: str = "small",
    images_per_class: int = 40,
    extract_sites: Sequence[str] | None = None,
    pools: Sequence[str] = ("cls", "ap", "mean"),
    max_steps: int | None = None,
    max_cycles: int | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    linear_solver: str = "exact",
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 of paper 2 for each dataset, plus ablations; returns (results, attention).

    ``extra_sites``: each one gives an ALF variant whose tokens come from that site instead of
    ``ln2``; ``layer_embedding`` adds the published token set with learned layer embeddings
    (an ablation: the published probe has none).
    ``max_steps``: cap on the steps of one training cycle of an attentive probe (None: the
    paper's schedule on a GPU, a CPU cap on a CPU); ``max_cycles``: cycles at most before a fit is
    reported unconverged (None: :class:`probekit.train.TrainConfig`'s), see :mod:`probekit.train`.
    ``Cs``, ``val_fraction``: the linear baselines' grid and validation split (notebook 02's);
    ``linear_solver``: ``exact`` (the optimum) or ``adamw`` (paper 2's loop on ``grid``).
    """
    resolve_grid(grid)  # a misspelled grid fails here, not after extraction
    Cs, val_fraction = check_grid(Cs, val_fraction)
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {list(LINEAR_SOLVERS)}, got {linear_solver!r}")
    check_inputs(backbone, datasets, extract_sites, pools)
    variants = [fusion_variant(f"alf_{s}", sites=(s,)) for s in extra_sites]
    if layer_embedding:
        variants.append(fusion_variant("alf_layer_embedding", sites=tuple(token_sites), layer_embedding=True))
    tables, attention = [], []
    for dataset in datasets:
        sf = split_features(
            backbone,
            dataset,
            max_per_class=images_per_class,
            seed=seed,
            sites=extract_sites,
            pools=pools,
            token_sites=("norm",),
            progress=progress,
        )
        labels = {"model": backbone.name, "dataset": dataset}
        inputs = {
            "train": sf.train.path.name,
            "test": sf.test.path.name,
            "token_sites": list(token_sites),
            "variants": [repr(v) for v in variants],
            "grid": grid,
            "max_steps": max_steps,
            "max_cycles": max_cycles,
            "Cs": list(Cs),
            "val_fraction": val_fraction,
            "linear_solver": linear_solver,
            "seed": seed,
            "labels": labels,
        }
        table, attn = cached(
            "fusion",
            inputs,
            lambda sf=sf, labels=labels: run_fusion(
                sf.train,
                sf.labels("train"),
                sf.test,
                sf.labels("test"),
                depth=backbone.depth,
                grid=grid,
                sites=tuple(token_sites),
                seed=seed,
                variants=variants,
                max_steps=max_steps or "auto",
                labels=labels,
                max_cycles=max_cycles,
                Cs=Cs,
                val_fraction=val_fraction,
                linear_solver=linear_solver,
            ),
        )
        tables.append(table)
        attention.append(attn)
    results = pd.concat(tables, ignore_index=True)
    results["site"] = results["sites"]  # per method: the sites its tokens come from
    for col, val in (("layer", float("nan")), ("pool", "cls+ap")):
        if col not in results:
            results[col] = val
    return results, pd.concat(attention, ignore_index=True)


def gains(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's gain over the CLS-last linear probe, as a tidy table (metric ``gain``)."""
    g = results[results["method"] != "cls_last_linear"].copy()
    g["metric"] = "balanced_accuracy_gain_over_cls_last"
    g["value"], g["ci_low"], g["ci_high"] = g["gain"], g["gain_low"], g["gain_high"]
    return g


def method_times(results: pd.DataFrame) -> pd.DataFrame:
    """Seconds per method (summed over datasets, and the mean per dataset), slowest first: where the
    notebook's time goes."""
    g = results.groupby("method", sort=False)["seconds"]
    out = pd.DataFrame({"seconds": g.sum(), "seconds_per_dataset": g.mean(), "datasets": g.count()})
    return out.sort_values("seconds", ascending=False).round(1)


def not_converged_note(results: pd.DataFrame) -> str:
    """A markdown note for the report: the fits that stopped before converging, or that all converged."""
    note = convergence_note(results)
    return (
        note or f"All {len(results)} fits converged (linear: solver gradient test; attentive: training loss)."
    )


def depth_profile(attention: pd.DataFrame, method: str = "alf_attentive") -> pd.DataFrame:
    """Per dataset: attention mass on the last layer and attention-weighted relative depth."""
    return attention_summary(attention[attention["method"] == method])
