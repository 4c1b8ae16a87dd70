"""Shift measures on real DINOv2 features (the embedded model): sqrtm agreement, ordering."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from probekit.data import load_dataset, reference_set
from probekit.extract import features
from probekit.shift import SmallSampleWarning, domain_classifier, frechet_distance, mmd2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dinov2_features(embedded_backbone, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    root: Path = tmp_path_factory.mktemp("features")
    sets = {
        "photos": reference_set(n=32, seed=0),
        "photos_b": reference_set(n=32, seed=1),
        "digits": load_dataset("digits", split="all", max_per_class=3),
    }
    kw = {"sites": ["norm"], "pools": ("cls",), "root": root, "progress": False}
    return {name: dict(features(embedded_backbone, ds, **kw)) for name, ds in sets.items()}


def test_fd_agrees_with_sqrtm_on_dinov2_features(dinov2_features):
    for key in ("norm/cls",):  # d = 384 > n: the Gram route, against sqrtm's d × d route
        x = dinov2_features["photos"][key].astype(np.float64)
        y = dinov2_features["digits"][key].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
            covmean = scipy.linalg.sqrtm(s1 @ s2).real
            ours = frechet_distance(x, y)
        ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert ours == pytest.approx(ref, rel=1e-6), key


def test_other_photos_are_closer_than_digits(dinov2_features):
    """Two draws of natural-photo crops sit nearer each other than photos and digits, by every measure."""
    a, b, far = (dinov2_features[k]["norm/cls"] for k in ("photos", "photos_b", "digits"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert frechet_distance(a, b) < frechet_distance(a, far)
    assert mmd2(a, b) < mmd2(a, far)
    assert mmd2(a, b, kernel="linear") < mmd2(a, far, kernel="linear")
    assert domain_classifier(a, b).accuracy < domain_classifier(a, far).accuracy
