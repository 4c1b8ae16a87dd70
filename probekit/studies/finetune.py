"""Notebook 06: paper 1's in-distribution control. Fine-tune the backbone on each dataset, then
probe every layer and site of the fine-tuned model beside the pretrained one.

Paper 1's second arm: the pretrained ViT probed on shifted data is best at an intermediate layer;
the same ViT fine-tuned on the dataset (making it in-distribution) is best at its last layer.
:func:`finetune_study` runs both arms through the same path (``load_model`` → feature store →
:func:`probekit.studies.probing.probe_study`); the summaries give each arm's best relative depth
with a bootstrap interval and test the claim: for the fine-tuned model, the last block output is
the best, or within the paired interval of the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .. import finetune as ft
from ..keys import make_key
from ..models import Backbone
from ..probes.linear import DEFAULT_CS
from ..report import TABLE_COLUMNS
from . import probing

ARMS = ("pretrained", "fine-tuned")

NOTEBOOK = "06_finetuned_control"
HISTORY_TABLE = "finetune_history"  # loss and validation accuracy per step of every run
GRID_TABLE = "finetune_grid"  # one row per (lr, seed) run
PROBES_TABLE = "finetune_probes"  # every probe of both arms
DEPTH_TABLE = "finetune_depth"  # each arm's best relative depth
CLAIM_TABLE = "finetune_claim"  # paper 1's in-distribution claim per dataset and arm


@dataclass
class FinetuneStudy:
    """Both arms' probe studies per dataset, the fine-tuning grids, and the recipe used."""

    depth: int
    pretrained_digest: str = ""
    pretrained: dict[str, probing.ProbeStudy] = field(default_factory=dict)
    finetuned: dict[str, probing.ProbeStudy] = field(default_factory=dict)
    tuned: dict[str, ft.FineTuned] = field(default_factory=dict)
    backbones: dict[str, Backbone] = field(default_factory=dict)
    weight_change: dict[str, float] = field(default_factory=dict)  # relative L2 change of the backbone

    def arms(self, dataset: str) -> dict[str, probing.ProbeStudy]:
        return {"pretrained": self.pretrained[dataset], "fine-tuned": self.finetuned[dataset]}

    @property
    def table(self) -> pd.DataFrame:
        """Every probe of both arms (the tidy probe table plus an ``arm`` column)."""
        parts = [s.table.assign(arm=arm) for d in self.pretrained for arm, s in self.arms(d).items()]
        return pd.concat(parts, ignore_index=True)

    def test_rows(self, metric: str = "accuracy") -> pd.DataFrame:
        t = self.table
        return t[(t["split"] == "test") & (t["metric"] == metric)]

    def history(self) -> pd.DataFrame:
        return pd.concat([t.history() for t in self.tuned.values()], ignore_index=True)

    def grid(self) -> pd.DataFrame:
        return pd.concat([t.grid() for t in self.tuned.values()], ignore_index=True)


def recipe_for(
    dataset: str,
    device: torch.device | str,
    *,
    gpu_recipe: str = "paper",
    cpu_steps: int = 60,
    cpu_lrs: Sequence[float] = (1e-3,),
    cpu_seeds: Sequence[int] = (42,),
    cpu_batch_size: int = 32,
    train_images_per_class: int = 40,
    val_images_per_class: int = 10,
    cpu_head_init: str = "probe",
    cpu_augment: bool = False,
) -> ft.Recipe:
    """Paper 1's recipe on a GPU (``gpu_recipe="paper"``), the scaled-down one on a CPU (or with
    ``gpu_recipe="cpu"``). The paper fine-tunes on the whole training split; the CPU recipe caps it."""
    if torch.device(device).type == "cuda" and gpu_recipe == "paper":
        return ft.paper_recipe(dataset)
    if gpu_recipe not in ("paper", "cpu"):
        raise ValueError(f"gpu_recipe must be 'paper' or 'cpu', got {gpu_recipe!r}")
    return ft.cpu_recipe(
        dataset,
        steps=cpu_steps,
        lrs=tuple(cpu_lrs),
        seeds=tuple(cpu_seeds),
        batch_size=cpu_batch_size,
        train_per_class=train_images_per_class,
        val_per_class=val_images_per_class,
        head_init=cpu_head_init,
        augment=cpu_augment,
    )


def recipes_for(datasets: Sequence[str], device: torch.device | str, **kw) -> dict[str, ft.Recipe]:
    """:func:`recipe_for` of each dataset."""
    return {d: recipe_for(d, device, **kw) for d in datasets}


def finetune_study(
    backbone: Backbone,
    datasets: Sequence[str],
    recipes: dict[str, ft.Recipe],
    *,
    sites: Sequence[str] | None = None,
    pools: Sequence[str] = ("mean",),
    probe_sites: Sequence[str] | None = None,
    images_per_class: int = 40,
    protocol: str = "validated",
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> FinetuneStudy:
    """Fine-tune on each dataset with ``recipes[dataset]``, then probe both arms the same way.

    The fine-tuning data are the ``train``/``val`` splits drawn with ``seed``, the probes' splits
    too, so the test images the probes are scored on are never trained on.
    """
    study = FinetuneStudy(depth=backbone.depth, pretrained_digest=backbone.weights_digest)
    for dataset in datasets:
        tuned = ft.finetune(backbone, dataset, recipes[dataset], data_seed=seed, progress=progress)
        tuned_bb = ft.load_finetuned(backbone, tuned)
        kw = {
            "sites": sites,
            "pools": pools,
            "probe_sites": probe_sites,
            "images_per_class": images_per_class,
            "protocol": protocol,
            "Cs": Cs,
            "val_fraction": val_fraction,
            "seed": seed,
            "progress": progress,
        }
        study.pretrained[dataset] = probing.probe_study(backbone, [dataset], **kw)
        study.finetuned[dataset] = probing.probe_study(tuned_bb, [dataset], **kw)
        study.tuned[dataset], study.backbones[dataset] = tuned, tuned_bb
        study.weight_change[dataset] = relative_weight_change(backbone, tuned_bb)
    return study


MOVED_ENOUGH = (
    1e-3  # below this relative weight change the fine-tuned arm is the pretrained model to within noise
)


def relative_weight_change(before: Backbone, after: Backbone) -> float:
    """``‖θ_after − θ_before‖ / ‖θ_before‖`` over every floating-point tensor of the two backbones."""
    a, b = before.model.state_dict(), after.model.state_dict()
    num = den = 0.0
    for k, v in a.items():
        if k in b and v.is_floating_point():
            num += float((b[k].double().cpu() - v.double().cpu()).pow(2).sum())
            den += float(v.double().cpu().pow(2).sum())
    return (num / den) ** 0.5 if den > 0 else float("nan")


def site_panels(study: FinetuneStudy, pool: str = "mean") -> pd.DataFrame:
    """Test accuracy of every block site, one panel per (dataset, site), both arms in each."""
    rows = study.test_rows()
    rows = rows[(rows["pool"] == pool) & rows["site"].isin(probing.BLOCK_SITES)].copy()
    rows["panel"] = rows["dataset"] + " · " + rows["site"]
    return rows


def _best_layer(correct: np.ndarray) -> np.ndarray:
    """Per column of accuracies (layers × resamples), the deepest layer index reaching the maximum."""
    flipped = correct[::-1]
    return correct.shape[0] - 1 - np.argmax(flipped >= flipped.max(0, keepdims=True) - 1e-12, axis=0)


def best_depth(
    ps: probing.ProbeStudy,
    dataset: str,
    *,
    site: str = probing.BLOCK_OUTPUT,
    pool: str = "mean",
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[int, float, float, float]:
    """(best layer, its relative depth, 95 % interval low, high) of ``site`` by test accuracy.

    The best layer is the one with the highest test accuracy (ties to the deeper one), as paper 1
    reads it; the interval resamples the test images (percentile bootstrap) and recomputes it.
    """
    y = ps.y_test[dataset]
    keys = [make_key(site, b, pool) for b in range(ps.depth)]
    correct = np.stack([ps.predictions[dataset][k] == y for k in keys]).astype(np.float32)  # layers × n
    point = int(_best_layer(correct.mean(1, keepdims=True))[0])
    rng = np.random.default_rng(seed)
    picks = []
    for start in range(0, n_boot, 100):
        idx = rng.integers(0, len(y), size=(min(100, n_boot - start), len(y)))
        picks.append(_best_layer(correct[:, idx].mean(-1)))
    rel = (np.concatenate(picks) + 1) / ps.depth
    return point + 1, (point + 1) / ps.depth, float(np.quantile(rel, 0.025)), float(np.quantile(rel, 0.975))


def best_depths(
    study: FinetuneStudy, *, pool: str = "mean", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Per dataset and arm: the best block output's relative depth with its bootstrap interval, and
    the best-minus-last gap with its paired interval (:func:`probing.best_vs_last`)."""
    out = []
    for dataset in study.pretrained:
        for arm, ps in study.arms(dataset).items():
            layer, rel, lo, hi = best_depth(ps, dataset, pool=pool, n_boot=n_boot, seed=seed)
            gap = probing.best_vs_last(ps, pool=pool, seed=seed).iloc[0]
            out.append(
                {
                    "model": gap["model"],
                    "dataset": dataset,
                    "site": probing.BLOCK_OUTPUT,
                    "layer": layer,
                    "pool": pool,
                    "metric": "best_relative_depth",
                    "value": rel,
                    "ci_low": lo,
                    "ci_high": hi,
                    "arm": arm,
                    "depth": ps.depth,
                    "validated_best_key": gap["best_key"],
                    "best_value": gap["best_value"],
                    "last_value": gap["last_value"],
                    "gap_best_minus_last": gap["value"],
                    "gap_ci_low": gap["ci_low"],
                    "gap_ci_high": gap["ci_high"],
                    "protocol": ps.protocol,
                }
            )
    return pd.DataFrame(out)


def claim_test(depths: pd.DataFrame) -> pd.DataFrame:
    """Paper 1's in-distribution claim per dataset and arm: the last block output is the best, or the
    best's paired gap over it has an interval reaching 0. Expected to hold for the fine-tuned arm."""
    t = depths.copy()
    last_key = t.apply(lambda r: make_key(probing.BLOCK_OUTPUT, int(r["depth"]) - 1, r["pool"]), axis=1)
    t["last_is_best"] = t["validated_best_key"] == last_key
    t["last_within_ci"] = t["last_is_best"] | (t["gap_ci_low"] <= 0)
    t["metric"], t["value"], t["ci_low"], t["ci_high"] = (
        "gap_best_minus_last",
        t["gap_best_minus_last"],
        t["gap_ci_low"],
        t["gap_ci_high"],
    )
    return t[
        [
            *TABLE_COLUMNS,
            "arm",
            "validated_best_key",
            "best_value",
            "last_value",
            "last_is_best",
            "last_within_ci",
        ]
    ]


def depth_headline(depths: pd.DataFrame, arm: str) -> str:
    """``0.83 [0.67, 1.00]`` for one dataset; ``digits 0.83 [0.67, 1.00]; ...`` for several."""
    rows = depths[depths["arm"] == arm]
    parts = [f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" for r in rows.itertuples()]
    if len(parts) == 1:
        return parts[0]
    return "; ".join(f"{d} {p}" for d, p in zip(rows["dataset"], parts))


def record_depth(name: str, label: str, study: FinetuneStudy, depths: pd.DataFrame, arm: str) -> object:
    """One arm's best relative depth as a headline: for one dataset its value, 95 % interval and the
    number of test images it was read from; for several, each dataset's value and interval."""
    from .. import report

    rows = depths[depths["arm"] == arm]
    if len(rows) == 1:
        r = rows.iloc[0]
        n = len(study.arms(r["dataset"])[arm].y_test[r["dataset"]])
        return report.headline(
            name,
            float(r["value"]),
            label=label,
            fmt=".2f",
            ci=(float(r["ci_low"]), float(r["ci_high"])),
            n=f"{n} test images",
        )
    return report.headline(name, depth_headline(depths, arm), label=label, n=f"{len(rows)} datasets")


def claim_headline(claims: pd.DataFrame, arm: str = "fine-tuned") -> str:
    rows = claims[claims["arm"] == arm]
    return f"{int(rows['last_within_ci'].sum())}/{len(rows)}"


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` images."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def validation_headline(study: FinetuneStudy) -> dict:
    """The chosen runs' validation accuracy at their last step (fixed in advance, so unbiased by the
    best-step pick; pooled over datasets by their validation images), its Wilson interval and n,
    and the accuracy at step 0 (the starting model) for comparison."""
    n = sum(t.n_val for t in study.tuned.values())
    best = sum(_last_val(t.chosen) * t.n_val for t in study.tuned.values()) / max(1, n)
    start = sum(t.chosen.history[0]["val_accuracy"] * t.n_val for t in study.tuned.values()) / max(1, n)
    starts = {_start(t.recipe) for t in study.tuned.values()}
    return {
        "value": best,
        "ci": wilson_interval(best, n),
        "n": f"{n} validation images",
        "start": start,
        "start_what": starts.pop() if len(starts) == 1 else "the starting model",
    }


def recipe_tables(study: FinetuneStudy) -> pd.DataFrame:
    """Per dataset, the recipe beside paper 1's (how far the run is from the paper)."""
    parts = []
    for dataset, tuned in study.tuned.items():
        bb = study.backbones[dataset]
        t = ft.compare_to_paper(
            tuned.recipe,
            dataset,
            model=bb.name,
            image_size=bb.image_size,
            n_train=tuned.n_train,
            n_val=tuned.n_val,
        )
        parts.append(t.assign(dataset=dataset, recipe=tuned.recipe.name))
    return pd.concat(parts, ignore_index=True)


def _last_val(run: ft.RunResult) -> float:
    return [h["val_accuracy"] for h in run.history if "val_accuracy" in h][-1]


def _start(recipe: ft.Recipe) -> str:
    return "the frozen linear probe" if recipe.head_init == "probe" else "a new random head"


def summary_text(study: FinetuneStudy, depths: pd.DataFrame, claims: pd.DataFrame) -> str:
    """The findings in words, from the numbers."""
    lines = []
    for dataset, tuned in study.tuned.items():
        d = depths[depths["dataset"] == dataset].set_index("arm")
        c = claims[(claims["dataset"] == dataset) & (claims["arm"] == "fine-tuned")].iloc[0]
        r = tuned.chosen
        paper = ft.paper_recipe(dataset)
        seen, paper_seen = tuned.recipe.steps * tuned.recipe.batch_size, paper.steps * paper.batch_size
        verdict = (
            "holds: the last layer is the best"
            if c["last_is_best"]
            else "holds: the last layer is within the interval of the best"
            if c["last_within_ci"]
            else "does not hold: the best layer beats the last beyond its interval"
        )
        pre = claims[(claims["dataset"] == dataset) & (claims["arm"] == "pretrained")].iloc[0]
        if pre["last_within_ci"] and c["last_within_ci"]:
            verdict += (
                ", but the pretrained model passes the same test, so here it does not tell the arms apart"
            )
        moved = study.weight_change.get(dataset, float("nan"))
        caution = f" The backbone's weights moved by {moved:.2g} (relative L2)."
        if r.best_step == 0:
            caution += (
                " Caution: no fine-tuning step beat the starting model on validation (the best step is 0, so "
                "the probed weights are the pretrained ones) and this run is no control."
            )
        elif moved < MOVED_ENOUGH:
            caution += (
                f" Caution: that is below {MOVED_ENOUGH:g}, so the fine-tuned arm is, to within noise, the "
                "pretrained model and this run is no control; paper 1's recipe (a GPU) is."
            )
        lines.append(
            f"- **{dataset}**: fine-tuned ({tuned.recipe.name}, {tuned.recipe.steps} steps of {tuned.recipe.batch_size}: "
            f"{100 * seen / paper_seen:.2g} % of the images the paper's run sees; lr {r.lr:g} chosen on validation) from a "
            f"validation accuracy of {r.history[0]['val_accuracy']:.3f} at step 0 ({_start(tuned.recipe)}) to "
            f"{_last_val(r):.3f} at the last step (best {r.best_val_accuracy:.3f} at step {r.best_step}, picked on the "
            f"same {tuned.n_val} images, so biased upwards). Best relative "
            f"depth: pretrained {d.loc['pretrained', 'value']:.2f} [{d.loc['pretrained', 'ci_low']:.2f}, "
            f"{d.loc['pretrained', 'ci_high']:.2f}], fine-tuned {d.loc['fine-tuned', 'value']:.2f} "
            f"[{d.loc['fine-tuned', 'ci_low']:.2f}, {d.loc['fine-tuned', 'ci_high']:.2f}]. Last-layer probe: "
            f"pretrained {d.loc['pretrained', 'last_value']:.3f}, fine-tuned {d.loc['fine-tuned', 'last_value']:.3f}. "
            f"Paper 1's in-distribution claim {verdict} (gap {c['value']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]).{caution}"
        )
    return "\n".join(lines)
