"""Sweeps: one config over several models (``defaults.models``), run inline and as submitit jobs.

``configs/tiny-sweep.yaml`` (the embedded DINOv2 ViT-S/14 and its random-initialised control, 28 px, three
datasets; notebooks 01, 02 per model, then the cross-model notebook 07) runs twice from scratch, every
analysis computed (``PROBEKIT_NO_RESULT_CACHE=1``; the features are shared): inline, and with
``--executor local --jobs 2`` (submitit's LocalExecutor, two processes). Both must give the same tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from probekit.suite import SuiteConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "configs" / "tiny-sweep.yaml"
MODELS = {"dinov2_vits14": "dinov2_vits14", "random:dinov2_vits14": "random-dinov2_vits14"}
TIMING_COLUMNS = ("seconds", "seconds_per_dataset")  # wall times differ from run to run


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, run_suite) -> dict[str, Path]:
    outs = {}
    for name, extra in (("inline", ()), ("local", ("--executor", "local", "--jobs", "2"))):
        out = tmp_path_factory.mktemp(name)
        proc = run_suite(SWEEP, out, *extra, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[name] = out
    return outs


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {
        str(p.relative_to(out)): pd.read_csv(p).drop(columns=list(TIMING_COLUMNS), errors="ignore")
        for p in sorted(out.glob("**/results/*.csv"))
    }


@pytest.mark.slow
def test_inline_and_local_jobs_give_the_same_tables(sweeps):
    """Every table of every model, and the cross-model ones, equal between the two executors: every
    label, choice and count exactly, every number to 1e-5 relative or 1e-6 absolute (a local job runs
    with its share of the cores as threads, so float sums may be added in another order; seen: 2e-6)."""
    inline, local = _tables(sweeps["inline"]), _tables(sweeps["local"])
    assert sorted(inline) == sorted(local)
    for folder in MODELS.values():
        assert f"{folder}/results/layerwise_best.csv" in inline and f"{folder}/results/shift.csv" in inline
    assert {"results/models_fusion.csv", "results/models_findings.csv"} <= set(inline)
    for name, table in inline.items():
        pd.testing.assert_frame_equal(table, local[name], check_exact=False, rtol=1e-5, atol=1e-6, obj=name)


@pytest.mark.slow
def test_each_model_gets_its_folder_and_the_index_groups_them(sweeps):
    out = sweeps["local"]
    runs = {r["name"]: r for r in json.loads((out / "runs.json").read_text())["runs"]}
    expected = [f"{f}/{n}" for f in MODELS.values() for n in ("shift", "layerwise")] + ["models"]
    assert sorted(runs) == sorted(expected) and all(r["status"] == "ok" for r in runs.values())
    for model, folder in MODELS.items():
        best = pd.read_csv(out / folder / "results" / "layerwise_best.csv")
        assert set(best["model"]) == {model}  # the tidy tables name the model
        assert runs[f"{folder}/layerwise"]["model"] == model
        assert (out / folder / "layerwise.html").is_file() and (
            out / folder / "executed" / "layerwise.ipynb"
        ).is_file()
        logs = runs[f"{folder}/shift"]["logs"]  # submitit's job logs beside the report
        assert (
            logs
            and all((out / log).is_file() for log in logs)
            and logs[0].startswith(f"{folder}/logs/shift/")
        )
        assert "probekit job:" in (out / logs[0]).read_text()
    index = (out / "index.html").read_text()
    assert "<h2>Across models</h2>" in index and "<h2>Model random:dinov2_vits14</h2>" in index
    assert 'href="random-dinov2_vits14/layerwise.html"' in index and "_log.out" in index
    heads = {h["name"]: h for h in runs["models"]["headlines"]}
    rho = heads["rho_shift_depth.random-dinov2_vits14"]
    assert rho["n"] == "3 datasets"


@pytest.mark.slow
def test_cross_model_report_draws_in_headless_chromium(sweeps, check_reports):
    """The sweep's index, each model's reports and notebook 07's page, checked as `make check-reports`
    checks the demo: links resolve (also into the model folders), charts draw, nothing overprints."""
    html = (sweeps["inline"] / "models.html").read_text()
    assert "Only one model" not in html and "2 models: dinov2_vits14, random:dinov2_vits14" in html
    check = check_reports(sweeps["inline"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "models.html: " in check.stdout


@pytest.mark.slow
def test_a_rerun_keeps_the_finished_runs(sweeps, run_suite):
    proc = run_suite(SWEEP, sweeps["local"], "--executor", "local", "--jobs", "2", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("finished earlier with the same notebook, parameters and code: kept") == 5
    assert "submitted" not in proc.stdout


def _config(tmp_path: Path, defaults: dict, **top) -> Path:
    path = tmp_path / "sweep.yaml"
    runs = [{"name": "check", "notebook": str(ROOT / "notebooks" / "00_model_check.py")}]
    path.write_text(yaml.safe_dump({"defaults": defaults, "runs": runs, **top}))
    return path


def test_bad_sweeps_and_executors_are_named(tmp_path):
    with pytest.raises(SuiteConfigError, match="both 'model'.*and 'models'"):
        load_config(_config(tmp_path, {"model": "a", "models": ["b"]}))
    with pytest.raises(SuiteConfigError, match="non-empty list of model names"):
        load_config(_config(tmp_path, {"models": []}))
    with pytest.raises(SuiteConfigError, match="appears twice"):
        load_config(_config(tmp_path, {"models": ["a", "a"]}))
    with pytest.raises(SuiteConfigError, match="share the folder"):
        load_config(_config(tmp_path, {"models": ["random:x", "random-x"]}))
    with pytest.raises(SuiteConfigError, match="unknown executor 'pbs'; choose one of inline, local, slurm"):
        load_config(_config(tmp_path, {"models": ["a"]}, executor={"kind": "pbs"}))
    with pytest.raises(SuiteConfigError, match="unknown keys \\['partiton'\\]"):
        load_config(_config(tmp_path, {"models": ["a"]}, executor={"kind": "slurm", "partiton": "gpu"}))
    from probekit.cli import main

    config = _config(tmp_path, {"models": ["vit_tiny_patch16_224"]})
    assert main(["suite", str(config), "--check", "--jobs", "2"]) == 2  # --jobs needs a parallel executor
    assert main(["suite", str(config), "--check", "--executor", "local", "--jobs", "2"]) == 0


def test_a_run_that_sets_its_model_in_a_sweep_is_refused(tmp_path):
    from probekit.suite import plan_runs

    path = tmp_path / "sweep.yaml"
    notebook = str(ROOT / "notebooks" / "00_model_check.py")
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"models": ["vit_tiny_patch16_224", "random:vit_tiny_patch16_224"]},
                "runs": [{"name": "check", "notebook": notebook, "parameters": {"model": "x"}}],
            }
        )
    )
    with pytest.raises(SuiteConfigError, match="each run goes once per model"):
        plan_runs(load_config(path), tmp_path / "out")
