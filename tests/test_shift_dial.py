"""The corruption dial on the embedded DINOv2: with one MMD scale, shift rises with severity for every family."""

from __future__ import annotations

import pytest

from probekit.data import CORRUPTIONS
from probekit.models import load_model
from probekit.studies import shift as study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dial():
    backbone = load_model("dinov2_vits14", image_size=56, device="cpu")
    return study.corruption_dial(
        backbone,
        "emoji",
        severities=(1, 3, 5),
        images_per_class=10,
        sites=("norm",),
        pools=("mean",),
        measures=("mmd_rbf",),
        n_boot=2,
    )


def test_every_family_rises_with_severity_at_the_last_layer(dial):
    assert set(dial["dataset"]) == {f"emoji+{f}@{s}" for f in CORRUPTIONS for s in (1, 3, 5)}
    check = study.dial_is_monotone(dial, "mmd_rbf")
    assert sorted(check["corruption"]) == sorted(CORRUPTIONS)
    assert check["rises"].all(), check.to_string()
