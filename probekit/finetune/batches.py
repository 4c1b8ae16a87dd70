"""Training and validation batches for fine-tuning, deterministic from (seed, step).

The batch drawn at step ``s`` and its augmentation depend only on the run's seed and ``s``, so a
run resumed from a checkpoint at step ``s`` sees exactly the batches an uninterrupted run would:
epoch ``e`` is the permutation ``default_rng([seed, e])`` of the training images, cut into full
batches (the last partial batch of an epoch is dropped, as the paper's loader does), and each
image's random crop and flip are drawn from ``torch.manual_seed`` of (seed, step, position).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def train_transform(data_config: dict, augment: bool = True):
    """Paper 1's training transform (RandomResizedCrop + horizontal flip), with the model's own
    resolution, interpolation, mean and std; without ``augment`` a resize and centre crop to the
    input size (the training loop uses the model's own eval transform instead, whose crop may
    differ)."""
    from torchvision import transforms as T

    size = int(data_config["input_size"][-1])
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}.get(
        data_config.get("interpolation", "bicubic"), T.InterpolationMode.BICUBIC
    )
    normalize = T.Normalize(mean=list(data_config["mean"]), std=list(data_config["std"]))
    if not augment:
        return T.Compose([T.Resize(size, interpolation=interp), T.CenterCrop(size), T.ToTensor(), normalize])
    return T.Compose(
        [T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    )


def effective_batch(n: int, batch_size: int) -> int:
    """The batch size actually used: the recipe's, or the whole training set when it is smaller."""
    return min(batch_size, n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Training-set positions of the batch at ``step`` (0-based)."""
    b = effective_batch(n, batch_size)
    per_epoch = n // b
    epoch, j = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[j * b : (j + 1) * b]


class _Augmented(Dataset):
    """(position, augmentation seed) -> (tensor, label); images decoded once and kept in memory."""

    def __init__(self, images: list, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        pos, aug_seed = item
        torch.manual_seed(aug_seed)
        return self.transform(self.images[pos]), int(self.labels[pos])


class _Steps:
    """Batch sampler: for each step from ``start``, the (position, augmentation seed) pairs."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            idx = batch_indices(self.n, self.batch_size, self.seed, step)
            base = (self.seed * 1_000_003 + step) * 4096
            yield [(int(i), (base + k) % 2**63) for k, i in enumerate(idx)]


def decode(dataset: Any) -> tuple[list, np.ndarray]:
    """Every (image, label) of an :class:`~probekit.data.ImageDataset`, decoded once."""
    images = [dataset[i][0] for i in range(len(dataset))]
    return images, np.asarray(dataset.labels, dtype=np.int64)


def train_batches(
    images: list,
    labels: np.ndarray,
    transform,
    *,
    batch_size: int,
    seed: int,
    start: int,
    stop: int,
    workers: int = 0,
) -> DataLoader:
    """Batches for steps ``start .. stop - 1``, each exactly as an uninterrupted run draws it."""
    return DataLoader(
        _Augmented(images, labels, transform),
        batch_sampler=_Steps(len(images), batch_size, seed, start, stop),
        num_workers=workers,
        persistent_workers=False,
    )


class _Plain(Dataset):
    def __init__(self, images: list, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def eval_batches(
    images: list, labels: np.ndarray, transform, *, batch_size: int, workers: int = 0
) -> DataLoader:
    """Validation batches through the model's eval transform, in order."""
    return DataLoader(
        _Plain(images, labels, transform), batch_size=batch_size, shuffle=False, num_workers=workers
    )
