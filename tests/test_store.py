"""The feature store on its own: chunk bookkeeping, rank progress merge, read errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from probekit.store import (
    FeatureStore,
    StoreError,
    _map,
    content_hash,
    key_filename,
    ranges_to_set,
    set_to_ranges,
    store_dirname,
    store_lock,
)


def make_store(path: Path, n: int = 10, chunk: int = 4) -> FeatureStore:
    store = FeatureStore.create(path, inputs={"model": {"name": "m"}, "n": n}, n=n, chunk_rows=chunk)
    store.add_pass(["norm/cls", "blocks.0.act/ap"], {"norm/cls": (3,), "blocks.0.act/ap": (5,)}, "float16")
    return store


def test_ranges_round_trip() -> None:
    assert set_to_ranges({0, 1, 2, 5, 7, 8}) == [[0, 3], [5, 6], [7, 9]]
    assert ranges_to_set([[0, 3], [5, 6]]) == {0, 1, 2, 5}
    assert set_to_ranges(set()) == []


def test_names_and_hashes() -> None:
    assert key_filename("blocks.7.act/cls") == "blocks.7.act__cls.npy"
    with pytest.raises(ValueError):
        key_filename("blocks.7.nope/cls")
    assert content_hash({"a": 1, "b": [2]}) == content_hash({"b": [2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert store_dirname("vit/b 16", "digits", None, "abc") == "vit-b-16__digits__all__abc"


def test_progress_lists_keys_only_when_complete(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert store.num_chunks == 3 and store.chunk_slice(2) == slice(8, 10)
    assert not store.complete and len(store) == 0
    with pytest.raises(StoreError, match="not fully extracted"):
        store.load("norm/cls")
    with pytest.raises(KeyError):
        store["embed/cls"]
    store.record_done(0, {0, 2})
    assert not FeatureStore.open(store.path).complete
    store.record_done(0, {1})
    reopened = FeatureStore.open(store.path)
    assert reopened.complete and list(reopened) == ["norm/cls", "blocks.0.act/ap"]
    assert reopened["blocks.0.act/ap"].shape == (10, 5) and reopened["norm/cls"].dtype == np.float32
    assert reopened.load("norm/cls", mmap=True).dtype == np.float16
    assert dict(reopened).keys() == {"norm/cls", "blocks.0.act/ap"}


def test_reads_through_the_recorded_offset_match_numpy(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    rows = np.arange(50, dtype=np.float16).reshape(10, 5)
    _map(store.path / key_filename("blocks.0.act/ap"), store.meta["keys"]["blocks.0.act/ap"])[:] = rows
    store.record_done(0, {0, 1, 2})
    reopened = FeatureStore.open(store.path)
    assert reopened.shape("blocks.0.act/ap") == (10, 5)
    via_npy = np.load(store.path / key_filename("blocks.0.act/ap"), mmap_mode="r")
    np.testing.assert_array_equal(reopened.load("blocks.0.act/ap", mmap=True), via_npy)
    np.testing.assert_array_equal(reopened["blocks.0.act/ap"], rows.astype(np.float32))
    with pytest.raises(KeyError, match="not in store"):
        reopened.shape("embed/cls")


def test_rank_progress_files_merge_into_meta(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    store.write_rank_progress(0, 0, {0, 2})
    store.write_rank_progress(1, 0, {1})
    seen = FeatureStore.open(store.path)  # reading merges in memory, writes nothing
    assert seen.complete and (store.path / "progress" / "rank1.json").exists()
    seen.merge_progress()
    assert not list((store.path / "progress").iterdir())
    assert FeatureStore.open(store.path).meta["passes"][0]["done"] == [[0, 3]]


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    store = make_store(tmp_path / "s")
    with pytest.raises(StoreError, match="already in"):
        store.add_pass(["norm/cls"], {"norm/cls": (3,)}, "float16")


def test_store_lock_makes_a_second_extraction_wait(tmp_path: Path) -> None:
    order: list[str] = []

    def other() -> None:
        with store_lock(tmp_path / "s"):
            order.append("second")

    with store_lock(tmp_path / "s"):
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(timeout=10)
    assert order == ["first", "second"]


def _fill_keys(n: int) -> dict[str, tuple[int, ...]]:
    return {f"blocks.{i}.act/mean": (1000,) for i in range(n)}


def test_full_disk_fails_before_any_write_and_keeps_the_store(tmp_path: Path, monkeypatch) -> None:
    # the disk refuses the reservation (as posix_fallocate does on a full disk): a clear StoreError,
    # no file of the refused pass left behind, and the store still takes a pass that fits
    store = FeatureStore.create(tmp_path / "s", inputs={"n": 100}, n=100, chunk_rows=10)
    store.add_pass(["norm/cls"], {"norm/cls": (3,)}, "float16")
    real = os.posix_fallocate

    def full(fd: int, offset: int, size: int) -> None:
        if size > 10_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, size)

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StoreError, match="not enough disk space.*PROBEKIT_DATA"):
        store.add_pass(list(_fill_keys(3)), _fill_keys(3), "float16")
    assert sorted(p.name for p in store.path.glob("*.npy")) == ["labels.npy", key_filename("norm/cls")]
    reopened = FeatureStore.open(store.path)
    assert list(reopened.meta["keys"]) == ["norm/cls"] and len(reopened.meta["passes"]) == 1
    reopened.add_pass(["embed/cls"], {"embed/cls": (3,)}, "float16")


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounting a small tmpfs needs root on Linux")
def test_a_really_full_disk(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("tmpfs mount refused (no mount privilege in this container)")
    try:
        store = FeatureStore.create(mnt / "s", inputs={"n": 100}, n=100, chunk_rows=10)
        with pytest.raises(StoreError, match=r"need 586 KiB, \d+ KiB are free"):  # 600 kB of float16 on a 256 kB disk
            store.add_pass(list(_fill_keys(3)), _fill_keys(3), "float16")
        assert [p.name for p in store.path.glob("*.npy")] == ["labels.npy"]
        store.add_pass(list(_fill_keys(1)), _fill_keys(1), "float16")  # 200 kB still fits
        (mnt / "ballast").write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 4096))  # what is left, but a block
        store.meta["runs"].append({"note": "x" * 20_000})  # a meta.json that no longer fits
        with pytest.raises(StoreError, match="not enough disk space"):
            store.save()
        assert list(FeatureStore.open(store.path).meta["keys"]) == list(_fill_keys(1))  # the old meta.json
        assert not list(store.path.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
