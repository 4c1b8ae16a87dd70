"""Fusion tokens, paper 2's baselines + ALF end to end, and the attention statistics.

Until real stores are available in the test suite, the "layers" are real fixed transforms of
scikit-learn's bundled 8x8 digits (offline): pixels, pooled maps, gradients and ink statistics,
with the final "norm" deliberately coarse so that fusing layers has something to gain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from probekit.errors import NonFiniteFeaturesError, ProbekitError
from probekit.probes.fusion import (
    METHODS,
    attention_matrix,
    attention_summary,
    convergence_note,
    fusion_token_list,
    fusion_tokens,
    fusion_variant,
    normalise_all_tokens,
    paired_gain_ci,
    run_fusion,
)
from probekit.probes.standardize import l2_rows
from probekit.validation_split import stratified_split

DEPTH = 4


def _pool(img: np.ndarray, k: int) -> np.ndarray:
    n = img.shape[0]
    return img.reshape(n, 8 // k, k, 8 // k, k).mean((2, 4)).reshape(n, -1)


def digit_layers(img: np.ndarray) -> dict[str, np.ndarray]:
    """Stand-in feature store: keys as an extractor writes them, widths from 3 to 64."""
    n = len(img)
    dx, dy = np.abs(np.diff(img, axis=2)).reshape(n, -1), np.abs(np.diff(img, axis=1)).reshape(n, -1)
    rows_cols = np.concatenate([img.sum(2), img.sum(1)], axis=1)
    ys, xs = np.mgrid[0:8, 0:8]
    ink = img.sum((1, 2)) + 1e-6
    stats = np.stack([ink, (img * ys).sum((1, 2)) / ink, (img * xs).sum((1, 2)) / ink], axis=1)
    feats = {
        "blocks.1.ln2/cls": img.reshape(n, -1),
        "blocks.1.ln2/ap": dx,
        "blocks.2.ln2/cls": _pool(img, 2),
        "blocks.2.ln2/ap": dy,
        "blocks.3.ln2/cls": rows_cols,
        "blocks.3.ln2/ap": _pool(img, 4),
        "blocks.1.act/cls": np.maximum(img.reshape(n, -1) - 8, 0),
        "blocks.1.act/ap": np.maximum(dx - 4, 0),
        "blocks.2.act/cls": np.maximum(_pool(img, 2) - 4, 0),
        "blocks.2.act/ap": np.maximum(dy - 4, 0),
        "blocks.3.act/cls": np.maximum(dx - dx.mean(), 0),
        "blocks.3.act/ap": np.maximum(dy - dy.mean(), 0),
        "norm/cls": _pool(img, 4),
        "norm/ap": stats,
        "norm/tokens": img,  # 8 row tokens of width 8
        "blocks.0.ln2/cls": img.reshape(n, -1),
        "blocks.0.ln2/ap": dx,  # present, but paper 2 skips block 0
    }
    return {k: v.astype(np.float32) for k, v in feats.items()}


@pytest.fixture(scope="module")
def digits_stores() -> tuple[dict, np.ndarray, dict, np.ndarray]:
    img, y = load_digits(return_X_y=True)
    img = img.reshape(-1, 8, 8)
    tr, te = stratified_split(y, 0.3, seed=0)
    return digit_layers(img[tr]), y[tr], digit_layers(img[te]), y[te]


def test_fusion_tokens_follow_the_paper(digits_stores) -> None:
    train, *_ = digits_stores
    x, tokens = fusion_tokens(train, depth=DEPTH)
    assert x.shape == (len(train["norm/cls"]), 2 * DEPTH, 64)  # 2L tokens, padded to the widest
    assert [t.key for t in tokens] == [
        "blocks.1.ln2/cls",
        "blocks.1.ln2/ap",
        "blocks.2.ln2/cls",
        "blocks.2.ln2/ap",
        "blocks.3.ln2/cls",
        "blocks.3.ln2/ap",
        "norm/cls",
        "norm/ap",
    ]
    assert [t.layer for t in tokens] == [1, 1, 2, 2, 3, 3, 4, 4]
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-5)
    assert np.all(x[:, 7, 3:] == 0)  # the 3-wide norm/ap token is zero-padded
    np.testing.assert_allclose(x[:, 5, :4], l2_rows(train["blocks.3.ln2/ap"], np.float32))


def test_other_sites_can_feed_the_fusion() -> None:
    tokens = fusion_token_list(sites=("ln2", "act"), depth=12)
    assert len(tokens) == 11 * 4 + 2
    assert tokens[2].key == "blocks.1.act/cls" and tokens[-1].key == "norm/ap"


def test_missing_keys_say_what_to_extract(digits_stores) -> None:
    train, *_ = digits_stores
    with pytest.raises(ProbekitError, match="lacks 4 key"):
        fusion_tokens(train, depth=DEPTH, sites=("fc1", "ln2"), blocks=(1, 2))
    overflowed = dict(train) | {"blocks.2.ln2/ap": np.full_like(train["blocks.2.ln2/ap"], np.inf)}
    with pytest.raises(NonFiniteFeaturesError, match=r"blocks.2.ln2/ap.*--storage-dtype float32"):
        fusion_tokens(overflowed, depth=DEPTH)


def test_paired_gain_interval_is_zero_for_identical_predictions() -> None:
    y = np.repeat(np.arange(5), 20)
    pred = np.where(np.arange(100) % 3 == 0, (y + 1) % 5, y)
    assert paired_gain_ci(y, pred, pred, n_boot=100) == (0.0, 0.0)
    lo, hi = paired_gain_ci(y, y, pred, n_boot=300)
    assert 0 < lo <= 0.34 <= hi  # perfect vs. 66 % correct


def test_run_fusion_end_to_end_on_digits(digits_stores) -> None:
    train, y_tr, test, y_te = digits_stores
    table, att = run_fusion(
        train,
        y_tr,
        test,
        y_te,
        depth=DEPTH,
        grid="tiny",
        seed=0,
        device="cpu",
        max_steps=120,
        n_boot=200,
        labels={"model": "digit-transforms", "dataset": "digits"},
        variants=[
            fusion_variant("alf_act", sites=("act",)),
            fusion_variant("alf_layer_emb", layer_embedding=True),
        ],
    )
    assert list(table["method"]) == [m.name for m in METHODS] + ["alf_act", "alf_layer_emb"]
    for col in (
        "model",
        "dataset",
        "method",
        "sites",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "lr",
        "weight_decay",
        "attn_drop",
        "gain",
        "gain_low",
        "gain_high",
    ):
        assert col in table.columns
    v = table.set_index("method")
    assert (
        v.loc["alf_attentive", "num_tokens"] == 2 * DEPTH
        and v.loc["tokens_last_attentive", "num_tokens"] == 8
    )
    assert v.loc["alf_act", "sites"] == "act" and v.loc["cls_last_linear", "sites"] == "norm"
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    assert v.loc["cls_last_linear", "gain"] == 0.0
    linear = v[v["probe"] == "linear"]
    assert (
        (linear["solver"] == "lbfgs_exact").all() and linear["converged"].all() and linear["C"].notna().all()
    )
    assert (v.loc[v["probe"] == "attentive", "solver"] == "adamw_cosine").all()
    assert (table["steps"] > 0).all() and table["train_loss"].notna().all()
    # chance is 0.1; the fused probe sees the full-resolution early "layers" and beats the coarse last one
    assert v.loc["alf_attentive", "value"] > 0.85
    assert v.loc["clsap_all_linear", "value"] > 0.85
    assert v.loc["alf_attentive", "value"] > v.loc["cls_last_linear", "value"] + 0.1
    assert v.loc["alf_attentive", "gain_low"] > 0

    assert set(att["method"]) == {"alf_attentive", "alf_act", "alf_layer_emb"}
    alf = att[att["method"] == "alf_attentive"]
    assert list(alf["layer"]) == [1, 2, 3, 4] and list(alf["relative_depth"]) == [0.25, 0.5, 0.75, 1.0]
    assert alf["mass"].sum() == pytest.approx(1.0) and np.allclose(alf["weight"], alf["mass"] / 2)
    summary = attention_summary(att)
    assert len(summary) == 3 and set(summary["dataset"]) == {"digits"}
    s = summary.set_index("method").loc["alf_attentive"]
    assert s["last_layer_mass"] == pytest.approx(alf["mass"].iloc[-1])
    assert s["weighted_relative_depth"] == pytest.approx(float((alf["mass"] * alf["relative_depth"]).sum()))


def test_attention_summary_reproduces_known_numbers() -> None:
    att = pd.DataFrame(
        {
            "dataset": "d",
            "layer": [1, 2, 3, 4],
            "relative_depth": [0.25, 0.5, 0.75, 1.0],
            "mass": [0.1, 0.2, 0.3, 0.4],
            "weight": [0.05, 0.1, 0.15, 0.2],
        }
    )
    s = attention_summary(att).iloc[0]
    assert s["last_layer_mass"] == pytest.approx(0.4)
    assert s["weighted_relative_depth"] == pytest.approx(0.025 + 0.1 + 0.225 + 0.4)


def test_attention_matrix_is_dataset_by_layer() -> None:
    rows = []
    for ds, w in (("a", [0.1, 0.2, 0.3, 0.4]), ("b", [0.4, 0.3, 0.2, 0.1])):
        for layer, wi in enumerate(w, start=1):
            site = "norm" if layer == 4 else "ln2"
            rows.append(
                {
                    "model": "m",
                    "dataset": ds,
                    "method": "alf_attentive",
                    "site": site,
                    "layer": layer,
                    "relative_depth": layer / 4,
                    "weight": wi / 2,
                    "mass": wi,
                }
            )
    m = attention_matrix(pd.DataFrame(rows))
    assert m.shape == (2, 4) and list(m.columns) == [1, 2, 3, 4]
    np.testing.assert_allclose(m.loc[("m", "b")].to_numpy(), [0.2, 0.15, 0.1, 0.05])


def test_unknown_method_names_are_listed(digits_stores) -> None:
    train, y_tr, test, y_te = digits_stores
    with pytest.raises(ProbekitError, match="cls_last_linear"):
        run_fusion(train, y_tr, test, y_te, depth=DEPTH, methods=["alf"])


def test_aat_is_normalised_across_tokens_as_paper_2() -> None:
    """``F.normalize(x, dim=1)`` on (N, T, D): every feature dimension has unit norm over the tokens."""
    import torch

    x = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    paper = normalise_all_tokens(x)
    np.testing.assert_allclose(
        paper, torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(np.linalg.norm(paper, axis=1), 1.0, rtol=1e-5)
    per_token = normalise_all_tokens(x, "width")
    np.testing.assert_allclose(np.linalg.norm(per_token, axis=2), 1.0, rtol=1e-5)
    assert not np.allclose(np.linalg.norm(paper, axis=2), 1.0)  # the two axes differ
    with pytest.raises(ProbekitError, match="tokens"):
        normalise_all_tokens(x, "rows")


def test_aat_variants_by_name(digits_stores) -> None:
    train, y_tr, test, y_te = digits_stores
    table, _ = run_fusion(
        train,
        y_tr,
        test,
        y_te,
        depth=DEPTH,
        grid="tiny",
        device="cpu",
        max_steps=40,
        max_cycles=1,
        n_boot=20,
        methods=["tokens_last_attentive", "tokens_last_attentive_per_token"],
    )
    assert list(table["method"]) == ["tokens_last_attentive", "tokens_last_attentive_per_token"]
    assert (table["num_tokens"] == 8).all() and not table["converged"].any()  # one cycle: not checked
    note = convergence_note(table)
    assert note.startswith("**Warning: 2 of 2 fits") and "tokens_last_attentive_per_token" in note


def test_convergence_note_is_empty_when_every_fit_converged() -> None:
    t = pd.DataFrame(
        {
            "dataset": ["a"],
            "method": ["alf_attentive"],
            "converged": [True],
            "steps": [300],
            "cycles": [2],
            "train_loss": [0.1],
        }
    )
    assert convergence_note(t) == ""
