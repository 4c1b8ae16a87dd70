"""Extraction into the feature store: values, reuse, new passes, dtypes, hash separation."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probekit.extract import extract, features
from probekit.models import load_model
from probekit.sites import capture
from probekit.store import FeatureStore

torch.set_num_threads(1)


@cache
def _photos(size: int) -> tuple[Image.Image, ...]:
    """Real photos bundled with scikit-image, read with PIL (skimage itself is not imported)."""
    files = sorted(
        f
        for f in metadata.files("scikit-image")
        if str(f).startswith("skimage/data/") and str(f).endswith(".png")
    )
    names = ("astronaut", "chelsea", "coffee", "motorcycle_left", "camera", "brick", "grass", "horse")
    out = []
    for f in files:
        if Path(str(f)).stem in names:
            img = Image.open(f.locate()).convert("RGB")
            img.thumbnail((size * 2, size * 2))
            out.append(img)
    assert len(out) == len(names)
    return tuple(out)


class PhotoSet:
    """A small real-image dataset: crops of eight scikit-image photos, label = photo index % 4.

    ``sleep`` slows ``__getitem__`` (to interrupt a run mid-way); it does not change the identity.
    """

    def __init__(self, n: int = 12, size: int = 40, sleep: float = 0.0, name: str = "photos") -> None:
        self.n, self.size, self.sleep, self.name = n, size, sleep, name
        self.labels = np.array([i % 8 % 4 for i in range(n)], dtype=np.int64)
        self.classes = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        if self.sleep:
            time.sleep(self.sleep)
        photo = _photos(self.size)[i % 8]
        off = 3 * (i // 8)
        return photo.crop((off, off, off + self.size, off + self.size)), int(self.labels[i])

    def identity(self) -> dict:
        return {"name": self.name, "split": "train", "n": self.n, "size": self.size}


def tiny_backbone(image_size: int = 32):
    return load_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        image_size=image_size,
        depth=2,
        embed_dim=48,
        num_heads=3,
        device="cpu",
    )


def direct_features(bb, ds, keys: list[str]) -> dict[str, np.ndarray]:
    x = torch.stack([bb.transform(ds[i][0]) for i in range(len(ds))])
    with torch.no_grad(), capture(bb.model, keys) as cap:
        bb.model.forward_features(x)
        return {k: v.numpy() for k, v in cap.take().items()}


def test_store_holds_the_hooked_features_for_every_row(tmp_path: Path) -> None:
    bb, ds = tiny_backbone(), PhotoSet(n=10)
    store = extract(bb, ds, batch_size=4, storage_dtype="float32", root=tmp_path, progress=False)
    assert store.complete and store.n == 10
    assert isinstance(store, Mapping) and len(store) == (8 * 2 + 2) * 3
    assert list(store)[:2] == ["embed/cls", "embed/ap"]
    want = direct_features(bb, ds, list(store))
    for key in store:
        got = store[key]
        assert got.dtype == np.float32 and got.shape == want[key].shape
        np.testing.assert_allclose(got, want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(store.labels, ds.labels)
    meta = store.meta
    assert meta["inputs"]["model"]["weights_digest"] == bb.weights_digest
    assert meta["inputs"]["compute_dtype"] == "float32"
    assert meta["runs"][0]["rows"] == 10 and meta["runs"][0]["images_per_s"] > 0
    assert "torch" in meta["versions"] and meta["passes"][0]["done"] == [[0, 3]]
    reopened = FeatureStore.open(store.path)
    np.testing.assert_array_equal(reopened.load("blocks.1.act/mean"), store["blocks.1.act/mean"])
    # DataLoader worker processes (the CUDA default) give the same rows
    workers = extract(
        bb, ds, batch_size=4, storage_dtype="float32", root=tmp_path / "w", num_workers=1, progress=False
    )
    assert workers.path.name == store.path.name
    np.testing.assert_array_equal(workers["blocks.1.act/mean"], store["blocks.1.act/mean"])
    np.testing.assert_array_equal(workers.labels, store.labels)


def test_second_call_reuses_and_new_keys_add_a_pass(tmp_path: Path) -> None:
    bb, ds = tiny_backbone(), PhotoSet(n=6)
    first = features(bb, ds, sites=["act"], pools=["cls"], root=tmp_path, progress=False)
    assert list(first) == ["blocks.0.act/cls", "blocks.1.act/cls"]
    again = features(bb, ds, sites=["act"], pools=["cls"], root=tmp_path, progress=False)
    assert again.path == first.path and len(again.meta["runs"]) == 1  # nothing recomputed
    more = features(bb, ds, sites=["act", "ln2"], pools=["cls", "ap"], root=tmp_path, progress=False)
    assert more.path == first.path and len(more.meta["passes"]) == 2
    assert set(more.meta["passes"][1]["keys"]) == {
        "blocks.0.act/ap",
        "blocks.1.act/ap",
        "blocks.0.ln2/cls",
        "blocks.0.ln2/ap",
        "blocks.1.ln2/cls",
        "blocks.1.ln2/ap",
    }
    assert more["blocks.0.act/cls"].dtype == np.float32
    assert np.load(more.path / "blocks.0.act__cls.npy", mmap_mode="r").dtype == np.float16


def test_changed_inputs_never_share_a_store(tmp_path: Path) -> None:
    ds = PhotoSet(n=4)
    base = extract(tiny_backbone(), ds, sites=["norm"], root=tmp_path, progress=False)
    other_size = extract(tiny_backbone(48), ds, sites=["norm"], root=tmp_path, progress=False)
    other_data = extract(
        tiny_backbone(), PhotoSet(n=4, name="photos2"), sites=["norm"], root=tmp_path, progress=False
    )
    limited = extract(tiny_backbone(), PhotoSet(n=6), sites=["norm"], root=tmp_path, limit=4, progress=False)
    f32 = extract(tiny_backbone(), ds, sites=["norm"], root=tmp_path, storage_dtype="float32", progress=False)
    bf16 = extract(tiny_backbone(), ds, sites=["norm"], root=tmp_path, dtype="bfloat16", progress=False)
    paths = {s.path for s in (base, other_size, other_data, limited, f32, bf16)}
    assert len(paths) == 6
    assert limited.n == 4
    np.testing.assert_allclose(base["norm/cls"], f32["norm/cls"], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(bf16["norm/mean"], f32["norm/mean"], rtol=0.1, atol=0.1)
    assert not np.array_equal(bf16["norm/mean"], f32["norm/mean"])


def test_token_sites_are_stored_three_dimensional(tmp_path: Path) -> None:
    bb, ds = tiny_backbone(), PhotoSet(n=5)
    store = extract(
        bb,
        ds,
        sites=["norm"],
        pools=["cls"],
        token_sites=["norm"],
        batch_size=2,
        storage_dtype="float32",
        root=tmp_path,
        progress=False,
    )
    tokens = store["norm/tokens"]
    assert tokens.shape == (5, 1 + 4, 48)
    np.testing.assert_allclose(tokens[:, 0], store["norm/cls"], rtol=1e-6)
    want = direct_features(bb, ds, ["norm/tokens"])["norm/tokens"]
    np.testing.assert_allclose(tokens, want, rtol=1e-4, atol=1e-5)
    only = extract(bb, ds, pools=(), token_sites=["blocks.0.ln1"], root=tmp_path, progress=False)
    assert list(only) == ["blocks.0.ln1/tokens"] and only["blocks.0.ln1/tokens"].shape == (5, 5, 48)


def test_register_model_without_class_token_pools(tmp_path: Path) -> None:
    bb = load_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        image_size=28,
        depth=1,
        embed_dim=32,
        num_heads=2,
        device="cpu",
    )
    store = extract(bb, PhotoSet(n=3), layers=[0], root=tmp_path, progress=False)
    assert store.complete and store["blocks.0.resid_post/ap"].shape == (3, 32)
    with pytest.raises(KeyError, match="not in store"):
        store["blocks.0.resid_post/tokens"]


@pytest.mark.slow
def test_embedded_dinov2_on_offline_digits(embedded_backbone, tmp_path: Path) -> None:
    from probekit.data import load_dataset

    ds = load_dataset("digits", split="train", seed=0, max_per_class=1)
    store = features(
        embedded_backbone,
        ds,
        sites=["act", "ln2", "norm"],
        layers=[0, -1],
        batch_size=4,
        root=tmp_path,
        progress=False,
    )
    assert store.complete and store.n == len(ds) == 10
    np.testing.assert_array_equal(store.labels, ds.labels)
    want = direct_features(embedded_backbone, ds, list(store))
    for key in store:  # float16 storage of float32 features
        np.testing.assert_allclose(
            store[key], want[key], rtol=2e-3, atol=2e-3 * np.abs(want[key]).max(), err_msg=key
        )
    assert store.meta["inputs"]["dataset"] == ds.identity()


def test_a_store_whose_recorded_inputs_differ_is_refused(tmp_path: Path) -> None:
    import json

    from probekit.store import StoreError

    bb, ds = tiny_backbone(), PhotoSet(n=3)
    store = extract(bb, ds, sites=["norm"], root=tmp_path, progress=False)
    meta = json.loads((store.path / "meta.json").read_text())
    meta["inputs"]["model"]["weights_digest"] = "0" * 16  # as if other weights had written it
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="different inputs"):
        extract(bb, ds, sites=["norm"], root=tmp_path, progress=False)
