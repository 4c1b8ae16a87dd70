"""Feature extraction: one forward pass per batch reads every requested site, pooled in the hooks.

:func:`extract` (and its everyday alias :func:`features`) runs a backbone over a dataset and
writes a :class:`~probekit.store.FeatureStore`. The store directory is named by a content hash of
the inputs, so calling it again returns the finished store at once, resumes a killed run at the
first unrecorded chunk, or runs one more pass for keys the store does not have yet. Under
``torchrun`` the chunks are shared round-robin over the ranks, all writing into the same store.

Defaults: CUDA runs under bfloat16 autocast with pinned memory, non-blocking copies and DataLoader
workers; the CPU computes in float32 (``dtype="bfloat16"`` opts in to autocast, worth it on CPUs
with AMX). Features are stored as float16 unless ``storage_dtype="float32"``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .device import local_rank, resolve_device
from .errors import ProbekitError
from .provenance import environment_info, runtime_versions
from .sites import DEFAULT_POOLS, capture, key_dims, resolve_sites
from .store import (
    INPUTS,
    META,
    DamagedStoreError,
    FeatureStore,
    StoreError,
    StoreWriter,
    content_hash,
    recorded_inputs,
    repair,
    store_dirname,
    store_lock,
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExtractError(ProbekitError, ValueError):
    """An extraction request that cannot run as given."""


class BackboneLike(Protocol):
    model: torch.nn.Module
    transform: Callable

    def identity(self) -> dict: ...


class _Rows(Dataset):
    """Dataset rows as (image tensor, label): the backbone's own transform applied to each PIL image."""

    def __init__(self, dataset: Any, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i]
        return self.transform(image), int(label)


def _rank_device(device: str | torch.device | None) -> torch.device:
    """:func:`~probekit.device.resolve_device`, with a bare ``"cuda"`` pinned to this rank's GPU."""
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return device


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ExtractError(f"dtype {dtype!r}: use one of {list(_DTYPES)}")
        return _DTYPES[dtype]
    return dtype


def _identity(obj: Any, what: str) -> dict:
    ident = getattr(obj, "identity", None)
    if not callable(ident):
        raise ExtractError(f"the {what} has no identity() method; the store hash needs one")
    return ident()


def store_inputs(
    backbone: BackboneLike,
    dataset: Any,
    *,
    compute_dtype: torch.dtype,
    storage_dtype: str,
    n: int,
    limit: int | None,
) -> dict[str, Any]:
    """Exactly what determines the stored numbers; its hash names the store directory."""
    ds_id = _identity(dataset, "dataset")
    model_id = _identity(backbone, "backbone")
    return {
        "model": model_id,
        "dataset": ds_id,
        "split": ds_id.get("split", getattr(dataset, "split", None)),
        "image_size": getattr(backbone, "image_size", model_id.get("image_size")),
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "storage_dtype": np.dtype(storage_dtype).name,
        "rows": n if limit is not None else None,
    }


def store_path(backbone: BackboneLike, dataset: Any, inputs: dict[str, Any], root: Path) -> Path:
    model_name = getattr(backbone, "name", None) or inputs["model"].get("name", "model")
    ds_name = inputs["dataset"].get("name") or inputs["dataset"].get("id") or type(dataset).__name__
    return root / store_dirname(model_name, ds_name, inputs["split"], content_hash(inputs))


def extract(
    backbone: BackboneLike,
    dataset: Any,
    *,
    sites: Iterable[str] | None = None,
    pools: Sequence[str] = DEFAULT_POOLS,
    token_sites: Iterable[str] = (),
    layers: Iterable[int] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    storage_dtype: str = "float16",
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    checkpoint_s: float = 5.0,
    durable: bool = False,
    command: str | None = None,
) -> FeatureStore:
    """Extract pooled features at every requested site into a (resumable) feature store.

    ``sites=None``: all eight block sites on every block plus ``embed`` and ``norm``; ``pools``
    applies to all of them, ``token_sites`` adds unpooled tokens for named sites. ``layers``
    restricts block sites to those block indices. ``limit`` keeps the first N images.
    ``batch_size`` also fixes the store's chunk size when it is created; resuming or extending a
    store keeps its chunk size, so batches (and hence the numbers) match an uninterrupted run.
    ``num_workers``: DataLoader workers (default: up to 8 on CUDA, 0 on the CPU). Progress is
    recorded at most every ``checkpoint_s`` seconds (0: after every batch) and at the end; it
    survives the process being killed (SIGKILL included), and with ``durable=True`` (an msync of
    every file per record, slow on some disks) an OS crash too.
    Returns the store; it is complete unless the run was interrupted.
    """
    device = _rank_device(device)
    compute_dtype = _resolve_dtype(dtype, device)
    info = distributed.setup(device)
    model = backbone.model
    keys = resolve_sites(model, sites=sites, pools=pools, token_sites=token_sites, layers=layers)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n == 0:
        raise ExtractError("the dataset is empty: nothing to extract")
    inputs = store_inputs(
        backbone, dataset, compute_dtype=compute_dtype, storage_dtype=storage_dtype, n=n, limit=limit
    )
    root = Path(root) if root is not None else _features_dir()
    path = store_path(backbone, dataset, inputs, root)

    model = model.to(device).eval()
    with store_lock(path) if info.is_main else contextlib.nullcontext():
        if info.is_main:
            store, damaged = _open_or_create(path, inputs, n, batch_size, dataset, command)
            missing = [k for k in keys if k not in store.meta["keys"]]
            missing += [k for k in damaged if k not in missing and k not in store.meta["keys"]]
            if missing:
                image_size = getattr(backbone, "image_size", None) or _image_size_of(model)
                store.add_pass(missing, key_dims(model, missing, image_size), storage_dtype)
        distributed.barrier()
        store = FeatureStore.open(path)
        for index, p in enumerate(store.meta["passes"]):
            if not p["complete"]:  # every rank sees the same meta, so all run the same passes
                _run_pass(
                    store,
                    index,
                    backbone,
                    dataset,
                    device,
                    compute_dtype,
                    info,
                    progress,
                    num_workers,
                    checkpoint_s,
                    durable,
                )
        distributed.barrier()
        if info.is_main:
            store.merge_progress()
        distributed.barrier()
    store.reload()
    return store


def features(backbone: BackboneLike, dataset: Any, **kw: Any) -> FeatureStore:
    """The feature store for ``backbone`` on ``dataset``: reused when its inputs match and it has the
    requested keys, else extracted (resuming a partial store). Takes :func:`extract`'s keywords."""
    kw.setdefault("progress", True)
    return extract(backbone, dataset, **kw)


def _features_dir() -> Path:
    from .paths import features_dir

    return features_dir()


def _image_size_of(model: torch.nn.Module) -> tuple[int, int]:
    size = model.patch_embed.img_size
    return tuple(size) if isinstance(size, tuple | list) else (size, size)


def _open_or_create(
    path: Path, inputs: dict[str, Any], n: int, batch_size: int, dataset: Any, command: str | None
) -> tuple[FeatureStore, list[str]]:
    """The store at ``path`` (created, or opened and repaired) and the damaged keys to re-extract."""
    inputs = _jsonable(inputs)
    info = {"versions": runtime_versions(), **_skipped_info(dataset)}
    damaged: list[str] = []
    if (path / META).is_file() or (path / INPUTS).is_file() or any(path.glob("*.npy")):
        try:
            store = FeatureStore.open(path)
        except DamagedStoreError as err:
            recorded = recorded_inputs(path)
            if recorded is not None and recorded != inputs:
                raise _different_inputs(path) from None
            print(
                f"repairing {path.name}: {'; '.join(f'{k}: {v}' for k, v in err.damaged.items())}; "
                "re-extracting only what is damaged",
                file=sys.stderr,
                flush=True,
            )
            store, damaged = repair(
                path, inputs, n, batch_size, lambda: _labels_of(dataset, n), command, info
            )
        if store.meta["inputs"] != inputs or store.n != n:
            raise _different_inputs(path)
        store.meta.update(_skipped_info(dataset))
        return store, damaged
    return FeatureStore.create(
        path, inputs=inputs, n=n, chunk_rows=batch_size, info=info, command=command
    ), []


def _different_inputs(path: Path) -> StoreError:
    return StoreError(
        f"{path} holds a store for different inputs (hash collision or edited meta.json); "
        "delete the directory to re-extract"
    )


def _skipped_info(dataset: Any) -> dict[str, Any]:
    """Broken or unreadable files the dataset left out, for meta.json (counted, a few listed)."""
    skipped = int(getattr(dataset, "skipped", 0) or 0)
    examples = (getattr(dataset, "provenance", None) or {}).get("skipped_examples", [])
    return {"skipped_files": skipped, "skipped_examples": list(examples)[:20]}


def _labels_of(dataset: Any, n: int) -> np.ndarray:
    """The first ``n`` labels of ``dataset`` (its ``labels`` array, else read row by row)."""
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(labels) >= n:
        return np.asarray(labels[:n], dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(n)], dtype=np.int64)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _run_pass(
    store: FeatureStore,
    index: int,
    backbone: BackboneLike,
    dataset: Any,
    device: torch.device,
    compute_dtype: torch.dtype,
    info: distributed.DistInfo,
    progress: bool,
    num_workers: int | None,
    checkpoint_s: float,
    durable: bool,
) -> None:
    keys = store.meta["passes"][index]["keys"]
    done = store.done_chunks(index)
    todo = [c for c in range(store.num_chunks) if c not in done][info.rank :: info.world_size]
    model = backbone.model
    cuda = device.type == "cuda"
    if num_workers is None:
        num_workers = min(8, max((os.cpu_count() or 1) - 1, 0)) if cuda else 0
    rows = _Rows(dataset, backbone.transform)
    batches = [list(range(store.chunk_slice(c).start, store.chunk_slice(c).stop)) for c in todo]
    loader = DataLoader(
        rows,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=cuda,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    writer = StoreWriter(store, keys)
    storage = torch.float16 if np.dtype(store.meta["keys"][keys[0]]["dtype"]) == np.float16 else torch.float32
    autocast = (
        torch.autocast(device.type, dtype=compute_dtype)
        if compute_dtype != torch.float32
        else contextlib.nullcontext()
    )
    token_keys = [k for k in keys if k.endswith("/tokens")]
    new_done: set[int] = set()
    last_ckpt = time.monotonic()
    t0 = time.monotonic()
    bar = _progress_bar(
        sum(len(b) for b in batches), progress and info.is_main, store.path.name, info.world_size
    )

    def checkpoint() -> None:
        if durable:
            writer.sync()
        if info.world_size > 1:
            store.write_rank_progress(info.rank, index, new_done, fsync=durable)
        else:
            store.record_done(index, new_done, fsync=durable)

    overflow: torch.Tensor | None = None
    pending: tuple | None = None  # lag one batch so the device computes while the host writes

    def drain(item: tuple) -> None:
        event, chunk, flat_host, toks_host, labels = item
        if event is not None:
            event.synchronize()
        writer.write(
            store.chunk_slice(chunk),
            flat_host.numpy(),
            labels.numpy(),
            {k: v.numpy() for k, v in toks_host.items()},
        )
        new_done.add(chunk)
        bar.update(len(labels))

    try:
        with torch.no_grad(), capture(model, keys) as cap:
            for chunk, (x, y) in zip(todo, loader, strict=True):
                x = x.to(device, non_blocking=True)
                with autocast:
                    model.forward_features(x)
                feats = cap.take()
                flat = (
                    torch.cat([feats[k] for k in writer.flat_keys], dim=1).to(storage)
                    if writer.flat_keys
                    else torch.empty(len(y), 0, device=device, dtype=storage)  # token keys only
                )
                if storage == torch.float16:  # checked once at the end: no device sync per batch
                    overflow = flat.isinf().any() if overflow is None else overflow | flat.isinf().any()
                flat_host = flat.to("cpu", non_blocking=cuda)
                toks_host = {k: feats[k].to(storage).to("cpu", non_blocking=cuda) for k in token_keys}
                event = None
                if cuda:
                    event = torch.cuda.Event()
                    event.record()
                if pending is not None:
                    drain(pending)
                pending = (event, chunk, flat_host, toks_host, y)
                if new_done and time.monotonic() - last_ckpt >= checkpoint_s:
                    checkpoint()
                    last_ckpt = time.monotonic()
            if pending is not None:
                drain(pending)
                pending = None
    finally:
        bar.close()
        if new_done:
            checkpoint()
        writer.close()
    seconds = time.monotonic() - t0
    if overflow is not None and bool(overflow):
        warnings.warn(
            f"{store.path.name}: some features exceed the float16 range and were stored as inf; "
            "extract with storage_dtype='float32' for this model",
            RuntimeWarning,
            stacklevel=3,
        )
    _record_run(
        store, index, info, device, compute_dtype, len(new_done), sum(len(b) for b in batches), seconds
    )


def _record_run(
    store: FeatureStore,
    index: int,
    info: distributed.DistInfo,
    device: torch.device,
    compute_dtype: torch.dtype,
    chunks: int,
    rows: int,
    seconds: float,
) -> None:
    """Append one record per run to ``meta['runs']``; a multi-rank run is one record with the job's
    rows and rate (slowest rank's time) and the per-rank rows and seconds under ``ranks``."""
    mine = {"rank": info.rank, "rows": rows, "seconds": round(seconds, 3)}
    ranks = distributed.gather(mine)  # also a barrier: every rank's progress file is final
    if info.is_main:
        total = sum(r["rows"] for r in ranks)
        slowest = max(r["seconds"] for r in ranks)
        run = {
            "pass": index,
            "world_size": info.world_size,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "compute_dtype": str(compute_dtype).removeprefix("torch."),
            "rows": total,
            "seconds": slowest,
            "images_per_s": round(total / slowest, 2) if slowest > 0 else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if info.world_size > 1:
            run["ranks"] = ranks
            store.merge_progress()
        store.meta.setdefault("runs", []).append(run)
        store.meta["provenance"] = environment_info()
        store.save()
    distributed.barrier()
    if info.world_size > 1:
        store.reload()


def _progress_bar(total: int, enabled: bool, desc: str, world: int):
    from .progress import progress_bar

    rank = f" (rank 0 of {world})" if world > 1 else ""
    return progress_bar(
        total=total, unit="img", desc=f"extract {desc[:40]}{rank}", enabled=enabled, smoothing=0.1
    )
