"""An on-disk cache of analysis results, keyed by everything that determines them.

Feature stores make re-extraction free; this makes re-analysis free too, so a rerun of the
notebook suite with nothing changed only re-renders. A result is stored under a hash of its
inputs (feature-store names, which are content hashes themselves, the analysis parameters, the
seed) and of probekit's own source code, so any change to the data, the settings or the code
computes afresh. Results live under ``data/cache/results/``; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from .paths import data_dir

T = TypeVar("T")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of probekit's Python sources: a code change invalidates every cached result."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def result_key(kind: str, inputs: dict[str, Any]) -> str:
    """Content hash naming one result."""
    blob = json.dumps({"kind": kind, "code": code_version(), **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached(kind: str, inputs: dict[str, Any], compute: Callable[[], T]) -> T:
    """``compute()``'s value, from the cache when these exact inputs were computed before.

    Set ``PROBEKIT_NO_RESULT_CACHE=1`` to always compute. A result that cannot be written (a full
    disk) is still returned, with a warning; an unreadable cache entry is computed again.
    """
    if os.environ.get("PROBEKIT_NO_RESULT_CACHE", "").strip() in ("1", "true", "yes"):
        return compute()
    path = data_dir() / "cache" / "results" / kind / f"{result_key(kind, inputs)}.pkl"
    if path.exists():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass  # a truncated or stale entry: compute it again
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError as exc:
        warnings.warn(
            f"could not cache the {kind} result in {path.parent} ({exc}); it was computed and is "
            "returned, but a rerun will compute it again",
            stacklevel=2,
        )
    return value
