"""A quick per-layer sanity table for a loaded backbone (the example notebook's analysis).

For a few scikit-learn digits (bundled, offline) it reads the CLS token after every block and
reports, per layer: the mean CLS norm, and the accuracy of a nearest-class-mean classifier fitted
on half the images and tested on the other half (with a bootstrap interval). Cheap enough for a
smoke test, real enough to show that deeper features of a pretrained model separate classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .metrics import bootstrap_ci


def digits_images(n: int, seed: int = 0) -> tuple[list[Image.Image], np.ndarray]:
    """``n`` scikit-learn digits as RGB PIL images (classes balanced by a seeded shuffle)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:n]
    images = [Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8)).convert("RGB") for i in order]
    return images, digits.target[order]


@torch.no_grad()
def cls_by_layer(backbone, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
    """CLS token after each block: array (depth, n_images, embed_dim), float32."""
    model = backbone.model
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        x = torch.stack([backbone.transform(im) for im in images[start : start + batch_size]]).to(device)
        inter = model.forward_intermediates(
            x, return_prefix_tokens=True, intermediates_only=True, output_fmt="NLC", norm=False
        )
        chunks.append(torch.stack([prefix[:, 0] for _, prefix in inter]).float().cpu())
    return torch.cat(chunks, dim=1).numpy()


def layer_table(
    backbone, images: list[Image.Image], labels: np.ndarray, dataset: str = "digits", seed: int = 0
) -> pd.DataFrame:
    """Tidy table: per layer, ``cls_norm`` and ``ncm_accuracy`` (nearest class mean, half split)."""
    feats = cls_by_layer(backbone, images)
    train = np.arange(len(labels)) % 2 == 0
    classes = np.unique(labels[train])
    rows = []
    for layer, f in enumerate(feats):
        norms = np.linalg.norm(f, axis=1)
        lo, hi = np.percentile(norms, [2.5, 97.5]) if len(norms) > 1 else (np.nan, np.nan)
        rows.append(("cls_norm", layer, float(norms.mean()), float(lo), float(hi)))
        means = np.stack([f[train & (labels == c)].mean(axis=0) for c in classes])
        dists = ((f[~train, None, :] - means[None]) ** 2).sum(-1)
        pred = classes[dists.argmin(axis=1)]
        acc, lo, hi = bootstrap_ci(labels[~train], pred, n_boot=500, seed=seed)
        rows.append(("ncm_accuracy", layer, acc, lo, hi))
    df = pd.DataFrame(rows, columns=["metric", "layer", "value", "ci_low", "ci_high"])
    df.insert(0, "pool", "cls")
    df.insert(0, "site", "resid_post")
    df.insert(0, "dataset", dataset)
    df.insert(0, "model", backbone.name)
    return df[["model", "dataset", "site", "layer", "pool", "metric", "value", "ci_low", "ci_high"]]
