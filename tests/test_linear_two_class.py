"""Two-class tasks and class weights against scikit-learn, on real DINOv2 ViT-S/14 features.

scikit-learn fits two classes with the binomial loss; probekit's ``C`` must mean the same there
(issue "Right answers", item 3), and ``class_weight="balanced"`` must be scikit-learn's. Checked on
the offline ``faces`` dataset (face / non-face, balanced) and on a 2-class image folder written
from two emoji categories, 100 and 35 images (imbalanced, so the weights change the probes):
the coefficients and decision function of the optimum, and the test accuracy of the batched
trainer against paper 1's scikit-learn pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from probekit.data import load_dataset
from probekit.extract import extract
from probekit.models import load_model
from probekit.probes.linear import fit_linear_probes
from probekit.probes.reference import reference_probes
from probekit.probes.softmax import fit_softmax
from probekit.probes.standardize import prepare

pytestmark = pytest.mark.slow
KW = {
    "sites": ("act", "resid_post"),
    "layers": (5, 11),
    "pools": ("mean",),
    "progress": False,
    "storage_dtype": "float32",
}


def _features(bb, dataset_id: str, root) -> tuple:
    return tuple(extract(bb, load_dataset(dataset_id, split=s), root=root, **KW) for s in ("train", "test"))


@pytest.fixture(scope="module")
def backbone():
    return load_model("dinov2_vits14", image_size=56)


@pytest.fixture(scope="module")
def faces(backbone, tmp_path_factory):
    return _features(backbone, "faces", tmp_path_factory.mktemp("faces-features"))


@pytest.fixture(scope="module")
def emoji_folder(backbone, tmp_path_factory):
    emoji = load_dataset("emoji", split="all")
    root = tmp_path_factory.mktemp("emoji-two")
    for cls, n in (("Animals & Nature", 100), ("Food & Drink", 35)):
        label = emoji.classes.index(cls)
        (root / "images" / cls).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(emoji.labels == label)[:n]):
            emoji[int(i)][0].save(root / "images" / cls / f"{j:03d}.png")
    with pytest.MonkeyPatch.context() as mp:  # the folder's decode-check cache stays in tmp
        mp.setenv("PROBEKIT_DATA", str(root / "probekit-data"))
        return _features(backbone, f"folder:{root / 'images'}", root / "features")


@pytest.fixture(params=["faces", "emoji_folder"])
def two_class(request):
    train, test = request.getfixturevalue(request.param)
    assert len(np.unique(train.labels)) == 2 and len(train.keys()) == 4
    return train, test


@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("C", [0.1, 1.0])
def test_two_class_optimum_is_sklearns(two_class, C: float, class_weight: str | None) -> None:
    train, test = two_class
    y = np.asarray(train.labels)
    for key in train.keys():
        xtr, xte = prepare(
            torch.tensor(train[key], dtype=torch.float64)[None],
            torch.tensor(test[key], dtype=torch.float64)[None],
        )
        fit = fit_softmax(
            xtr,
            torch.tensor(y),
            torch.tensor([C]),
            2,
            tol=1e-9,
            dtype=torch.float64,
            class_weight=class_weight,
        )
        ref = LogisticRegression(C=C, max_iter=20000, tol=1e-10, class_weight=class_weight).fit(
            xtr[0].numpy(), y
        )
        w = (fit.coef[0, 0, :, 1] - fit.coef[0, 0, :, 0]).numpy()
        np.testing.assert_allclose(w, ref.coef_[0], atol=1e-4 * np.abs(ref.coef_).max(), err_msg=key)
        ours, theirs = fit.decision_function(xte)[0, 0].numpy(), ref.decision_function(xte[0].numpy())
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), err_msg=key)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_two_class_accuracy_is_sklearns(two_class, class_weight: str | None) -> None:
    train, test = two_class
    common = {
        "depth": 12,
        "metrics": ("accuracy", "balanced_accuracy"),
        "n_boot": 0,
        "progress": False,
        "class_weight": class_weight,
    }
    Cs = [0.01, 1.0, 100.0]
    ours = fit_linear_probes(train, train.labels, test, test.labels, Cs=Cs, val_fraction=0, **common)
    ref = reference_probes(train, train.labels, test, test.labels, C=Cs, tol=1e-8, pool=None, **common)
    m = ours.merge(ref, on=["key", "regularisation", "metric"], suffixes=("_b", "_s"))
    assert len(m) == 4 * len(Cs) * 2
    assert m[m.metric == "accuracy"].value_s.max() > 0.8  # real features: far above chance
    # the same probe: at most one test image apart (float32 solve stopped within the tolerance)
    acc = m[m.metric == "accuracy"]
    gap = (acc.value_b - acc.value_s).abs()
    assert gap.max() <= 1 / len(test.labels) + 1e-9, acc.loc[
        gap.idxmax(), ["key", "regularisation"]
    ].to_dict()
