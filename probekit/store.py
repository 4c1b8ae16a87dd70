"""The on-disk feature store: one directory of probe-major ``.npy`` files per extraction input.

A store directory is named by a content hash of exactly what determines its numbers (model and
weights digest, dataset, split, transform, image size, compute and storage dtype, row limit), so a
changed input never reuses stale features. Inside::

    meta.json                   inputs, hash, row count, keys with shapes, passes and progress,
                                provenance, versions, timings, skipped files
    inputs.json                 the inputs and the command that made the store (written once: the
                                way back when meta.json is damaged)
    labels.npy                  (N,) int64
    blocks.7.act__cls.npy       (N, D) float16 (or float32), one file per feature key
    progress/rank<r>.json       per-rank progress of a multi-process run, merged at its end

Rows are written in fixed chunks of ``chunk_rows`` images through memory maps (shared file
pages: what a process wrote survives its being killed); a chunk is recorded as done in
``meta.json`` (atomically replaced) only after its rows are written, so a killed run resumes at the
first chunk not recorded and never counts a half-written row. With ``durable=True`` every record
is preceded by an msync of the maps and followed by an fsync, which also covers an OS crash. Keys are added in
*passes*: asking an existing store for new keys runs one more pass over the images for them.

Every :meth:`FeatureStore.open` checks each file's size against the metadata (one ``stat`` per
file); a damaged store (truncated or deleted ``.npy``, unreadable ``meta.json``) raises
:class:`DamagedStoreError` naming the damaged files and the command that repairs it, and
:func:`repair` (which :func:`probekit.extract.extract` calls by itself) drops only what is damaged so
the next pass re-extracts it.

Reading::

    store = FeatureStore.open(path)
    store.keys(); store["blocks.7.act/cls"]      # (N, D) float32
    store.labels; store.meta; store.complete; store.n
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProbekitError
from .keys import parse_key

FORMAT = 1
META = "meta.json"
INPUTS = "inputs.json"
LABELS = "labels.npy"
PROGRESS_DIR = "progress"
LOCK = ".lock"


class StoreError(ProbekitError, RuntimeError):
    """A feature store that is missing, incomplete or does not match what was asked for."""


class DamagedStoreError(StoreError):
    """A store whose files disagree with its metadata (truncated, deleted, unreadable)."""

    def __init__(self, path: Path, damaged: dict[str, str], command: str | None = None) -> None:
        self.path = Path(path)
        self.damaged = dict(damaged)
        self.command = command
        listed = "; ".join(f"{name}: {why}" for name, why in list(damaged.items())[:8])
        more = f"; and {len(damaged) - 8} more" if len(damaged) > 8 else ""
        how = (
            f"Repair it with `{command}`, which re-extracts only the damaged files"
            if command
            else "Repair it by running the extraction that made it again (the same `probekit extract` command, "
            "notebook or features() call), which re-extracts only the damaged files"
        )
        super().__init__(
            f"feature store {path} is damaged ({len(damaged)} file(s)): {listed}{more}. {how}; or delete "
            f"{path} to start it afresh."
        )


def content_hash(inputs: Mapping[str, Any]) -> str:
    """Short sha256 of the canonical JSON of ``inputs``."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:48] or "x"


def store_dirname(model: str, dataset: str, split: str | None, digest: str) -> str:
    """``<model>__<dataset>__<split>__<hash>``: readable, unique by the hash."""
    return "__".join(_slug(p) for p in (model, dataset, split or "all", digest))


def key_filename(key: str) -> str:
    """``blocks.7.act/cls`` -> ``blocks.7.act__cls.npy``."""
    parse_key(key)
    return key.replace("/", "__") + ".npy"


@contextmanager
def store_lock(path: Path, poll_s: float = 1.0, report_s: float = 20.0) -> Iterator[None]:
    """Exclusive advisory lock on a store directory for one extraction (released by the kernel if
    the process dies). A second extraction of the same store waits, saying which process holds the
    lock and how far it got (every ``report_s`` seconds), then finds the work done."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK, "a+") as f:  # "a+": a waiting process must not wipe the holder's record
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"waiting for another extraction of {path.name}: {lock_holder(path)}; {progress_line(path)}",
                file=sys.stderr,
                flush=True,
            )
            last = time.monotonic()
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(poll_s)
                if time.monotonic() - last >= report_s:
                    print(
                        f"still waiting for {lock_holder(path)}: {progress_line(path)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    last = time.monotonic()
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(sys.argv)[:300],
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        )
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder(path: Path) -> str:
    """Who holds a store's lock, as its lock file records it (process id, host, command, since)."""
    try:
        rec = json.loads((Path(path) / LOCK).read_text() or "{}")
    except (OSError, ValueError):
        rec = {}
    if not rec:
        return "a process that has not recorded itself yet"
    command = str(rec.get("command", ""))
    command = command if len(command) <= 240 else command[:237] + "..."
    return f"process {rec.get('pid')} on {rec.get('host')} since {rec.get('since')} ({command})"


def progress_line(path: Path) -> str:
    """How far an extraction of the store at ``path`` got, from its checkpoint counter in meta.json."""
    try:
        meta = json.loads((Path(path) / META).read_text())
        n, chunk_rows = int(meta["n"]), int(meta["chunk_rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no progress recorded yet"
    chunks = -(-n // chunk_rows)
    open_passes = [(i, p) for i, p in enumerate(meta.get("passes", [])) if not p.get("complete")]
    if not open_passes:
        return "all passes recorded complete"
    i, p = open_passes[0]
    done = len(ranges_to_set(p.get("done", [])) & set(range(chunks)))
    return (
        f"pass {i + 1} of {len(meta['passes'])} ({len(p['keys'])} keys): {done}/{chunks} chunks recorded "
        f"(about {min(done * chunk_rows, n)}/{n} images)"
    )


# ---- chunk ranges: sorted disjoint [start, stop) lists ----------------------------------------


def ranges_to_set(ranges: Sequence[Sequence[int]]) -> set[int]:
    return {i for a, b in ranges for i in range(a, b)}


def set_to_ranges(items: set[int] | Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(set(items)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def _write_json(path: Path, obj: Any, fsync: bool = False) -> None:
    """Atomic replace: a reader sees the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            # dumps without indent uses json's C encoder (~10x faster than dump): meta.json of a
            # 600-key store is rewritten at every checkpoint (read it with `python -m json.tool`)
            f.write(json.dumps(obj, separators=(",", ":"), default=str))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves the old file, and no debris
        raise


def preallocate(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """An ``.npy`` file of ``shape`` zeros, without mapping it; returns the byte offset of its data
    (so writers can map it without parsing the header again).

    The data blocks are reserved on disk (``posix_fallocate``) where the file system can: rows are
    later written through memory maps, and a map that runs out of disk kills the process (SIGBUS)
    instead of raising. A full disk therefore fails here, as :class:`OSError` ``ENOSPC``; where the
    file system cannot reserve, the file stays sparse.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        size = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
        f.truncate(size)
        f.flush()
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise
        except AttributeError:  # no posix_fallocate on this platform
            pass
    return offset


@contextmanager
def full_disk_as_store_error(
    path: Path, needed: int | None = None, undo: Callable[[], None] | None = None
) -> Iterator[None]:
    """A full disk (``ENOSPC``) inside the block becomes a :class:`StoreError` that gives the sizes and
    what to do; ``undo`` runs first (to remove what the block had half written)."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        if undo is not None:
            undo()
        wanted = "" if needed is None else f"the features being added need {_size(needed)}, "
        raise StoreError(
            f"not enough disk space for the feature store in {path}: {wanted}"
            f"{_size(shutil.disk_usage(path).free)} are free ({err.strerror}). Free space there, extract fewer "
            "sites or pools, or point PROBEKIT_DATA at a larger disk; features already extracted are kept."
        ) from None


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} KiB"


def _map(path: Path, entry: dict[str, Any]) -> np.memmap:
    """Writable map of a key's rows (header offset from meta when recorded, else read)."""
    if "offset" in entry:
        return np.memmap(
            path,
            dtype=np.dtype(entry["dtype"]),
            mode="r+",
            offset=entry["offset"],
            shape=tuple(entry["shape"]),
        )
    return np.load(path, mmap_mode="r+")


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of the store at ``path``; a missing or unreadable one raises :class:`StoreError`
    (:class:`DamagedStoreError` when the folder holds a store whose metadata is damaged)."""
    meta_path = path / META
    if not meta_path.is_file():
        if (path / INPUTS).is_file() or any(path.glob("*.npy")):
            raise DamagedStoreError(path, {META: "deleted"}, repair_command(path))
        raise StoreError(f"{path} is not a feature store (no {META}); run `probekit extract` first")
    try:
        text = meta_path.read_text()
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        why = (
            "empty"
            if not text.strip()
            else f"truncated or not JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        )
        raise DamagedStoreError(path, {META: why}, repair_command(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedStoreError(path, {META: f"unreadable ({err})"}, repair_command(path)) from None
    required = {"format", "n", "chunk_rows", "keys", "passes"}
    if not isinstance(meta, dict) or not required <= set(meta):
        missing = sorted(required - set(meta)) if isinstance(meta, dict) else sorted(required)
        raise DamagedStoreError(path, {META: f"lacks {', '.join(missing)}"}, repair_command(path))
    return meta


def repair_command(path: Path) -> str | None:
    """The command that made the store at ``path`` (recorded at creation), if it was a command."""
    try:
        return json.loads((Path(path) / INPUTS).read_text()).get("command") or None
    except (OSError, ValueError, AttributeError):
        return None


def recorded_inputs(path: Path) -> dict[str, Any] | None:
    """The inputs recorded in ``inputs.json`` at creation (None when absent or unreadable)."""
    try:
        return json.loads((Path(path) / INPUTS).read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        return None


def _npy_damage(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int | None) -> str | None:
    """Why the ``.npy`` file at ``path`` cannot hold ``shape`` of ``dtype`` (None when it can)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "deleted"
    if offset is None:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                header = read(f)  # (shape, fortran order, dtype)
                offset = f.tell()
        except (OSError, ValueError, EOFError):
            return f"unreadable .npy header ({size} bytes)"
        if tuple(header[0]) != tuple(shape) or np.dtype(header[2]) != dtype:
            return f"holds {tuple(header[0])} {np.dtype(header[2]).name}, the metadata says {tuple(shape)} {dtype.name}"
    expected = int(offset) + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        return f"{'truncated' if size < expected else 'too long'}: {size} bytes, {expected} expected"
    return None


def key_of_file(name: str) -> str | None:
    """``blocks.7.act__cls.npy`` -> ``blocks.7.act/cls`` (None for files that are not keys)."""
    if not name.endswith(".npy") or name == LABELS:
        return None
    key = name[: -len(".npy")].replace("__", "/")
    try:
        parse_key(key)
    except Exception:  # noqa: BLE001 - not a key file
        return None
    return key


def repair(
    path: Path,
    inputs: dict[str, Any],
    n: int,
    chunk_rows: int,
    labels: Callable[[], np.ndarray],
    command: str | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[FeatureStore, list[str]]:
    """Drop exactly what is damaged in the store at ``path`` and return it with the keys to re-extract.

    A damaged key file is deleted and its key removed from the metadata (its pass keeps the others);
    a damaged ``labels.npy`` is rewritten from ``labels()``; a damaged ``meta.json`` cannot be trusted
    for any progress, so the store is made afresh and every key whose file was there is re-extracted.
    """
    path = Path(path)
    try:
        meta = read_meta(path)
    except DamagedStoreError:
        keys = sorted({k for f in path.glob("*.npy") if (k := key_of_file(f.name))})
        for f in path.glob("*.npy"):
            f.unlink()
        (path / META).unlink(missing_ok=True)
        command = command or repair_command(path)
        return FeatureStore.create(
            path, inputs=inputs, n=n, chunk_rows=chunk_rows, info=info, command=command
        ), keys
    store = FeatureStore(path, meta)
    store._merge_rank_progress(write=False)
    damaged = store.damage()
    if LABELS in damaged:
        with full_disk_as_store_error(path):
            np.save(path / LABELS, np.asarray(labels(), dtype=np.int64)[:n])
    gone = [k for k, e in meta["keys"].items() if e["file"] in damaged]
    for key in gone:
        (path / meta["keys"].pop(key)["file"]).unlink(missing_ok=True)
    for p in meta["passes"]:
        p["keys"] = [k for k in p["keys"] if k not in gone]
        if not p["keys"]:
            p["complete"] = True  # an emptied pass: nothing left to do
    store.save()
    return store, gone


class FeatureStore(Mapping[str, np.ndarray]):
    """A feature store directory, read as a mapping ``key -> (N, D) float32 array``.

    Only keys whose pass is complete are listed. ``len(store)`` is the number of such keys (the
    Mapping contract); the number of images is ``store.n``.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta

    # ---- opening and creating ----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True) -> FeatureStore:
        """Open an existing store (complete or not); merges progress left by per-rank files.

        ``verify`` (default) checks every file's size against the metadata and raises
        :class:`DamagedStoreError` naming the damaged files and the command that repairs them.
        """
        path = Path(path)
        meta = read_meta(path)
        if meta.get("format") != FORMAT:
            raise StoreError(
                f"{path}: store format {meta.get('format')} is not {FORMAT}; delete it and re-extract"
            )
        store = cls(path, meta)
        store._merge_rank_progress(write=False)
        if verify:
            damaged = store.damage()
            if damaged:
                raise DamagedStoreError(path, damaged, repair_command(path))
        return store

    def damage(self) -> dict[str, str]:
        """Files that are missing or whose size disagrees with ``meta.json``: ``{file name: why}``."""
        damaged: dict[str, str] = {}
        why = _npy_damage(self.path / LABELS, (self.n,), np.dtype(np.int64), None)
        if why:
            damaged[LABELS] = why
        for entry in self.meta["keys"].values():
            why = _npy_damage(
                self.path / entry["file"],
                tuple(entry["shape"]),
                np.dtype(entry["dtype"]),
                entry.get("offset"),
            )
            if why:
                damaged[entry["file"]] = why
        return damaged

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        inputs: dict[str, Any],
        n: int,
        chunk_rows: int,
        info: dict[str, Any] | None = None,
        command: str | None = None,
    ) -> FeatureStore:
        """Make an empty store directory (no keys yet) with ``labels.npy`` preallocated.

        ``command`` (the ``probekit extract`` command line that makes this store) is recorded, so a
        damaged store can name the exact command that repairs it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "hash": content_hash(inputs),
            "inputs": inputs,
            "n": int(n),
            "chunk_rows": int(chunk_rows),
            "keys": {},
            "passes": [],
            "runs": [],
            **(info or {}),
        }
        with full_disk_as_store_error(path):  # a plain write (not a map): a full disk raises, not SIGBUS
            np.save(path / LABELS, np.full(n, -1, dtype=np.int64))
            _write_json(path / INPUTS, {"hash": meta["hash"], "inputs": inputs, "command": command})
        store = cls(path, meta)
        store.save()
        return store

    def save(self, fsync: bool = False) -> None:
        """Write ``meta.json`` atomically; on a full disk the previous one (and its progress) stays."""
        with full_disk_as_store_error(self.path):
            _write_json(self.path / META, self.meta, fsync=fsync)

    def reload(self) -> None:
        self.meta = read_meta(self.path)
        self._merge_rank_progress(write=False)

    # ---- passes and progress -----------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of images (rows) in the store."""
        return int(self.meta["n"])

    @property
    def chunk_rows(self) -> int:
        return int(self.meta["chunk_rows"])

    @property
    def num_chunks(self) -> int:
        return -(-self.n // self.chunk_rows)

    def chunk_slice(self, chunk: int) -> slice:
        return slice(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n))

    def add_pass(self, keys: Sequence[str], shapes: Mapping[str, tuple], storage_dtype: str) -> int:
        """Preallocate files for ``keys`` (not yet in the store) and record a new pass over them."""
        dtype = np.dtype(storage_dtype)
        for key in keys:
            if key in self.meta["keys"]:
                raise StoreError(f"key {key!r} is already in {self.path}")
        entries = {}
        needed = sum(self.n * int(np.prod(shapes[k])) * dtype.itemsize for k in keys)

        def undo() -> None:  # nothing of this pass stays; earlier passes are untouched
            for key in keys:
                (self.path / key_filename(key)).unlink(missing_ok=True)

        with full_disk_as_store_error(self.path, needed, undo):
            for key in keys:
                shape = (self.n, *shapes[key])
                offset = preallocate(self.path / key_filename(key), dtype, shape)
                entries[key] = {
                    "shape": list(shape),
                    "dtype": dtype.name,
                    "file": key_filename(key),
                    "offset": offset,
                }
        self.meta["keys"].update(entries)
        self.meta["passes"].append({"keys": list(keys), "done": [], "complete": False})
        self.save()
        return len(self.meta["passes"]) - 1

    def done_chunks(self, pass_index: int) -> set[int]:
        return ranges_to_set(self.meta["passes"][pass_index]["done"])

    def record_done(self, pass_index: int, chunks: set[int], fsync: bool = False) -> None:
        """Mark chunks done in ``meta.json`` (call only after their rows are written)."""
        p = self.meta["passes"][pass_index]
        done = ranges_to_set(p["done"]) | set(chunks)
        p["done"] = set_to_ranges(done)
        p["complete"] = len(done) >= self.num_chunks
        self.save(fsync)

    def write_rank_progress(self, rank: int, pass_index: int, chunks: set[int], fsync: bool = False) -> None:
        """A rank's own progress file (multi-process runs); merged into meta.json at the end."""
        d = self.path / PROGRESS_DIR
        d.mkdir(exist_ok=True)
        _write_json(d / f"rank{rank}.json", {"pass": pass_index, "done": set_to_ranges(chunks)}, fsync)

    def _merge_rank_progress(self, write: bool) -> None:
        d = self.path / PROGRESS_DIR
        files = sorted(d.glob("rank*.json")) if d.is_dir() else []
        for f in files:
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a file being replaced right now; its rows are re-done, never lost
            p = self.meta["passes"][rec["pass"]]
            done = ranges_to_set(p["done"]) | ranges_to_set(rec["done"])
            p["done"] = set_to_ranges(done)
            p["complete"] = len(done) >= self.num_chunks
        if write and files:
            self.save()
            for f in files:
                f.unlink(missing_ok=True)

    def merge_progress(self) -> None:
        """Fold per-rank progress files into ``meta.json`` and delete them (rank 0, after a barrier)."""
        self.reload()
        self._merge_rank_progress(write=True)

    @property
    def complete(self) -> bool:
        """True when every pass has every chunk done."""
        return bool(self.meta["passes"]) and all(p["complete"] for p in self.meta["passes"])

    def has(self, keys: Sequence[str]) -> bool:
        """Whether every key in ``keys`` is stored and complete."""
        avail = set(self._complete_keys())
        return all(k in avail for k in keys)

    # ---- reading -------------------------------------------------------------------------------

    def _complete_keys(self) -> list[str]:
        return [k for p in self.meta["passes"] if p["complete"] for k in p["keys"]]

    def keys(self):  # type: ignore[override]
        return dict.fromkeys(self._complete_keys()).keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self._complete_keys())

    def __len__(self) -> int:
        return len(self._complete_keys())

    def __contains__(self, key: object) -> bool:
        return key in self._complete_keys()

    def __getitem__(self, key: str) -> np.ndarray:
        return self.load(key)

    def load(self, key: str, *, mmap: bool = False) -> np.ndarray:
        """Features of ``key``: (N, D) float32 (``mmap=True``: the stored dtype, memory-mapped)."""
        if key not in self.meta["keys"]:
            raise KeyError(f"{key!r} is not in store {self.path.name}; it has {len(self.meta['keys'])} keys")
        if key not in self:
            raise StoreError(f"{key!r} in {self.path} is not fully extracted yet; resume the extraction")
        entry = self.meta["keys"][key]
        path = self.path / entry["file"]
        if "offset" in entry:  # header already parsed at creation
            arr = np.memmap(
                path,
                dtype=np.dtype(entry["dtype"]),
                mode="r",
                offset=entry["offset"],
                shape=tuple(entry["shape"]),
            )
        else:
            arr = np.load(path, mmap_mode="r")
        return arr if mmap else np.asarray(arr, dtype=np.float32)

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of ``key``'s array, from the store's metadata (nothing is read)."""
        if key not in self.meta["keys"]:
            raise KeyError(f"{key!r} is not in store {self.path.name}; it has {len(self.meta['keys'])} keys")
        return tuple(self.meta["keys"][key]["shape"])

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class labels, in row order."""
        return np.load(self.path / LABELS)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"FeatureStore({str(self.path)!r}, n={self.n}, keys={len(self.meta['keys'])}, {state})"


class StoreWriter:
    """Memory-mapped writers for the keys of one pass, plus labels."""

    def __init__(self, store: FeatureStore, keys: Sequence[str]) -> None:
        self.store = store
        self.keys = list(keys)
        entries = store.meta["keys"]
        self.maps = {k: _map(store.path / entries[k]["file"], entries[k]) for k in keys}
        self.labels = np.load(store.path / LABELS, mmap_mode="r+")
        self.flat_keys = [k for k in self.keys if self.maps[k].ndim == 2]
        self.widths = [self.maps[k].shape[1] for k in self.flat_keys]

    def write(
        self, rows: slice, flat: np.ndarray, labels: np.ndarray, tokens: Mapping[str, np.ndarray]
    ) -> None:
        """Write one chunk: ``flat`` is (B, sum D) in ``flat_keys`` order; ``tokens`` the 3-D keys."""
        col = 0
        for k, w in zip(self.flat_keys, self.widths, strict=True):
            self.maps[k][rows] = flat[:, col : col + w]
            col += w
        if col != flat.shape[1]:
            raise StoreError(f"feature width {flat.shape[1]} does not match the store's {col}")
        for k, arr in tokens.items():
            self.maps[k][rows] = arr
        self.labels[rows] = labels

    def sync(self) -> None:
        """msync every map to disk (durability against an OS crash; slow on some disks)."""
        for mm in self.maps.values():
            mm.flush()
        self.labels.flush()

    def close(self) -> None:
        self.maps.clear()
