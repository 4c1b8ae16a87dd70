"""One call from a backbone and datasets to the tidy shift table: extract (or reuse) then measure.

``measure_shift(backbone, reference, targets)`` gets each dataset's feature store through
:func:`probekit.extract.features` (cached by content hash, so a second call only measures) and
runs :func:`probekit.shift.shift_table` of every target against the reference, one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from probekit.shift.errors import ShiftInputError
from probekit.shift.table import MEASURES, shift_table


def _as_dataset(ds: Any) -> Any:
    if isinstance(ds, str):
        from probekit.data import load_dataset

        return load_dataset(ds)
    return ds


def _name(ds: Any) -> str:
    return str(getattr(ds, "id", None) or getattr(ds, "name", None) or type(ds).__name__)


def measure_shift(
    backbone: Any,
    reference: Any,
    targets: Any | Sequence[Any],
    *,
    sites: Iterable[str] | None = None,
    pools: Sequence[str] = ("cls", "ap", "mean"),
    layers: Iterable[int] | None = None,
    measures: Sequence[str] = MEASURES,
    n: int | None = None,
    n_boot: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
    extract_kw: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Shift of each target dataset from ``reference`` at every (site, layer, pool), with CIs.

    ``backbone`` is a :func:`probekit.models.load_model` result; ``reference`` and ``targets`` are
    datasets (``ds[i] -> (PIL image, label)`` with ``.id``) or dataset ids for
    :func:`probekit.data.load_dataset`. ``sites``, ``pools``, ``layers`` choose the keys as in
    :func:`probekit.extract.extract` (``tokens`` pools are skipped), ``extract_kw`` passes more
    (``batch_size``, ``root``, ...). Every image of each dataset is extracted (size them with
    ``max_per_class`` or ``reference_set(n=...)``); ``n`` images per side are then drawn at random
    for the measures (default: the smaller dataset). Other arguments go to
    :func:`~probekit.shift.shift_table`. Returns the concatenated tidy tables.
    """
    from probekit.extract import features

    kw = dict(extract_kw or {})
    kw.setdefault("progress", progress)
    if device is not None:
        kw.setdefault("device", device)
    pools = [p for p in pools if p != "tokens"]
    if not pools:
        raise ShiftInputError("shift measures need pooled features: pass pools from ('cls', 'ap', 'mean')")
    many = isinstance(targets, (list, tuple))
    target_list = [_as_dataset(t) for t in (targets if many else [targets])]
    reference = _as_dataset(reference)
    ref_store = features(backbone, reference, sites=sites, pools=pools, layers=layers, **kw)
    from probekit.sites import resolve_sites

    keys = [k for k in resolve_sites(backbone.model, sites=sites, pools=pools, layers=layers)
            if not k.endswith("/tokens")]
    tables = []
    for target in target_list:
        tgt_store = features(backbone, target, sites=sites, pools=pools, layers=layers, **kw)
        labels = {"model": str(backbone.name), "dataset": _name(target), "reference": _name(reference)}
        tables.append(shift_table(ref_store, tgt_store, keys=keys, depth=int(backbone.depth), labels=labels,
                                  measures=measures, n=n, n_boot=n_boot, seed=seed, device=device,
                                  progress=progress))
    return pd.concat(tables, ignore_index=True)
