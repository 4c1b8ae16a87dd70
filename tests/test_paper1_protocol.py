"""``protocol="paper1"`` follows paper 1 literally: its train and test views, every image, drop_last, C = 1.

Checked against second routes: torchvision's own ``RandomResizedCrop`` sampling and
``Resize + CenterCrop``, and scikit-learn's ``StandardScaler + LogisticRegression(C=1)`` on the
stored features. Real data: the offline ``textures`` and ``digits``, a random-initialised ViT.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.data import load_dataset
from probekit.data.paper1_views import TRAIN_BATCH, crop_box, drop_last_rows, paper1_backbone, paper1_view
from probekit.pipeline import split_features
from probekit.studies import probing


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "probekit-data"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(scope="module")
def vit():
    from probekit.models import load_model

    return load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, device="cpu")


def test_crop_boxes_are_drawn_as_torchvision_draws_them() -> None:
    from torchvision.transforms import RandomResizedCrop

    width, height, n = 96, 64, 4000
    rng = np.random.default_rng(0)
    ours = np.array([crop_box(width, height, rng) for _ in range(n)], dtype=float)
    torch.manual_seed(0)
    img = torch.zeros(3, height, width)
    theirs = np.array(
        [RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)], dtype=float
    )
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (
            (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
        )

    def area(b):
        return b[:, 2] * b[:, 3] / (width * height)

    def aspect(b):
        return np.log(b[:, 3] / b[:, 2])

    assert abs(area(ours).mean() - area(theirs).mean()) < 0.02
    assert abs(aspect(ours).mean() - aspect(theirs).mean()) < 0.03
    assert abs(np.quantile(area(ours), 0.9) - np.quantile(area(theirs), 0.9)) < 0.03


def test_each_image_gets_one_crop_whatever_the_cap() -> None:
    small = paper1_view(load_dataset("textures", split="train", max_per_class=3), 32, train=True, seed=0)
    large = paper1_view(load_dataset("textures", split="train", max_per_class=6), 32, train=True, seed=0)
    by_key = {k: np.asarray(large[i][0]) for i, k in enumerate(large.keys)}
    for i, key in enumerate(small.keys):
        a = np.asarray(small[i][0])
        assert a.shape == (32, 32, 3)
        assert np.array_equal(a, by_key[key])
        assert np.array_equal(a, np.asarray(small[i][0]))  # drawn again: the same crop
    other_seed = paper1_view(load_dataset("textures", split="train", max_per_class=3), 32, train=True, seed=1)
    assert any(
        not np.array_equal(np.asarray(small[i][0]), np.asarray(other_seed[i][0])) for i in range(len(small))
    )


def test_test_view_is_resize_then_centre_crop() -> None:
    from torchvision import transforms as T

    ds = load_dataset("textures", split="test", max_per_class=2)
    view = paper1_view(ds, 40, train=False)
    reference = T.Compose([T.Resize(40), T.CenterCrop(40)])
    for i in range(len(ds)):
        assert np.array_equal(np.asarray(view[i][0]), np.asarray(reference(ds[i][0])))


def test_paper1_views_never_share_a_store_with_the_eval_transform(vit) -> None:
    kw = {"max_per_class": 4, "sites": ["norm"], "pools": ["mean"], "progress": False}
    eval_sf = split_features(vit, "textures", **kw)
    paper_sf = split_features(vit, "textures", view="paper1", **kw)
    for split in ("train", "test"):
        assert eval_sf.stores[split].path != paper_sf.stores[split].path
        assert eval_sf.stores[split].meta["inputs"]["dataset"].get("view") is None
    assert paper_sf.train.meta["inputs"]["dataset"]["view"]["paper1"] == "train"
    assert paper_sf.test.meta["inputs"]["model"]["transform"]["paper1"] == "ToTensor + Normalize"
    assert not np.allclose(eval_sf.train["norm/mean"], paper_sf.train["norm/mean"])
    assert paper1_backbone(vit).identity()["weights_digest"] == vit.identity()["weights_digest"]


def test_drop_last_keeps_whole_batches() -> None:
    kept = drop_last_rows(1300, seed=0)
    assert len(kept) == 2 * TRAIN_BATCH and len(set(kept)) == len(kept) and kept.max() < 1300
    assert np.array_equal(kept, drop_last_rows(1300, seed=0))
    assert not np.array_equal(kept, drop_last_rows(1300, seed=1))
    assert len(drop_last_rows(300)) == 300 and len(drop_last_rows(1024)) == 1024


def test_paper1_probes_match_scikit_learn_on_every_image(vit) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    study = probing.probe_study(
        vit,
        ["textures"],
        sites=["resid_post"],
        pools=["mean"],
        images_per_class=0,
        protocol="paper1",
        progress=False,
    )
    t = study.test_rows()
    assert set(t["regularisation"]) == {1.0}
    assert (t["n_train"] == len(load_dataset("textures", split="train"))).all()  # every image, under 512
    sf = split_features(vit, "textures", sites=["resid_post"], pools=["mean"], view="paper1", progress=False)

    def l2(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for key in ("blocks.3.resid_post/mean", "blocks.11.resid_post/mean"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        clf.fit(l2(sf.train[key]), sf.labels("train"))
        sk = clf.score(l2(sf.test[key]), sf.labels("test"))
        ours = float(t.loc[t["key"] == key, "value"].iloc[0])
        assert abs(ours - sk) <= 1 / len(sf.labels("test")) + 1e-9, (key, ours, sk)


def test_paper1_drops_the_last_partial_batch(vit) -> None:
    study = probing.probe_study(
        vit, ["digits"], sites=["norm"], pools=["mean"], images_per_class=0, protocol="paper1", progress=False
    )
    n_split = len(load_dataset("digits", split="train"))
    assert n_split > TRAIN_BATCH
    assert (study.test_rows()["n_train"] == n_split - n_split % TRAIN_BATCH).all()


def test_deviations_are_listed_for_paper1_only() -> None:
    devs = probing.protocol_deviations("paper1", "dinov2_vits14", 112, ["digits", "emoji+snow@5"], 40)
    text = " ".join(devs)
    for expected in (
        "model: dinov2_vits14",
        "resolution: 112 px",
        "digits, emoji+snow@5",
        "at most 40 per class",
        "drop_last",
        "corruptions",
    ):
        assert expected in text, expected
    assert probing.protocol_deviations("validated", "dinov2_vits14", 112, ["digits"], 40) == []
    paper = probing.protocol_deviations(
        "paper1",
        "vit_base_patch16_224.orig_in21k",
        224,
        ["cifar10", "cifar10c:snow@5", "domainnet:sketch"],
        0,
        seed=42,
    )
    assert not any(d.startswith(("resolution", "datasets", "images", "seed")) for d in paper)
