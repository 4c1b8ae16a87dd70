"""shift_table on real images: digits through fixed random layers, clean vs noisier copies."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from probekit.shift import COLUMNS, MEASURES, ShiftInputError, SmallSampleWarning, shift_keys, shift_table
from probekit.shift.mmd import mmd2, reference_bandwidth

DIMS = {"embed/mean": 64, "blocks.0.act/cls": 96, "blocks.1.resid_post/ap": 48, "norm/cls": 32}
LABELS = {"model": "random-relu", "dataset": "digits", "reference": "digits-clean"}


def _layers(x: np.ndarray) -> dict[str, np.ndarray]:
    """A fixed 'network': each key a seeded random ReLU map of the previous one (float32 like a store)."""
    rng = np.random.default_rng(123)
    out, h = {}, x / 16.0
    for key, dim in DIMS.items():
        h = np.maximum(h @ rng.normal(size=(h.shape[1], dim)) / np.sqrt(h.shape[1]), 0.0)
        out[key] = h.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def stores() -> dict[int, dict[str, np.ndarray]]:
    """Severity 0: other clean digits; 1–3: those digits with rising Gaussian pixel noise."""
    x = load_digits().data.astype(np.float64)
    x = x[np.random.default_rng(0).permutation(len(x))]
    ref, tgt = x[:200], x[200:400]
    noise = np.random.default_rng(1).normal(size=tgt.shape)
    out = {-1: _layers(ref)}
    for sev in (0, 1, 2, 3):
        out[sev] = _layers(np.clip(tgt + 5.0 * sev * noise, 0, 16))
    return out


def _table(stores, sev: int, **kw) -> pd.DataFrame:
    kw.setdefault("n", 120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        return shift_table(stores[-1], stores[sev], depth=12, labels=LABELS, progress=False, **kw)


def test_table_shape_columns_and_layers(stores):
    df = _table(stores, 2)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(DIMS) * len(MEASURES)
    assert shift_keys(stores[-1], stores[2]) == list(DIMS)
    layers = df.drop_duplicates(["site", "layer", "pool"])[["site", "layer", "pool"]].values.tolist()
    assert layers == [["embed", 0, "mean"], ["act", 1, "cls"], ["resid_post", 2, "ap"], ["norm", 12, "cls"]]
    assert (df["n"] == 120).all() and df.set_index("site")["dim"].to_dict()["act"] == 96
    assert (df[["model", "dataset", "reference"]].values == list(LABELS.values())).all()
    inside = df[df.measure.isin(["fd", "mmd_rbf", "mmd_linear", "domain_acc"])]
    assert (inside.ci_low <= inside.value).all() and (inside.value <= inside.ci_high).all()
    acc = df[df.measure == "domain_acc"].set_index("site")["value"]
    pad = df[df.measure == "proxy_a"].set_index("site")["value"]
    np.testing.assert_allclose(pad, 2.0 * (2.0 * acc - 1.0))


def test_shift_rises_with_corruption_severity(stores):
    tables = pd.concat([_table(stores, s, n_boot=5).assign(severity=s) for s in (0, 1, 2, 3)])
    for measure in ("fd", "mmd_rbf", "domain_acc"):
        for site, g in tables[tables.measure == measure].groupby("site"):
            values = g.sort_values("severity")["value"].to_numpy()
            assert np.all(np.diff(values) > 0), (measure, site, values)
    clean = tables[(tables.severity == 0) & (tables.measure == "domain_acc")]["value"]
    assert (clean < 0.65).all()  # other digits, same distribution: near chance


def test_rbf_bandwidth_comes_from_the_reference_alone(stores):
    """Every target against one reference is scored with one kernel per key: σ from the reference's rows."""
    mmd = _table(stores, 3, measures=("mmd_rbf",), n_boot=0).set_index(["site", "pool"])["value"]
    rng = np.random.default_rng(0)
    idx_ref, idx_tgt = (
        np.sort(rng.choice(200, 120, replace=False)),
        np.sort(rng.choice(200, 120, replace=False)),
    )
    for key, site_pool in zip(
        DIMS, [("embed", "mean"), ("act", "cls"), ("resid_post", "ap"), ("norm", "cls")]
    ):
        ref, tgt = stores[-1][key].astype(np.float64), stores[3][key].astype(np.float64)
        sigma = reference_bandwidth(ref)  # all 200 reference rows, whatever n and the target
        assert mmd[site_pool] == pytest.approx(mmd2(ref[idx_ref], tgt[idx_tgt], bandwidth=sigma), rel=1e-9), (
            key
        )


def test_a_targets_score_does_not_depend_on_the_other_targets_or_on_n(stores):
    """Scores of one target are the same whether it is measured alone or beside others, and its
    kernel does not change with the per-side sample size."""
    alone = _table(stores, 2, measures=("mmd_rbf",), n_boot=4)
    run = pd.concat([_table(stores, s, measures=("mmd_rbf",), n_boot=4) for s in (0, 2, 3)])
    together = run.iloc[len(alone) : 2 * len(alone)].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, together)
    # the bandwidth is fixed per key: a smaller n reaches the same expectation (unbiased), not a
    # differently scaled one; on these stores it stays within 25 % at the farthest severity
    big = _table(stores, 3, measures=("mmd_rbf",), n=180, n_boot=0)["value"].to_numpy()
    small = _table(stores, 3, measures=("mmd_rbf",), n=90, n_boot=0)["value"].to_numpy()
    np.testing.assert_allclose(small, big, rtol=0.25)


def test_deterministic_under_seed(stores):
    a, b = _table(stores, 1, seed=3, n_boot=8), _table(stores, 1, seed=3, n_boot=8)
    pd.testing.assert_frame_equal(a, b)
    c = _table(stores, 1, seed=4, n_boot=8)
    assert not np.allclose(a["ci_high"], c["ci_high"])


def test_small_sample_warning_once_for_fd(stores):
    with pytest.warns(SmallSampleWarning, match="n < d") as record:
        shift_table(stores[-1], stores[1], depth=12, labels=LABELS, n=80, n_boot=2, progress=False)
    assert len([w for w in record if issubclass(w.category, SmallSampleWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallSampleWarning)
        shift_table(
            stores[-1],
            stores[1],
            depth=12,
            labels=LABELS,
            n=80,
            n_boot=2,
            progress=False,
            keys=["blocks.1.resid_post/ap", "norm/cls"],
        )  # d = 48, 32 < n
        shift_table(
            stores[-1],
            stores[1],
            depth=12,
            labels=LABELS,
            n=80,
            n_boot=2,
            progress=False,
            measures=("mmd_linear",),
        )  # no FD, no warning


def test_bad_requests_are_clear_errors(stores):
    ref, tgt = stores[-1], stores[1]
    with pytest.raises(ShiftInputError, match=r"n = 500"):
        shift_table(ref, tgt, depth=12, labels=LABELS, n=500, progress=False)
    with pytest.raises(ShiftInputError, match="labels needs"):
        shift_table(ref, tgt, depth=12, labels={"model": "m"}, progress=False)
    with pytest.raises(ShiftInputError, match="unknown measures"):
        shift_table(ref, tgt, depth=12, labels=LABELS, measures=("fid",), progress=False)
    with pytest.raises(ShiftInputError, match="share no"):
        shift_table(ref, {"norm/ap": tgt["norm/cls"]}, depth=12, labels=LABELS, progress=False)
