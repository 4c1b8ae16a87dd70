"""Finding broken image files before anyone extracts features, with a small on-disk cache.

A file counts as good only once it decodes completely (:func:`images.decode_error`). The verdict
is cached per dataset under ``data_dir()/cache/image_checks/`` keyed by path, size and mtime, so a
large folder is decoded once, and a file that changes is checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..paths import data_dir
from .images import decode_error


def _cache_file(dataset_name: str) -> Path:
    digest = hashlib.sha256(dataset_name.encode()).hexdigest()[:16]
    return data_dir() / "cache" / "image_checks" / f"{digest}.json"


class FileChecker:
    """Decode-checks files of one dataset, remembering verdicts between runs."""

    def __init__(self, dataset_name: str, use_cache: bool = True) -> None:
        self.dataset_name = dataset_name
        self.use_cache = use_cache
        self._verdicts: dict[str, list] = {}
        self._dirty = False
        if use_cache:
            try:
                self._verdicts = json.loads(_cache_file(dataset_name).read_text())
            except (OSError, ValueError):
                self._verdicts = {}

    def error(self, path: Path) -> str | None:
        """Why ``path`` cannot be used, or ``None`` when it decodes completely."""
        try:
            stat = path.stat()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        key = str(path)
        cached = self._verdicts.get(key)
        if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        verdict = decode_error(path)
        self._verdicts[key] = [stat.st_size, stat.st_mtime_ns, verdict]
        self._dirty = True
        return verdict

    def save(self) -> None:
        """Write the verdicts back (atomically; a concurrent writer at worst loses a few)."""
        if not (self.use_cache and self._dirty):
            return
        target = _cache_file(self.dataset_name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._verdicts))
            os.replace(tmp, target)
            self._dirty = False
        except OSError:
            pass  # a read-only data dir only costs a re-check next time
