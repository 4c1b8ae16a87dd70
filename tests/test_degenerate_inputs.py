"""Degenerate inputs get clear errors or flags, never confident answers.

A one-class folder, a class too small for a split, feature keys that are the same for every image,
and headlines that cannot be computed (a Spearman rho over two datasets). Real images: scikit-learn's
digits written as PNG folders, the offline ``textures``; a random-initialised ViT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from probekit.headlines import NOT_RESOLVED, describe, median_ci
from probekit.pipeline import TooFewImagesError, split_features
from probekit.studies import probing, summary


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    """Feature stores and cached results of these tests stay in a throw-away data dir."""
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "probekit-data"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(scope="module")
def vit():
    from probekit.models import load_model

    return load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, device="cpu")


def digit_folder(root: Path, counts: dict[int, int]) -> Path:
    """A folder dataset of real digits: ``counts[digit]`` PNGs in sub-folder ``digit_<d>``."""
    img, y = load_digits(return_X_y=True)
    for digit, n in counts.items():
        folder = root / f"digit_{digit}"
        folder.mkdir(parents=True)
        for i, row in enumerate(img[y == digit][:n]):
            pixels = (row.reshape(8, 8) * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(folder / f"{i:03d}.png")
    return root


def test_one_class_folder_is_an_error_naming_the_class(tmp_path, vit) -> None:
    root = digit_folder(tmp_path / "one", {3: 20})
    with pytest.raises(TooFewImagesError, match=r"1 class with images \(digit_3\).*at least 2 classes"):
        split_features(vit, f"folder:{root}", progress=False)
    assert not (tmp_path / "probekit-data" / "features").exists()  # failed before any extraction


def test_class_with_one_image_in_a_split_is_an_error_naming_it(tmp_path, vit) -> None:
    root = digit_folder(tmp_path / "small", {0: 20, 1: 20, 7: 3})  # 3 images: 1 train, 1 val, 1 test
    with pytest.raises(
        TooFewImagesError, match=r"class 'digit_7'.*1 image\(s\) in the train split.*Add images"
    ):
        split_features(vit, f"folder:{root}", progress=False)


def test_a_cap_of_one_says_to_raise_it(vit) -> None:
    with pytest.raises(TooFewImagesError, match=r"raise images_per_class \(now 1\)"):
        split_features(vit, "textures", max_per_class=1, progress=False)


def test_a_cap_of_zero_takes_every_image(vit) -> None:
    sf = split_features(vit, "textures", max_per_class=0, sites=["norm"], pools=["cls"], progress=False)
    from probekit.data import load_dataset

    assert (
        sf.provenance["splits"]["train"]
        == len(load_dataset("textures", split="train"))
        == len(sf.train.labels)
    )


@pytest.fixture(scope="module")
def textures_study(vit, tmp_path_factory):
    import os

    old = os.environ.get("PROBEKIT_DATA")
    os.environ["PROBEKIT_DATA"] = str(tmp_path_factory.mktemp("study-data"))
    try:
        return probing.probe_study(
            vit,
            ["textures"],
            sites=["embed", "ln1", "resid_post", "norm"],
            pools=["cls", "mean"],
            images_per_class=20,
            Cs=[0.1, 1.0],
            progress=False,
        )
    finally:
        if old is None:
            del os.environ["PROBEKIT_DATA"]
        else:
            os.environ["PROBEKIT_DATA"] = old


def test_constant_keys_are_flagged(textures_study) -> None:
    t = textures_study.test_rows()
    flagged = set(t.loc[t["constant"], "key"])
    # the class token before any attention is the same for every image; nothing else is
    assert flagged == {"embed/cls", "blocks.0.ln1/cls"}
    assert "embed/cls" in probing.constant_text(textures_study)


def test_constant_keys_are_never_the_best_layer(textures_study) -> None:
    study = textures_study
    # make the constant keys look best on validation and test: they must still not be chosen
    t = study.table.copy()
    t.loc[t["constant"], "value"] = 1.0
    study = probing.ProbeStudy(t, study.depth, study.protocol, study.y_test, study.predictions)
    for pool in ("cls", "mean"):
        best = probing.best_sites(study, pool=pool)
        assert not best["best_key"].isin(["embed/cls", "blocks.0.ln1/cls"]).any()
    sites = probing.site_summary(study, pool="cls")
    assert (sites.loc[sites["site"] == "ln1", "layer"] != 0).all()


def test_nan_headline_says_why_and_unresolved_interval_says_so() -> None:
    nan = describe(float("nan"), "+.2f", ci=(float("nan"),) * 2, n="2 datasets", why="only 2 datasets")
    assert "nan" not in nan["display"] and nan["display"].startswith("n/a")
    assert nan["note"] == "not computed: only 2 datasets"
    spans = describe(0.12, "+.2f", ci=(-0.31, 0.55), n="7 datasets")
    assert spans == {"display": "+0.12 [-0.31, +0.55], n = 7 datasets", "note": NOT_RESOLVED}
    assert describe(0.4, "+.2f", ci=(0.1, 0.6), n=7)["note"] == ""
    assert describe(0.0, "+.3f", ci=(0.0, 0.0))["note"] == ""  # a zero-width interval is resolved
    median, lo, hi = median_ci([0.1, -0.05, 0.2, 0.0, 0.3])
    assert median == 0.1 and lo <= median <= hi


def test_spearman_over_two_datasets_says_why(tmp_path) -> None:
    shift = pd.DataFrame(
        {
            "model": "m",
            "dataset": ["a", "b"],
            "site": "norm",
            "layer": np.nan,
            "pool": "mean",
            "measure": "mmd_rbf",
            "value": [0.1, 0.4],
            "ci_low": 0.0,
            "ci_high": 0.5,
        }
    )
    shift.to_csv(tmp_path / "shift.csv", index=False)
    pd.DataFrame(
        {"model": "m", "dataset": ["a", "b"], "relative_depth": [1.0, 0.5], "value": [0.0, 0.1]}
    ).to_csv(tmp_path / "layerwise_best.csv", index=False)
    pd.DataFrame({"model": "m", "dataset": ["a", "b"], "value": [0.02, 0.03]}).to_csv(
        tmp_path / "modulewise_best.csv", index=False
    )  # notebook 03's table; 04's is optional (paper-1 runs)
    per = summary.outcomes_by_dataset(tmp_path, model="m")
    corr = summary.correlations(per, model="m")
    lines = summary.findings(corr)
    assert "nan" not in " ".join(lines).lower()
    assert "needs at least 3 datasets with both numbers, this run has 2" in lines[0]


def test_summary_refuses_a_missing_table_naming_the_notebook(tmp_path) -> None:
    from probekit.errors import MissingTableError

    with pytest.raises(MissingTableError, match="01_distribution_shift"):
        summary.outcomes_by_dataset(tmp_path, model="m")
    pd.DataFrame(
        {
            "model": "m",
            "dataset": ["a"],
            "site": "norm",
            "layer": np.nan,
            "pool": "mean",
            "measure": "mmd_rbf",
            "value": [0.1],
            "ci_low": 0.0,
            "ci_high": 0.5,
        }
    ).to_csv(tmp_path / "shift.csv", index=False)
    with pytest.raises(MissingTableError, match="02_layerwise_probing"):
        summary.outcomes_by_dataset(tmp_path, model="m")
