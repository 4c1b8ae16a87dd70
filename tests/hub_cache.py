"""Lay out a Hugging Face hub cache on disk exactly as ``huggingface_hub`` writes it.

``hf_hub_download`` stores each file once under ``blobs/<etag>`` (the sha256 of an LFS file, the
git blob sha1 of a small one), points ``snapshots/<commit>/<filename>`` at it with a relative
symlink, and records the commit of a branch in ``refs/<branch>`` (no trailing newline); see
``huggingface_hub/file_download.py`` (``_hf_hub_download_to_cache_dir``, ``_create_symlink``,
``repo_folder_name``). Offline (``HF_HUB_OFFLINE=1``) it resolves ``refs/main`` and returns the
snapshot path, which is what timm's ``load_state_dict_from_hf`` then reads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(
    hf_home: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    lfs: tuple[str, ...] = (),
    commit: str = COMMIT,
) -> Path:
    """``files``: filename -> a file to copy or the bytes; names in ``lfs`` get sha256 etags.

    Returns the snapshot folder ``<hf_home>/hub/models--<org>--<name>/snapshots/<commit>``.
    """
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else None
        if name in lfs:
            h = hashlib.sha256()
            if data is None:
                with open(content, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            else:
                h.update(data)
            etag = h.hexdigest()
        else:
            data = data if data is not None else Path(content).read_bytes()
            etag = _git_blob_sha1(data)
        blob = repo / "blobs" / etag
        if data is not None:
            blob.write_bytes(data)
        else:
            shutil.copyfile(content, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot
