"""The five notebooks end to end: `probekit suite configs/tiny.yaml` on the real embedded model.

Runs every notebook through papermill at toy size (56 px, a few images per class), then checks
each tidy table, each HTML report, the index, and that the charts draw in headless Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE_COLUMNS = ["model", "dataset", "site", "layer", "pool", "metric", "value", "ci_low", "ci_high"]


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory, run_suite) -> Path:
    out = tmp_path_factory.mktemp("suite")
    proc = run_suite(ROOT / "configs" / "tiny.yaml", out)  # every analysis computed, features reused
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_every_notebook_ran_and_wrote_its_tables(tiny_suite: Path):
    runs = json.loads((tiny_suite / "runs.json").read_text())["runs"]
    assert [r["name"] for r in runs] == [
        "shift",
        "layerwise",
        "modulewise",
        "fusion",
        "summary",
        "models",
        "finetune",
    ]
    assert all(r["status"] == "ok" for r in runs)
    results = tiny_suite / "results"
    for name in (
        "shift",
        "shift_dial",
        "probes",
        "layerwise_best",
        "modulewise",
        "modulewise_best",
        "modulewise_sites",
        "fusion",
        "fusion_gains",
        "summary",
        "finetune_history",
        "finetune_grid",
        "finetune_probes",
        "finetune_depth",
        "finetune_claim",
        "models_fusion",
        "models_findings",
        "models_sites_by_shift",
    ):
        table = pd.read_csv(results / f"{name}.csv")
        assert set(TABLE_COLUMNS) <= set(table.columns), name
        assert len(table) > 0, name
    shift = pd.read_csv(results / "shift.csv")
    assert {"reference", "measure"} <= set(shift.columns)
    assert set(shift["dataset"]) == {"digits", "faces", "textures", "digits+gaussian_noise@5"}
    best = pd.read_csv(results / "layerwise_best.csv")
    assert ((best["ci_low"] <= best["value"]) & (best["value"] <= best["ci_high"])).all()
    summary = pd.read_csv(results / "summary.csv")
    assert summary["metric"].str.startswith("spearman").all() and summary["value"].notna().any()


@pytest.mark.slow
def test_reports_render_offline_with_charts_drawn(tiny_suite: Path, check_reports):
    for name in ("shift", "layerwise", "modulewise", "fusion", "summary", "models", "finetune"):
        html = (tiny_suite / f"{name}.html").read_text()
        assert "cdn.jsdelivr" not in html and "Run info" in html
    index = (tiny_suite / "index.html").read_text()
    assert all(f"{name}.html" in index for name in ("shift", "layerwise", "modulewise", "fusion", "summary"))
    check = check_reports(tiny_suite)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "reports ok" in check.stdout


@pytest.mark.slow
def test_fusion_cls_last_baseline_matches_notebook_02(tiny_suite: Path):
    """The same probe on the same feature gives the same number in every notebook: notebook 04's
    `cls_last_linear` (fusion.csv) within 0.02 of notebook 02's `norm/cls` probe (probes.csv, test
    balanced accuracy) on every dataset, and every linear baseline of the fusion table converged."""
    results = tiny_suite / "results"
    fusion = pd.read_csv(results / "fusion.csv")
    probes = pd.read_csv(results / "probes.csv")
    ours = fusion[fusion["method"] == "cls_last_linear"].set_index("dataset")
    theirs = probes[
        (probes["key"] == "norm/cls")
        & (probes["split"] == "test")
        & (probes["metric"] == "balanced_accuracy")
    ].set_index("dataset")
    assert set(ours.index) <= set(theirs.index) and len(ours) > 0
    assert (ours["metric"] == "balanced_accuracy").all()
    gap = (ours["value"] - theirs.loc[ours.index, "value"]).abs()
    assert (gap <= 0.02).all(), pd.DataFrame(
        {"fusion": ours["value"], "layerwise": theirs.loc[ours.index, "value"]}
    )
    assert {"solver", "train_loss", "steps", "cycles", "converged"} <= set(fusion.columns)
    linear = fusion[fusion["probe"] == "linear"]
    assert linear["converged"].all() and (linear["solver"] == "lbfgs_exact").all()


def test_every_numeric_headline_carries_its_n_and_interval(tiny_suite: Path):
    """The index's numbers are honest about their uncertainty: each numeric headline names its sample
    size and carries an interval (or says why it could not be computed)."""
    runs = json.loads((tiny_suite / "runs.json").read_text())["runs"]
    numeric = [
        (r["name"], h)
        for r in runs
        for h in r.get("headlines", [])
        if isinstance(h["value"], (int, float)) and not isinstance(h["value"], bool)
    ]
    assert len(numeric) >= 8

    def has_interval(h: dict) -> bool:
        return h["ci_low"] is not None and np.isfinite([h["ci_low"], h["ci_high"]]).all()

    missing = [(run, h["name"]) for run, h in numeric if not h["n"] or not (has_interval(h) or h["note"])]
    assert not missing, missing
