"""The tidy table of fit_linear_probes and reference_probes, on real digits pixels and fixed transforms of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from probekit.errors import NonFiniteFeaturesError
from probekit.probes.linear import DEFAULT_CS, _stack, fit_linear_probes
from probekit.probes.reference import reference_probes
from probekit.probes.table import COLUMNS
from probekit.studies.probing import protocol_settings


@pytest.fixture(scope="module")
def stores() -> tuple[dict, np.ndarray, dict, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:1000]
    tr, te = idx[:700], idx[700:]
    proj = rng.normal(size=(64, 128))
    sites = {
        "embed/mean": x,
        "blocks.0.ln2/mean": np.sqrt(x),
        "blocks.0.act/mean": np.maximum(x @ proj, 0.0),
        "blocks.1.act/cls": np.tanh(x @ proj / 30.0),
    }
    labels = 3 * y + 5  # labels need not be 0..K-1
    train = {k: v[tr].astype(np.float32) for k, v in sites.items()}
    test = {k: v[te].astype(np.float32) for k, v in sites.items()}
    return train, labels[tr], test, labels[te]


def test_selection_protocol_table(stores) -> None:
    train, ytr, test, yte = stores
    df = fit_linear_probes(
        train, ytr, test, yte, depth=2, labels={"model": "m", "dataset": "digits"}, progress=False
    )
    assert list(df.columns) == list(COLUMNS)
    assert set(df.trainer) == {"batched"} and set(df.model) == {"m"}
    val = df[df.split == "val"]
    test_rows = df[df.split == "test"]
    assert len(val) == 4 * len(DEFAULT_CS)
    assert len(test_rows) == 4 * 2 and set(test_rows.metric) == {"accuracy", "balanced_accuracy"}
    for key, g in val.groupby("key"):
        chosen = test_rows[test_rows.key == key].regularisation.unique()
        assert len(chosen) == 1
        best = g[g.value == g.value.max()].regularisation.min()
        assert chosen[0] == best
    assert (test_rows.ci_low <= test_rows.value).all() and (test_rows.value <= test_rows.ci_high).all()
    assert (test_rows.value > 0.85).all()  # digits are easy for every stand-in site
    layers = dict(zip(df.key, df.layer))
    assert layers == {"embed/mean": 0, "blocks.0.ln2/mean": 1, "blocks.0.act/mean": 1, "blocks.1.act/cls": 2}


def test_paper1_mode_equals_sklearn_reference(stores) -> None:
    train, ytr, test, yte = stores
    keys = ["blocks.0.ln2/mean", "blocks.0.act/mean"]
    ours = fit_linear_probes(
        train, ytr, test, yte, depth=2, keys=keys, Cs=[1.0], val_fraction=0, progress=False
    )
    ref = reference_probes(train, ytr, test, yte, depth=2, keys=keys, progress=False)
    assert set(ours.split) == {"test"} and set(ref.trainer) == {"sklearn"}
    m = ours.merge(ref, on=["key", "metric"], suffixes=("_b", "_s"))
    assert len(m) == 4
    assert np.abs(m.value_b - m.value_s).max() <= 0.015


def test_reference_pool_filter_and_errors(stores) -> None:
    train, ytr, test, yte = stores
    ref = reference_probes(
        train, ytr, test, yte, depth=2, pool="cls", metrics=("accuracy",), n_boot=0, progress=False
    )
    assert list(ref.key) == ["blocks.1.act/cls"] and ref.ci_low.isna().all()
    with pytest.raises(KeyError, match="missing"):
        fit_linear_probes(train, ytr, test, yte, depth=2, keys=["blocks.5.fc1/mean"], progress=False)
    with pytest.raises(ValueError, match="tokens"):
        fit_linear_probes(train, ytr, test, yte, depth=2, keys=["blocks.0.act/tokens"], progress=False)
    with pytest.raises(ValueError, match="labels"):
        fit_linear_probes(train, ytr[:-1], test, yte, depth=2, progress=False)
    for grid in ([], [1.0, 0.0], [-1.0], ["a lot"], [float("inf")], "5"):
        with pytest.raises(ValueError, match="Cs must be"):
            fit_linear_probes(train, ytr, test, yte, depth=2, Cs=grid, progress=False)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        fit_linear_probes(train, ytr, test, yte, depth=2, val_fraction=1.5, progress=False)
    with pytest.raises(ValueError, match="val_fraction must be"):
        fit_linear_probes(train, ytr, test, yte, depth=2, val_fraction="0.2", progress=False)
    with np.errstate(over="ignore"):  # what a float16 store of too-large activations holds
        big = train["blocks.0.ln2/mean"].astype(np.float16) * np.float16(6e4)
    overflowed = dict(train) | {"blocks.0.ln2/mean": big}
    with pytest.raises(NonFiniteFeaturesError, match=r"blocks.0.ln2/mean.*storage_dtype='float32'"):
        fit_linear_probes(overflowed, ytr, test, yte, depth=2, progress=False)
    # the check sums each key first: a sum that overflows on finite values is not a non-finite key
    large = {"big": np.full((4, 3), 3e38, np.float32), "nan": np.full((4, 3), np.nan, np.float32)}
    assert torch.isfinite(_stack(large, ["big"], None, torch.device("cpu"))).all()
    with pytest.raises(NonFiniteFeaturesError, match=r"1 feature key\(s\).*'nan'"):
        _stack(large, ["big", "nan"], None, torch.device("cpu"))
    # the studies check the grid before extracting anything
    with pytest.raises(ValueError, match="Cs must be"):
        protocol_settings("validated", [0.1, -1.0], 0.2)
    assert protocol_settings("paper1", [-1.0], 0.2) == ((1.0,), 0.0)  # paper1 fixes both


def test_unconverged_probes_are_reported(stores) -> None:
    train, ytr, test, yte = stores
    common = {
        "depth": 2,
        "keys": ["embed/mean"],
        "Cs": [100.0],
        "val_fraction": 0,
        "n_boot": 0,
        "progress": False,
    }
    with pytest.warns(UserWarning, match="max_iter=3"):
        fit_linear_probes(train, ytr, test, yte, max_iter=3, **common)
