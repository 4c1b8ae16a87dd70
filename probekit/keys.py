"""Feature keys: the one string format every store, probe and table uses to name a feature.

A key is ``<site path>/<pool>``: ``blocks.7.act/cls``, ``blocks.0.resid_mid/mean``,
``embed/ap``, ``norm/cls``. In tidy tables a key becomes ``site``, ``layer`` and ``pool``, where
``layer`` counts depth from 0 (``embed``, the stream entering block 0) through ``i + 1`` for
block ``i``; the final ``norm`` sits at layer ``depth`` (it normalises block ``depth - 1``).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

BLOCK_SITES = ("ln1", "attn", "resid_mid", "ln2", "fc1", "act", "fc2", "resid_post")
MODEL_SITES = ("embed", "norm")
POOLS = ("cls", "ap", "mean", "tokens")


def model_order(site: str, block: int | None) -> tuple[int, int]:
    """Sort key for sites in the order a forward pass meets them: ``embed``, block by block in
    :data:`BLOCK_SITES` order, then ``norm``."""
    if site == "embed":
        return (-1, 0)
    if site == "norm":
        return (sys.maxsize, 0)
    return (block, BLOCK_SITES.index(site))


class FeatureKey(NamedTuple):
    """A parsed feature key."""

    site: str  # one of BLOCK_SITES or MODEL_SITES
    block: int | None  # block index for block sites, None for model sites
    pool: str  # one of POOLS

    @property
    def path(self) -> str:
        return self.site if self.block is None else f"blocks.{self.block}.{self.site}"

    def __str__(self) -> str:
        return f"{self.path}/{self.pool}"

    def layer(self, depth: int) -> int:
        """Depth index for tables: embed 0, block i -> i + 1, norm -> depth."""
        if self.site == "embed":
            return 0
        if self.site == "norm":
            return depth
        return self.block + 1


def make_key(site: str, block: int | None, pool: str) -> str:
    """Build a key string, checking each part."""
    return str(parse_key(f"{site if block is None else f'blocks.{block}.{site}'}/{pool}"))


def parse_key(key: str) -> FeatureKey:
    """Split ``blocks.7.act/cls`` into ``FeatureKey('act', 7, 'cls')``; errors name the valid parts."""
    path, sep, pool = key.partition("/")
    if not sep or pool not in POOLS:
        raise ValueError(f"feature key {key!r} must end in /<pool> with pool in {POOLS}")
    if path in MODEL_SITES:
        return FeatureKey(path, None, pool)
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in BLOCK_SITES:
        return FeatureKey(parts[2], int(parts[1]), pool)
    raise ValueError(
        f"feature key {key!r}: site path must be one of {MODEL_SITES} or blocks.<i>.<site> "
        f"with site in {BLOCK_SITES}"
    )
