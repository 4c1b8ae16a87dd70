"""The registry listing, online datasets without a network, `probekit datasets`, and the assets."""

from __future__ import annotations

import json

import pytest

from probekit.assets import all_assets
from probekit.cli import main
from probekit.data import DatasetDownloadError, list_datasets, load_dataset
from probekit.data.assets import DATASET_ASSETS, extract_emoji
from probekit.data.online import ONLINE, is_available


def test_list_datasets_rows_name_size_classes_and_how_to_get_missing_ones():
    rows = {row["id"]: row for row in list_datasets()}
    assert {"digits", "mnist5k", "fashion_mnist", "emoji", "textiles", "faces", "textures", "photos"} <= set(
        rows
    )
    assert {"cifar10", "cifar100", "pets", "flowers102", "svhn", "dtd", "eurosat", "gtsrb", "stl10"} <= set(
        rows
    )
    assert rows["digits"]["available"] and rows["digits"]["size"] == 1797 and rows["digits"]["classes"] == 10
    assert rows["cifar100"]["classes"] == 100
    for row in rows.values():
        assert isinstance(row["available"], bool)
        assert row["available"] or row["how"], row  # missing ones say how to get them


def test_online_dataset_without_network_says_where_to_put_the_files(tmp_path):
    root = tmp_path / "tv"
    assert not is_available("cifar10", root)
    with pytest.raises(DatasetDownloadError) as err:
        load_dataset("cifar10", split="test", root=root, download=False)
    message = str(err.value)
    assert str(root) in message and "cifar-10-batches-py" in message and "CIFAR10" in message


def test_online_dataset_from_placed_files(tmp_path, monkeypatch):
    """A CIFAR-10-format folder written by hand is read without any network."""
    import pickle

    import numpy as np

    base = tmp_path / "tv" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": (np.arange(n) % 10).tolist(),
        }

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump(batch(20), f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    pytest.importorskip("torchvision")
    from torchvision.datasets import CIFAR10

    # torchvision checks the md5 of the real files; our small stand-in has its own
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", None] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", None]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": None})
    test = load_dataset("cifar10", split="test", root=tmp_path / "tv", download=False)
    assert len(test) == 20 and test.classes == names
    img, label = test[0]
    assert img.size == (32, 32) and img.mode == "RGB" and label == test.labels[0]
    assert test.provenance["package"] == "torchvision"


def test_probekit_datasets_command_lists_the_registry(capsys):
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} >= {"digits", "emoji", "cifar10"}
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "gaussian_noise" in out


def test_dataset_assets_are_optional_and_registered():
    names = {a.name for a in all_assets()}
    assert {a.name for a in DATASET_ASSETS} <= names
    assert not any(a.required for a in DATASET_ASSETS)
    for asset in DATASET_ASSETS:
        assert asset.command and (asset.locate() is None or asset.locate().exists())


def test_emoji_extraction_keeps_images_and_metadata(tmp_path):
    import io
    import tarfile

    tgz = tmp_path / "emoji.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in [
            ("package/emoji.json", b"[]"),
            ("package/img/google/64/1f600.png", b"png"),
            ("package/img/google/sheets/big.png", b"sheet"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "emoji"
    extract_emoji(tgz, target)
    assert (target / "emoji.json").is_file() and (target / "img/google/64/1f600.png").is_file()
    assert not (target / "img/google/sheets").exists()


def test_every_online_entry_names_a_torchvision_class():
    tvd = pytest.importorskip("torchvision.datasets")
    for spec in ONLINE.values():
        assert hasattr(tvd, spec.cls), spec.cls
