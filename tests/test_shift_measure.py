"""The shift study's measure_shift end to end: a random-init timm ViT, the offline reference photos and digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit.data import load_dataset, reference_set
from probekit.extract import features
from probekit.models import load_model
from probekit.shift import COLUMNS, SmallSampleWarning, shift_table
from probekit.studies.shift import measure_shift


@pytest.fixture(scope="module")
def tiny():
    return load_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        image_size=32,
        depth=2,
        embed_dim=48,
        num_heads=3,
        device="cpu",
    )


def test_measure_shift_extracts_and_tables_every_target(tiny, tmp_path: Path):
    ref = reference_set(n=40)
    clean = load_dataset("digits", split="all", max_per_class=4)
    noisy = load_dataset("digits+gaussian_noise@5", split="all", max_per_class=4)
    kw = {"root": tmp_path, "batch_size": 20, "storage_dtype": "float32"}
    with pytest.warns(SmallSampleWarning):  # 40 images, 48–192 dims
        df = measure_shift(
            tiny,
            ref,
            [clean, noisy],
            sites=["act", "resid_post", "norm"],
            pools=("cls", "mean"),
            n_boot=5,
            extract_kw=kw,
            progress=False,
        )
    assert list(df.columns) == list(COLUMNS)
    assert set(df.dataset) == {clean.id, noisy.id} and set(df.reference) == {ref.id}
    assert sorted(df.layer.unique()) == [1, 2]  # blocks 0, 1 -> layers 1, 2; norm -> depth 2
    assert set(df.site) == {"act", "resid_post", "norm"} and set(df.pool) == {"cls", "mean"}
    assert len(df) == 2 * (2 * 2 + 1) * 2 * 5 and np.isfinite(df.value).all()
    # the same numbers as shift_table on the stores themselves (reused from the cache)
    stores = [
        features(tiny, d, sites=["act", "resid_post", "norm"], pools=("cls", "mean"), **kw)
        for d in (ref, noisy)
    ]
    with pytest.warns(SmallSampleWarning):
        direct = shift_table(
            *stores,
            depth=2,
            n_boot=5,
            progress=False,
            labels={"model": tiny.name, "dataset": noisy.id, "reference": ref.id},
        )
    mine = df[df.dataset == noisy.id].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, direct.loc[:, mine.columns])


def test_adding_or_removing_a_dataset_leaves_the_others_scores_unchanged(tiny, tmp_path: Path):
    """One shift scale: each dataset's rows are the same alone and beside others (σ from the reference)."""
    ref = reference_set(n=40)
    ids = ["digits", "digits+snow@5", "faces"]
    sets = {i: load_dataset(i, split="all", max_per_class=6) for i in ids}
    kw = {"root": tmp_path, "batch_size": 20, "storage_dtype": "float32"}
    opts = {
        "sites": ["resid_post", "norm"],
        "pools": ("mean",),
        "measures": ("mmd_rbf", "mmd_linear"),
        "n_boot": 5,
        "extract_kw": kw,
        "progress": False,
    }
    everything = measure_shift(tiny, ref, [sets[i] for i in ids], **opts)
    for kept in (["digits"], ["digits+snow@5", "digits"], ["faces", "digits"]):
        fewer = measure_shift(tiny, ref, [sets[i] for i in kept], **opts)
        for i in kept:
            pd.testing.assert_frame_equal(
                fewer[fewer.dataset == i].reset_index(drop=True),
                everything[everything.dataset == i].reset_index(drop=True),
            )
    last = everything[(everything.site == "norm") & (everything.measure == "mmd_rbf")].set_index("dataset")[
        "value"
    ]
    assert last["digits+snow@5"] != last["digits"] and np.isfinite(last).all()
