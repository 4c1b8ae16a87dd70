"""The offline dataset loaders: shapes, classes, RGB output, split rules and their determinism."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.data import UnknownDatasetError, list_datasets, load_dataset
from probekit.data.errors import InvalidDatasetIdError

AVAILABLE = {row["id"]: row["available"] for row in list_datasets()}

# id -> (classes, native size (w, h), total size)
OFFLINE = {
    "digits": (10, (8, 8), 1797),
    "mnist5k": (10, (28, 28), 5000),
    "fashion_mnist": (10, (28, 28), 70000),
    "emoji": (9, (64, 64), 1906),
    "textiles": (3, (250, 250), 2000),
    "faces": (2, (25, 25), 200),
    "textures": (3, (64, 64), 192),
    "photos": (9, (224, 224), 500),
}


def need(dataset_id: str) -> None:
    if not AVAILABLE[dataset_id]:
        pytest.skip(f"{dataset_id} is not provisioned here (run `probekit assets`)")


@pytest.mark.parametrize("dataset_id", list(OFFLINE))
def test_loader_gives_rgb_images_of_native_size_and_all_classes(dataset_id):
    need(dataset_id)
    n_classes, size, total = OFFLINE[dataset_id]
    ds = load_dataset(dataset_id, split="train", seed=0, max_per_class=4)
    assert len(ds.classes) == n_classes and len(set(ds.classes)) == n_classes
    assert ds.labels.dtype == np.int64 and len(ds.labels) == len(ds)
    assert set(ds.labels.tolist()) == set(range(n_classes))  # every class present in train
    assert np.bincount(ds.labels).max() <= 4
    for i in (0, len(ds) - 1):
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == size
        assert label == ds.labels[i]
    assert ds.provenance["n"] == len(ds) and ds.provenance["licence"]
    assert ds.source.provenance["package"]
    assert len(load_dataset(dataset_id, split="all").labels) == total


def test_grayscale_datasets_have_three_equal_channels():
    img, _ = load_dataset("digits", split="test", max_per_class=1)[0]
    pixels = np.asarray(img)
    assert pixels.shape == (8, 8, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert pixels.max() > 200  # 0..16 was rescaled to 0..255


def test_unofficial_splits_are_disjoint_stratified_60_20_20():
    parts = {s: load_dataset("digits", split=s, seed=3) for s in ("train", "val", "test")}
    keys = {s: set(ds.keys) for s, ds in parts.items()}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"])
    assert not (keys["val"] & keys["test"])
    assert sum(len(k) for k in keys.values()) == 1797
    for s, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = np.bincount(parts[s].labels, minlength=10)
        totals = np.bincount(load_dataset("digits", split="all").labels, minlength=10)
        assert np.all(np.abs(counts - share * totals) <= 1)  # stratified per class
    assert "60/20/20" in parts["train"].provenance["split_rule"]


def test_splits_are_deterministic_from_the_seed():
    a = load_dataset("digits", split="val", seed=0, max_per_class=5)
    b = load_dataset("digits", split="val", seed=0, max_per_class=5)
    c = load_dataset("digits", split="val", seed=1, max_per_class=5)
    assert a.identity() == b.identity() and a.keys == b.keys
    assert c.identity()["sha256"] != a.identity()["sha256"]
    assert np.array_equal(np.asarray(a[3][0]), np.asarray(b[3][0]))


def test_cap_applies_after_splitting_and_smaller_caps_are_subsets():
    full = set(load_dataset("mnist5k", split="test", seed=0).keys)
    small = load_dataset("mnist5k", split="test", seed=0, max_per_class=3)
    large = load_dataset("mnist5k", split="test", seed=0, max_per_class=20)
    assert len(small) == 30 and len(large) == 200
    assert set(small.keys) <= set(large.keys) <= full


def test_official_split_is_kept_and_val_is_carved_from_train():
    need("fashion_mnist")
    test = load_dataset("fashion_mnist", split="test")
    assert len(test) == 10000 and all(k.startswith("test/") for k in test.keys[:50])
    val = load_dataset("fashion_mnist", split="val", max_per_class=30)
    train = load_dataset("fashion_mnist", split="train", max_per_class=30)
    assert all(k.startswith("train/") for k in val.keys + train.keys)
    assert not set(val.keys) & set(train.keys)
    assert len(load_dataset("fashion_mnist", split="val").labels) == 12000  # 20 % of 60k
    assert "official test" in test.provenance["split_rule"]


def test_identity_is_json_and_names_the_data():
    import json

    ds = load_dataset("faces", split="test", seed=0, max_per_class=7)
    ident = ds.identity()
    assert json.loads(json.dumps(ident)) == ident
    assert ident["id"] == "faces" and ident["split"] == "test" and ident["n"] == 14
    assert ident["max_per_class"] == 7 and ident["corruption"] is None and len(ident["sha256"]) == 64
    assert ds.id == "faces" and ds.split == "test"


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(UnknownDatasetError) as err:
        load_dataset("imagenot")
    message = str(err.value)
    assert "imagenot" in message and "emoji" in message and "cifar10" in message and "folder:" in message


@pytest.mark.parametrize("bad", ["digits+blur@3", "digits+snow@9", "digits@3"])
def test_malformed_corruption_ids_say_what_is_allowed(bad):
    with pytest.raises(InvalidDatasetIdError, match="gaussian_noise|1..5|1-5"):
        load_dataset(bad)


def test_unknown_split_and_bad_cap_are_refused():
    with pytest.raises(InvalidDatasetIdError, match="train, val, test, all"):
        load_dataset("digits", split="validation")
    with pytest.raises(InvalidDatasetIdError, match="positive integer"):
        load_dataset("digits", max_per_class=0)
