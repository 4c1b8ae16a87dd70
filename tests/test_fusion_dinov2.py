"""Paper 2's probes on real DINOv2-S/14 features (embedded model, offline digits): beats chance widely."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.extract import features
from probekit.probes.fusion import attention_summary, fusion_tokens, run_fusion


@pytest.fixture(scope="module")
def dinov2_digit_stores(embedded_backbone, tmp_path_factory):
    from probekit.data import load_dataset

    root = tmp_path_factory.mktemp("features")
    kw = {"sites": ["ln2", "norm"], "pools": ["cls", "ap"], "root": root, "progress": False}
    train = features(embedded_backbone, load_dataset("digits", split="train", max_per_class=10), **kw)
    test = features(embedded_backbone, load_dataset("digits", split="test", max_per_class=5), **kw)
    return train, test


@pytest.mark.slow
def test_fusion_on_real_dinov2_features_beats_chance(embedded_backbone, dinov2_digit_stores) -> None:
    train, test = dinov2_digit_stores
    depth = embedded_backbone.depth
    x, tokens = fusion_tokens(train, depth=depth)
    assert x.shape == (len(train.labels), 2 * depth, embedded_backbone.embed_dim)
    assert tokens[0].key == "blocks.1.ln2/cls" and tokens[-1].key == "norm/ap"

    table, att = run_fusion(
        train,
        train.labels,
        test,
        test.labels,
        depth=depth,
        grid="tiny",
        seed=0,
        device="cpu",
        max_steps=100,
        n_boot=200,
        labels={"model": "dinov2_vits14", "dataset": "digits"},
        methods=["cls_last_linear", "clsap_all_linear", "alf_attentive"],
    )
    v = table.set_index("method")["value"]
    chance = 1 / 10
    # measured (100 train / 50 test images, 100 steps): CLS-last about 0.5, all-layer probes about 0.9
    assert v["alf_attentive"] > 0.7 > 5 * chance, v.to_dict()
    assert v["clsap_all_linear"] > 0.7 and v["cls_last_linear"] > 2 * chance, v.to_dict()
    assert v["alf_attentive"] > v["cls_last_linear"], v.to_dict()  # digits are far from DINOv2's data
    assert att["layer"].tolist() == list(range(1, depth + 1))
    assert np.isclose(att["mass"].sum(), 1.0)
    s = attention_summary(att).iloc[0]
    assert 0 <= s["last_layer_mass"] <= 1 and 0 < s["weighted_relative_depth"] <= 1
