"""Dataset lists as the studies use them: ids (clean and corrupted) loaded with one cap and seed."""

from __future__ import annotations

from collections.abc import Sequence

from ..data import CORRUPTIONS, ImageDataset, known_ids, load_dataset, parse_id
from ..data.registry import is_known_base
from ..errors import UnknownDatasetError


def corrupted_ids(
    base: str, families: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = (5,)
) -> list[str]:
    """``emoji+contrast@5``-style ids for every family × severity of ``base``."""
    return [f"{base}+{family}@{severity}" for family in families for severity in severities]


def load_all(
    ids: Sequence[str], *, split: str = "train", max_per_class: int | None = None, seed: int = 0
) -> list[ImageDataset]:
    """Each id's ``split``, capped per class; unknown ids fail before anything is extracted."""
    return [load_dataset(i, split=split, max_per_class=max_per_class, seed=seed) for i in ids]


def base_and_corruption(dataset_id: str) -> tuple[str, str, int]:
    """``("emoji", "contrast", 5)`` for ``emoji+contrast@5``; ``(id, "clean", 0)`` for a clean id.

    The registry's :func:`~probekit.data.parse_id` reads the id; this is its tidy-table shape.
    """
    base, corruption = parse_id(dataset_id)
    return (base, "clean", 0) if corruption is None else (base, *corruption)


def check_inputs(
    backbone, datasets: Sequence[str], sites: Sequence[str] | None, pools: Sequence[str]
) -> None:
    """Fail before any work on a misspelled dataset id, site or pool (the message lists the valid ones)."""
    from ..sites import resolve_sites

    known = set(known_ids())
    for dataset_id in datasets:
        base, _ = parse_id(dataset_id)
        if not is_known_base(base):
            raise UnknownDatasetError(
                f"unknown dataset {dataset_id!r}; known ids: {', '.join(sorted(known))} "
                "(or folder:/path, and +<corruption>@<severity>)"
            )
    resolve_sites(backbone.model, sites=sites, pools=pools)
