"""Atomic writes of reports and indexes, and a full disk reported with the space needed and free.

:func:`write_text_atomic` writes a temporary file next to the target and renames it over the
target: a reader (or a crash, or a full disk) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import ProbekitError

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(ProbekitError, OSError):
    """No space left where reports are written; says how much was needed and how much is free."""

    def __init__(self, path: Path, needed: int | None, cause: str = "") -> None:
        self.path = Path(path)
        self.needed = needed
        self.free = free_bytes(self.path)
        need = (
            f"writing {self.path.name} needed {human_size(needed)}"
            if needed
            else f"writing {self.path.name} failed"
        )
        super().__init__(
            f"the disk holding {self.path.parent} is full: {need}, {human_size(self.free)} are free"
            f"{' (' + cause + ')' if cause else ''}. Free space there or choose another --out; "
            "every report finished before this one is kept and listed in index.html and runs.json."
        )

    def __str__(self) -> str:  # OSError would format its args as (errno, strerror)
        return str(self.args[0])


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human_size(nbytes: float | None) -> str:
    if nbytes is None:
        return "an unknown amount"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename; a full disk raises
    :class:`DiskFullError` and leaves the previous file (if any) and no temporary file."""
    path = Path(path)
    data = text.encode(encoding)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(path, len(data), exc.strerror or "") from None
        raise
    return path
