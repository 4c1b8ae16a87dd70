"""Paper 1's grid: every (learning rate, seed) run of a recipe, the learning rate chosen on the
validation split, and the chosen checkpoint loaded back as a :class:`~probekit.models.Backbone`.

The training images are the dataset's ``train`` split and the validation images its ``val``
split (probekit's seeded stratified splits: 80/20 of the official training images where a test
split exists, 60/20/20 otherwise), so the ``test`` split the probes are scored on is never seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import load_dataset
from ..models import Backbone, load_model
from . import batches
from . import checkpoint as ckpt
from .loop import RunResult, train_run
from .recipe import Recipe


@dataclass
class FineTuned:
    """The grid's runs, the learning rate chosen on validation, and the checkpoint to probe."""

    model: str
    dataset: str
    recipe: Recipe
    runs: list[RunResult]
    chosen_lr: float
    chosen: RunResult
    n_train: int
    n_val: int
    inputs: dict = field(default_factory=dict)

    @property
    def weights(self) -> Path:
        """The fine-tuned backbone in timm's key layout: ``load_model(model, weights=this)``."""
        return self.chosen.backbone_weights

    def history(self) -> pd.DataFrame:
        """Tidy per-step table of every run: train_loss (every step) and val_accuracy (every pass, and
        at step 0, before training)."""
        rows = []
        for run in self.runs:
            for h in run.history:
                common = {
                    "model": self.model,
                    "dataset": self.dataset,
                    "site": np.nan,
                    "layer": np.nan,
                    "pool": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "step": h["step"],
                    "lr": run.lr,
                    "seed": run.seed,
                    "run": f"lr={run.lr:g} seed={run.seed}",
                    "scheduled_lr": h.get("lr", np.nan),
                }
                if "loss" in h:  # step 0 (before training) has a validation accuracy only
                    rows.append({**common, "metric": "train_loss", "value": h["loss"]})
                if "val_accuracy" in h:
                    rows.append({**common, "metric": "val_accuracy", "value": h["val_accuracy"]})
        return pd.DataFrame(rows)

    def grid(self) -> pd.DataFrame:
        """One row per run: best validation accuracy and its step, whether it was chosen."""
        return pd.DataFrame(
            [
                {
                    "model": self.model,
                    "dataset": self.dataset,
                    "site": np.nan,
                    "layer": np.nan,
                    "pool": np.nan,
                    "metric": "best_val_accuracy",
                    "value": r.best_val_accuracy,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "lr": r.lr,
                    "seed": r.seed,
                    "best_step": r.best_step,
                    "steps": self.recipe.steps,
                    "chosen": r is self.chosen,
                    "reused": r.reused,
                    "seconds": r.seconds,
                    "checkpoint": str(r.path),
                }
                for r in self.runs
            ]
        )


def choose_lr(runs: list[RunResult]) -> float:
    """The learning rate with the best mean (over seeds) best-validation accuracy; ties go to the
    first in grid order."""
    means: dict[float, list[float]] = {}
    for r in runs:
        means.setdefault(r.lr, []).append(r.best_val_accuracy)
    return max(means, key=lambda lr: float(np.mean(means[lr])))


def run_inputs(backbone: Backbone, train_ds, val_ds, recipe: Recipe, lr: float, seed: int) -> dict:
    """Everything one run's result depends on: its hash names the run's directory."""
    return {
        "format": ckpt.FORMAT,
        "model": backbone.identity(),
        "train": train_ds.identity(),
        "val": val_ds.identity(),
        "recipe": recipe.run_key(),
        "lr": float(lr),
        "seed": int(seed),
    }


def finetune(
    backbone: Backbone,
    dataset_id: str,
    recipe: Recipe,
    *,
    data_seed: int = 0,
    root: Path | None = None,
    checkpoint_every: int = 10,
    progress: bool = True,
    workers: int | None = None,
) -> FineTuned:
    """Run (or resume, or reuse) every run of ``recipe`` on ``dataset_id`` and choose the learning rate.

    ``data_seed`` seeds the train/val/test split (the same seed the probes' splits use, so the
    probes' test images are never trained on). ``root`` overrides ``<data>/finetune``.
    """
    train_ds = load_dataset(dataset_id, split="train", seed=data_seed, max_per_class=recipe.train_per_class)
    val_ds = load_dataset(dataset_id, split="val", seed=data_seed, max_per_class=recipe.val_per_class)
    train, val = batches.decode(train_ds), batches.decode(val_ds)
    if workers is None:
        workers = 4 if backbone.device.type == "cuda" else 0
    runs = []
    for lr in recipe.lrs:
        for seed in recipe.seeds:
            inputs = run_inputs(backbone, train_ds, val_ds, recipe, lr, seed)
            runs.append(
                train_run(
                    backbone.model,
                    train,
                    val,
                    len(train_ds.classes),
                    backbone.data_config,
                    backbone.transform,
                    recipe,
                    lr,
                    seed,
                    ckpt.run_dir(inputs, root),
                    inputs,
                    checkpoint_every=checkpoint_every,
                    progress=progress,
                    workers=workers,
                )
            )
    lr = choose_lr(runs)
    chosen = next(r for r in runs if r.lr == lr and r.seed == recipe.chosen_seed)
    return FineTuned(backbone.name, dataset_id, recipe, runs, lr, chosen, len(train_ds), len(val_ds))


def load_finetuned(
    backbone: Backbone, tuned: FineTuned, *, device: str | torch.device | None = None, **model_kwargs
) -> Backbone:
    """The chosen checkpoint as a frozen :class:`Backbone`, through the standard ``load_model`` path.

    ``model_kwargs`` must repeat any passed when ``backbone`` was loaded (e.g. ``depth=2``).
    """
    tuned_bb = load_model(
        backbone.name,
        image_size=backbone.image_size,
        weights=tuned.weights,
        device=device or backbone.device,
        **model_kwargs,
    )
    r = tuned.chosen
    tuned_bb.display_name = (
        f"{backbone.display_name}, fine-tuned on {tuned.dataset} "
        f"(lr {r.lr:g}, seed {r.seed}, best of {tuned.recipe.steps} steps: {r.best_step})"
    )
    return tuned_bb
