"""Where fine-tuning runs live: one content-addressed directory per run, next to the feature store.

``<data>/finetune/<model>__<dataset>__lr<lr>-seed<seed>__<hash>/`` where the hash covers the
model (name, architecture, weights digest, image size, transform), the training and validation
images (their identities: ids, splits, caps, sample digests), the recipe fields a run depends on,
the learning rate, the seed and :data:`FORMAT`. A rerun with the same inputs finds the finished
run and reuses it; any changed input gets a new directory. Inside:

* ``state.pt``: the latest training state (model, head, optimizer, step, history, best so far),
  replaced atomically every ``checkpoint_every`` steps, so a killed run resumes from it;
* ``best-backbone.safetensors``: the backbone at the best validation step, in timm's own key
  layout (no classifier head), loadable with ``load_model(name, weights=path)``;
* ``best-head.safetensors``: the linear head at that step;
* ``run.json``: the inputs, and once finished the result and the per-step history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..paths import data_dir
from ..store import _slug, content_hash, store_lock

FORMAT = 3  # bump when the training loop changes what a run produces (3: no-augmentation runs use the eval transform)
STATE = "state.pt"
BACKBONE = "best-backbone.safetensors"
HEAD = "best-head.safetensors"
RUN = "run.json"

__all__ = ["BACKBONE", "FORMAT", "HEAD", "RUN", "STATE", "finetune_dir", "run_dir", "store_lock"]


def finetune_dir() -> Path:
    """``<data>/finetune``: beside ``<data>/features``."""
    path = data_dir() / "finetune"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(inputs: dict[str, Any], root: Path | None = None) -> Path:
    """The directory named by ``inputs`` (model, data, recipe, lr, seed)."""
    name = "__".join(
        _slug(p)
        for p in (
            inputs["model"]["name"],
            inputs["train"]["id"],
            f"lr{inputs['lr']:g}-seed{inputs['seed']}",
            content_hash(inputs),
        )
    )
    return (root or finetune_dir()) / name


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors_atomic(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_state(path: Path) -> dict | None:
    """The saved training state, or None when there is none (or it is unreadable: start over)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (
        OSError,
        RuntimeError,
        EOFError,
        KeyError,
        AttributeError,
        ImportError,
    ):  # a stale format: start over
        return None
