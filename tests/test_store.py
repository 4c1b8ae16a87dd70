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
    DamagedStoreError,
    FeatureStore,
    StoreError,
    _map,
    content_hash,
    key_filename,
    ranges_to_set,
    repair,
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


@pytest.mark.skipif(
    os.geteuid() != 0 or sys.platform != "linux", reason="mounting a small tmpfs needs root on Linux"
)
def test_a_really_full_disk(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("tmpfs mount refused (no mount privilege in this container)")
    try:
        store = FeatureStore.create(mnt / "s", inputs={"n": 100}, n=100, chunk_rows=10)
        with pytest.raises(
            StoreError, match=r"need 586 KiB, \d+ KiB are free"
        ):  # 600 kB of float16 on a 256 kB disk
            store.add_pass(list(_fill_keys(3)), _fill_keys(3), "float16")
        assert [p.name for p in store.path.glob("*.npy")] == ["labels.npy"]
        store.add_pass(list(_fill_keys(1)), _fill_keys(1), "float16")  # 200 kB still fits
        (mnt / "ballast").write_bytes(
            b"\0" * (shutil.disk_usage(mnt).free - 4096)
        )  # what is left, but a block
        store.meta["runs"].append({"note": "x" * 20_000})  # a meta.json that no longer fits
        with pytest.raises(StoreError, match="not enough disk space"):
            store.save()
        assert list(FeatureStore.open(store.path).meta["keys"]) == list(_fill_keys(1))  # the old meta.json
        assert not list(store.path.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- damaged stores: every open checks sizes against meta.json, repair drops only what is damaged ------------


def _finished(path: Path) -> FeatureStore:
    store = make_store(path)
    writer_rows = np.arange(store.n * 3, dtype=np.float32).reshape(store.n, 3)
    _map(store.path / key_filename("norm/cls"), store.meta["keys"]["norm/cls"])[:] = writer_rows
    np.save(store.path / "labels.npy", np.arange(store.n, dtype=np.int64) % 2)
    store.record_done(0, set(range(store.num_chunks)))
    return FeatureStore.open(store.path)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (
            lambda p: (p / key_filename("norm/cls")).write_bytes(
                (p / key_filename("norm/cls")).read_bytes()[:100]
            ),
            r"norm__cls.npy: truncated: 100 bytes, 188 expected",
        ),
        (lambda p: (p / key_filename("blocks.0.act/ap")).unlink(), r"blocks.0.act__ap.npy: deleted"),
        (lambda p: (p / "labels.npy").unlink(), r"labels.npy: deleted"),
        (lambda p: (p / "meta.json").write_text(""), r"meta.json: empty"),
        (
            lambda p: (p / "meta.json").write_text((p / "meta.json").read_text()[:40]),
            r"meta.json: truncated or not JSON",
        ),
        (lambda p: (p / "meta.json").unlink(), r"meta.json: deleted"),
    ],
)
def test_a_damaged_store_is_named_with_its_damaged_files(tmp_path: Path, damage, named) -> None:
    store = _finished(tmp_path / "s")
    damage(store.path)
    with pytest.raises(
        DamagedStoreError, match=named + r".*Repair it by running the extraction that made it"
    ):
        FeatureStore.open(store.path)


def test_repair_drops_only_the_damaged_key(tmp_path: Path) -> None:
    store = _finished(tmp_path / "s")
    before = store.load("blocks.0.act/ap", mmap=True).copy()
    (store.path / key_filename("norm/cls")).write_bytes(b"\x93NUMPY")
    repaired, redo = repair(
        store.path, store.meta["inputs"], store.n, store.chunk_rows, lambda: np.zeros(store.n)
    )
    assert redo == ["norm/cls"] and list(repaired.meta["keys"]) == ["blocks.0.act/ap"]
    reopened = FeatureStore.open(store.path)  # no longer damaged, the other key untouched
    assert list(reopened) == ["blocks.0.act/ap"] and np.array_equal(
        reopened.load("blocks.0.act/ap", mmap=True), before
    )
    assert reopened.labels.tolist() == [i % 2 for i in range(store.n)]


def test_repair_rewrites_damaged_labels_and_rebuilds_a_damaged_meta(tmp_path: Path) -> None:
    store = _finished(tmp_path / "s")
    (store.path / "labels.npy").write_bytes(b"")
    labels = np.arange(store.n) % 3
    _, redo = repair(store.path, store.meta["inputs"], store.n, store.chunk_rows, lambda: labels)
    assert redo == [] and FeatureStore.open(store.path).labels.tolist() == labels.tolist()
    (store.path / "meta.json").write_text("{")
    fresh, redo = repair(store.path, store.meta["inputs"], store.n, store.chunk_rows, lambda: labels)
    assert sorted(redo) == ["blocks.0.act/ap", "norm/cls"] and fresh.meta["keys"] == {}  # both re-extracted
    assert not list(store.path.glob("blocks*.npy")) and FeatureStore.open(store.path).n == store.n


def test_the_waiting_side_names_the_lock_holder_and_its_progress(tmp_path: Path, capsys) -> None:
    store = make_store(tmp_path / "s")
    store.record_done(0, {0})

    def other() -> None:
        with store_lock(store.path, poll_s=0.05, report_s=0.2):
            pass

    with store_lock(store.path):
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.6)
    t.join(timeout=10)
    err = capsys.readouterr().err
    assert f"waiting for another extraction of s: process {os.getpid()} on " in err
    assert "pass 1 of 1 (2 keys): 1/3 chunks recorded (about 4/10 images)" in err
    assert "still waiting for process" in err
