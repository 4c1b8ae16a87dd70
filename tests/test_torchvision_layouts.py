"""Every torchvision dataset in the registry, loaded from its real on-disk layout with downloads off.

``tests/torchvision_layouts.py`` writes a few images per class exactly as each download unpacks;
probekit's registry (``load_dataset(id, root=..., download=False)``) must return the class names,
the split sizes of its documented rule (paper 1: the probe trains on a random 80 % of the official
train split and tests on the official test split; official train/val/test are kept) and the very
pixels written. The only thing patched is torchvision's own file-integrity check
(``torchvision.datasets.<module>.check_integrity``, an md5 of the real release files, which tiny
fixtures cannot match) for CIFAR-10/100, SVHN, Flowers102, STL-10 and FER2013. Nothing of
probekit is patched. CIFAR-10-C (not a torchvision dataset) is read from its released ``.npy``
files in the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd
from torchvision_layouts import WRITERS, Written, write_cifar10c

from probekit.data import cifar10c as c10c
from probekit.data import load_dataset
from probekit.data.online import ONLINE
from probekit.data.registry import list_datasets

INTEGRITY_CHECKED = ("cifar", "svhn", "flowers102", "stl10", "fer2013")


@pytest.fixture
def no_md5(monkeypatch):
    """Patch only torchvision's md5 integrity check of the real release files (see module docstring)."""
    import importlib

    for name in INTEGRITY_CHECKED:
        monkeypatch.setattr(
            importlib.import_module(f"torchvision.datasets.{name}"),
            "check_integrity",
            lambda *args, **kwargs: True,
        )
    monkeypatch.setenv("PROBEKIT_OFFLINE", "1")


def expected_counts(labels: list[int], official: str | None) -> dict[str, int]:
    """Per-split sizes under probekit's documented rule, restated from ``probekit.data.splits``."""
    per_class = Counter(labels)
    if official == "kept":
        raise AssertionError("call with the official split's labels")
    out = Counter()
    for n in per_class.values():
        if official == "from_train":  # val = stratified 20 % of train (at least 1, never all); train = rest
            n_val = min(max(1, round(0.2 * n)), n - 1) if n >= 2 else 0
            out["train"] += n - n_val
            out["val"] += n_val
        else:  # no official split: 60/20/20 per class
            n_test = max(1, round(0.2 * n)) if n >= 2 else 0
            n_val = max(1, round(0.2 * n)) if n >= 3 else 0
            out["test"] += n_test
            out["val"] += n_val
            out["train"] += n - n_test - n_val
    return dict(out)


def expected_splits(written: Written) -> dict[str, int]:
    off = written.official
    if {"train", "val", "test"} <= set(off):
        return {s: len(off[s]) for s in ("train", "val", "test")}
    if {"train", "test"} <= set(off):
        return {**expected_counts(off["train"], "from_train"), "test": len(off["test"])}
    return expected_counts(off["all"], None)


def test_every_registry_torchvision_dataset_has_a_fixture() -> None:
    assert set(WRITERS) == set(ONLINE)


@pytest.mark.parametrize("dataset_id", sorted(WRITERS))
def test_registry_loads_the_on_disk_layout(dataset_id: str, tmp_path, no_md5) -> None:
    written = WRITERS[dataset_id](tmp_path)
    assert {r["id"]: r["available"] for r in list_datasets(root=tmp_path)}[dataset_id]
    sizes = expected_splits(written)
    all_labels = []
    for split, n in sizes.items():
        ds = load_dataset(dataset_id, split=split, root=tmp_path, download=False)
        assert len(ds) == n, (split, len(ds), n)
        assert len(ds.classes) == written.n_classes
        if written.classes is not None:
            assert ds.classes == written.classes
        img, label = ds[0]
        assert img.mode == "RGB" and label == int(ds.labels[0])
        all_labels += ds.labels.tolist()
    # the splits partition the dataset, class by class
    written_labels = [c for labels in written.official.values() for c in labels]
    assert Counter(all_labels) == Counter(written_labels)
    everything = load_dataset(dataset_id, split="all", root=tmp_path, download=False)
    assert len(everything) == len(written_labels)
    for split, index, pixels in written.pixels:
        ours = {"valid": "val"}.get(split, split)
        i = everything.keys.index(f"{ours}/{index:06d}")
        np.testing.assert_array_equal(
            np.asarray(everything[i][0]), pixels, err_msg=f"{dataset_id} {split}[{index}]"
        )
        assert everything.labels[i] == written.official[ours][index]


def test_paper1_split_rule_on_cifar10_pets_and_flowers(tmp_path, no_md5) -> None:
    """Paper 1 (papers.md §1.3): 80 % of the official train (CIFAR, Pets), official train (Flowers102)."""
    cifar = WRITERS["cifar10"](tmp_path, per_class_batch=2)  # 10 per class in the official train
    train = load_dataset("cifar10", split="train", root=tmp_path, download=False)
    test = load_dataset("cifar10", split="test", root=tmp_path, download=False)
    assert len(train) == 0.8 * len(cifar.official["train"]) and len(test) == len(cifar.official["test"])
    assert set(train.keys).isdisjoint(
        load_dataset("cifar10", split="val", root=tmp_path, download=False).keys
    )
    other_seed = load_dataset("cifar10", split="train", seed=1, root=tmp_path, download=False)
    assert len(other_seed) == len(train) and other_seed.keys != train.keys  # a random 80 %, seeded
    pets = WRITERS["pets"](tmp_path)
    assert len(load_dataset("pets", split="train", root=tmp_path, download=False)) == 0.8 * len(
        pets.official["train"]
    )
    flowers = WRITERS["flowers102"](tmp_path)
    got = load_dataset("flowers102", split="train", root=tmp_path, download=False)
    assert len(got) == len(flowers.official["train"]) and all(k.startswith("train/") for k in got.keys)


def test_gtsrb_train_labels_follow_the_class_folders(tmp_path, no_md5) -> None:
    WRITERS["gtsrb"](tmp_path)
    ds = load_dataset("gtsrb", split="all", root=tmp_path, download=False)
    assert ds.classes == [str(c) for c in range(43)]
    assert isinstance(tvd.GTSRB(str(tmp_path), split="train")[0][0].size, tuple)


# ---- CIFAR-10-C from the released files ------------------------------------------------------------


def test_paper1_cifar10c_split_is_the_seed_42_permutation_of_10k() -> None:
    split = c10c.paper1_official_split(10_000)
    assert Counter(split.tolist()) == {"train": 8000, "test": 2000}
    order = np.random.RandomState(42).permutation(10_000)  # paper 1's np.random.seed(42) permutation
    assert set(np.flatnonzero(split == "test")) == set(order[8000:].tolist())


def test_cifar10c_released_files_one_severity_80_20(tmp_path) -> None:
    families = ("contrast", "gaussian_noise", "motion_blur", "snow", "speckle_noise")
    n = 100
    arrays = write_cifar10c(tmp_path, families, n=n)
    rows = {row["id"]: row for row in list_datasets(root=tmp_path)}
    assert rows["cifar10c:<corruption>@<1-5>"]["available"]
    for family in families:
        dataset_id = f"cifar10c:{family}@5"
        train = load_dataset(dataset_id, split="train", root=tmp_path)
        val = load_dataset(dataset_id, split="val", root=tmp_path)
        test = load_dataset(dataset_id, split="test", root=tmp_path)
        assert train.classes[0] == "airplane" and len(train.classes) == 10
        # 80/20 of the n images of severity 5, then val = 20 % of the 80 (per class, rounded)
        assert len(test) == n // 5 and len(train) + len(val) == n - n // 5
        assert math.isclose(len(train), 0.64 * n, abs_tol=10)
        want_test = set(np.flatnonzero(c10c.paper1_official_split(n) == "test").tolist())
        assert {int(k.split("/")[1]) for k in test.keys} == want_test
        key = test.keys[3]
        i = int(key.split("/")[1])
        assert key.startswith(f"{family}@5/")
        np.testing.assert_array_equal(np.asarray(test[3][0]), arrays[family][4 * n + i])  # severity 5 rows
        assert test.labels[3] == arrays["labels"][4 * n + i]
    sev1 = load_dataset("cifar10c:snow@1", split="test", root=tmp_path)
    np.testing.assert_array_equal(np.asarray(sev1[0][0]), arrays["snow"][int(sev1.keys[0].split("/")[1])])


def test_cifar10c_missing_or_misspelled_says_what_to_do(tmp_path) -> None:
    from probekit.data.errors import DatasetDownloadError, InvalidDatasetIdError

    with pytest.raises(InvalidDatasetIdError, match="cifar10c:<corruption>@<1-5>"):
        load_dataset("cifar10c:snowy@5", root=tmp_path)
    with pytest.raises(InvalidDatasetIdError):
        load_dataset("cifar10c:snow@6", root=tmp_path)
    with pytest.raises(DatasetDownloadError, match="zenodo.*CIFAR-10-C.tar"):
        load_dataset("cifar10c:snow@5", root=tmp_path)


def test_domainnet_folders_follow_imagefolder_order_and_paper1_cut(tmp_path) -> None:
    from torchvision_layouts import write_domainnet

    from probekit.data import paper1

    for domain in ("clipart", "sketch"):
        folder = write_domainnet(tmp_path, domain)
        everything = load_dataset(f"domainnet:{domain}", split="all", root=tmp_path)
        # the paper cut torchvision's ImageFolder order; probekit's folder order is the same
        imagefolder = [
            Path(p).relative_to(folder).as_posix() for p, _ in tvd.ImageFolder(str(folder)).samples
        ]
        source_keys = everything.source.keys
        assert source_keys == imagefolder
        n = len(imagefolder)
        cut = np.random.RandomState(42).permutation(n)
        test = load_dataset(f"domainnet:{domain}", split="test", root=tmp_path)
        assert set(test.keys) == {imagefolder[i] for i in cut[int(0.8 * n) :]}
        train = load_dataset(f"domainnet:{domain}", split="train", root=tmp_path)
        val = load_dataset(f"domainnet:{domain}", split="val", root=tmp_path)
        assert len(train) + len(val) == int(0.8 * n) and everything.classes == [
            "aircraft_carrier",
            "airplane",
            "zebra",
        ]
        assert everything.source.provenance["split"] == paper1.RULE
    with pytest.raises(Exception, match="domainnet:<domain>"):
        load_dataset("domainnet:cartoon", root=tmp_path)
