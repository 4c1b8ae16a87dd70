"""Honest headlines: every headline on the index carries its n and interval, says when the interval
spans 0, and says why a value could not be computed. Notebook 05's CLS-last check reads the two
notebooks' tables."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from probekit.cli import main
from probekit.headlines import NOT_RESOLVED
from probekit.studies import summary

HEADLINES = textwrap.dedent("""\
    # %% tags=["parameters"]
    seed: int = 0  # seed
    results_dir: str = ""  # folder for tables

    # %%
    import pandas as pd
    from probekit import report
    from probekit.studies import probing
    report.run_info(dict(model="none", datasets=["a", "b"]), seed)
    report.headline("gap", 0.031, label="Median gap", fmt="+.3f", ci=(-0.012, 0.05), n="7 datasets")
    report.headline("gain", 0.2, label="Resolved gain", fmt="+.2f", ci=(0.1, 0.3), n="7 datasets")
    joined = pd.DataFrame({"dataset": ["a", "b"], "shift": [0.1, 0.2], "relative_depth": [1.0, 0.5]})
    probing.record_rho("rho", "Spearman rho(shift, depth)", joined, probing.against_shift(
        joined[["dataset", "relative_depth"]], joined[["dataset", "shift"]], "relative_depth")[1])
    """)


def test_index_shows_n_interval_and_notes(tmp_path: Path) -> None:
    (tmp_path / "heads.py").write_text(HEADLINES)
    config = tmp_path / "suite.yaml"
    config.write_text(
        yaml.safe_dump(
            {"defaults": {"seed": 0}, "runs": [{"name": "heads", "notebook": str(tmp_path / "heads.py")}]}
        )
    )
    out = tmp_path / "reports"
    assert main(["suite", str(config), "--out", str(out)]) == 0
    heads = {h["name"]: h for h in json.loads((out / "runs.json").read_text())["runs"][0]["headlines"]}
    assert heads["gap"]["display"] == "+0.031 [-0.012, +0.050], n = 7 datasets"
    assert (
        heads["gap"]["note"] == NOT_RESOLVED
        and heads["gap"]["ci_low"] == -0.012
        and heads["gap"]["n"] == "7 datasets"
    )
    assert heads["gain"]["note"] == ""
    assert heads["rho"]["display"] == "n/a, n = 2 datasets"
    assert heads["rho"]["note"].startswith("not computed: a rank correlation needs at least 3 datasets")
    index = (out / "index.html").read_text()
    assert "+0.031 [-0.012, +0.050], n = 7 datasets" in index and NOT_RESOLVED in index
    assert "nan" not in index.lower().replace("n/a", "")
    assert "not computed: a rank correlation needs at least 3 datasets" in index


def test_cls_last_check_flags_gaps_over_two_points(tmp_path: Path) -> None:
    fusion = pd.DataFrame(
        {
            "model": "m",
            "dataset": ["digits", "faces", "emoji"],
            "method": "cls_last_linear",
            "metric": "balanced_accuracy",
            "value": [0.895, 0.70, 0.60],
        }
    )
    other = fusion.assign(method="alf_attentive", value=0.99)
    pd.concat([fusion, other]).to_csv(tmp_path / "fusion.csv", index=False)
    rows = []
    for dataset, value in (("digits", 0.885), ("faces", 0.75), ("textures", 0.5)):
        for key, v in (("norm/cls", value), ("norm/mean", 0.1)):
            for metric in ("accuracy", "balanced_accuracy"):
                rows.append(
                    {
                        "model": "m",
                        "dataset": dataset,
                        "key": key,
                        "split": "test",
                        "metric": metric,
                        "value": v if metric == "balanced_accuracy" else np.nan,
                    }
                )
    pd.DataFrame(rows).to_csv(tmp_path / "probes.csv", index=False)
    table = summary.cls_last_consistency(tmp_path, model="m")
    assert list(table["dataset"]) == ["digits", "faces"]  # datasets both notebooks ran
    assert np.allclose(table["gap"], [0.01, -0.05])
    assert list(table["agrees"]) == [True, False]
    text = summary.consistency_text(table)
    assert "1 differ by more than 0.02" in text and "faces: 04 0.700 vs 02 0.750" in text
    assert "not run" in summary.consistency_text(summary.cls_last_consistency(tmp_path / "missing"))


def test_act_minus_ln2_by_shift_group_is_paired_with_an_interval() -> None:
    """Paper 1's module finding as notebook 03 states it: per shift group (split at the median shift),
    the mean over datasets of act's best-layer accuracy minus ln2's, with a bootstrap interval and n;
    checked by hand."""
    from probekit.headlines import mean_ci
    from probekit.studies import probing

    datasets = [f"d{i}" for i in range(6)]
    shifts = pd.DataFrame({"dataset": datasets, "shift": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    act = [0.90, 0.80, 0.70, 0.60, 0.55, 0.50]
    ln2 = [0.85, 0.78, 0.69, 0.62, 0.58, 0.49]
    sites = pd.DataFrame(
        {
            "dataset": datasets * 3,
            "site": ["act"] * 6 + ["ln2"] * 6 + ["fc2"] * 6,
            "value": act + ln2 + [0.5] * 6,
        }
    )
    gaps = probing.site_gap_by_shift(sites, shifts, "act", "ln2", seed=0).set_index("shift group")
    weak = np.subtract(act[:3], ln2[:3])  # shifts 0.1-0.3 are at or below the median 0.35
    strong = np.subtract(act[3:], ln2[3:])
    assert gaps.loc["weak shift", "datasets"] == 3 and gaps.loc["strong shift", "datasets"] == 3
    np.testing.assert_allclose(gaps.loc["weak shift", ["value", "ci_low", "ci_high"]], mean_ci(weak, seed=0))
    np.testing.assert_allclose(
        gaps.loc["strong shift", ["value", "ci_low", "ci_high"]], mean_ci(strong, seed=0)
    )
    assert gaps.loc["weak shift", "value"] > 0 > gaps.loc["strong shift", "value"]
    # a site that was not probed gives no rows rather than a made-up gap
    assert probing.site_gap_by_shift(sites, shifts, "act", "attn").empty
