"""End to end: `probekit suite` runs notebooks with papermill, renders offline HTML, writes the index."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from probekit.cli import main
from probekit.report import TABLE_COLUMNS
from probekit.suite import SuiteConfigError, load_config, order_runs, resolve_parameters

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "notebooks" / "00_model_check.py"
TINY = {"model": "vit_tiny_patch16_224", "pretrained": False, "image_size": 32, "depth": 2, "n_images": 20}

BROKEN = textwrap.dedent("""\
    # %% tags=["parameters"]
    seed: int = 0  # seed
    results_dir: str = ""  # folder for tables

    # %%
    import pandas as pd
    import probekit.report as report
    from probekit import charts
    report.run_info(dict(model="none", dataset="toy"), seed)
    report.headline("before_failure", 1.5)
    charts.ranked_bars_with_ci(pd.DataFrame(dict(site=["a", "b"], value=[0.2, 0.4])))

    # %%
    raise ValueError("deliberate failure for the test")
    """)


def _write_config(tmp: Path, runs: list[dict], **top) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"seed": 0}, "runs": runs, **top}))
    return path


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """One suite run shared by the tests: an ok run, a failing run, and a run after the failure."""
    tmp = tmp_path_factory.mktemp("suite")
    (tmp / "broken.py").write_text(BROKEN)
    config = _write_config(
        tmp,
        [
            {"name": "check", "notebook": str(EXAMPLE), "parameters": TINY},
            {"name": "broken", "notebook": str(tmp / "broken.py")},
            {"name": "after_broken", "notebook": str(EXAMPLE), "parameters": TINY, "after": ["broken"]},
        ],
    )
    out = tmp / "reports"
    rc = main(["suite", str(config), "--out", str(out)])
    runs = {r["name"]: r for r in json.loads((out / "runs.json").read_text())["runs"]}
    return rc, out, runs


def test_exit_code_and_statuses(suite_run):
    rc, _out, runs = suite_run
    assert rc == 1  # something failed
    assert [runs[n]["status"] for n in ("check", "broken", "after_broken")] == ["ok", "failed", "skipped"]
    assert "deliberate failure" in runs["broken"]["error"]
    assert "broken" in runs["after_broken"]["error"]


def test_table_csv_is_tidy(suite_run):
    _, out, runs = suite_run
    table = pd.read_csv(out / "results" / "model_check.csv")
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert set(table["metric"]) == {"cls_norm", "ncm_accuracy"}
    assert sorted(table["layer"].unique()) == [0, 1]  # depth=2 reached the notebook
    acc = table[table.metric == "ncm_accuracy"]
    assert ((acc.ci_low <= acc.value) & (acc.value <= acc.ci_high)).all()
    assert runs["check"]["tables"][0]["rows"] == len(table)


def test_html_report_offline_inputs_hidden(suite_run):
    _, out, runs = suite_run
    html = (out / runs["check"]["html"]).read_text()
    assert "window.vegaEmbed" in html and html.count("window.vegaEmbed=") == 1  # bundle once
    assert html.count('class="probekit-chart"') == 3
    for cdn in ("cdn.jsdelivr", "unpkg.com", "cdnjs.cloudflare"):
        assert not [line for line in html.splitlines() if "<script" in line and cdn in line], cdn
    assert "load_model(" not in html  # inputs hidden
    assert "Run info" in html and "vit_tiny_patch16_224" in html


def test_failed_notebook_still_rendered(suite_run):
    _, out, runs = suite_run
    html = (out / runs["broken"]["html"]).read_text()
    assert "deliberate failure for the test" in html
    assert "An Exception was encountered" in html  # papermill's banner
    assert runs["broken"]["headlines"][0]["name"] == "before_failure"
    assert runs["after_broken"]["html"] is None


def test_index_lists_runs_with_headlines(suite_run):
    _, out, runs = suite_run
    index = (out / "index.html").read_text()
    for name in runs:
        assert name in index
    assert 'href="check.html"' in index and 'href="broken.html"' in index
    assert "Best layer (nearest class mean)" in index
    assert "vit_tiny_patch16_224" in index and "digits" in index
    assert runs["check"]["model"] == "vit_tiny_patch16_224" and runs["check"]["datasets"] == ["digits"]
    assert runs["check"]["env"]["torch"] not in ("", "not installed")


def _check_reports_module():
    spec = importlib.util.spec_from_file_location("check_reports", ROOT / "scripts" / "check_reports.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_reports", mod)
    spec.loader.exec_module(mod)
    return mod


def test_charts_drawn_in_headless_chromium(suite_run):
    check = _check_reports_module()
    chromium = check.find_chromium()
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium); CI installs it")
    _, out, _ = suite_run
    lines: list[str] = []
    problems = check.check_reports(out, chromium, log=lines.append)
    assert problems == []
    assert "check.html: 3/3 charts drawn" in lines and "broken.html: 1/1 charts drawn" in lines


def test_unknown_parameter_lists_valid_ones(tmp_path):
    config = _write_config(tmp_path, [{"name": "x", "notebook": str(EXAMPLE), "parameters": {"n_image": 3}}])
    cfg = load_config(config)
    with pytest.raises(SuiteConfigError) as err:
        resolve_parameters(cfg, cfg.runs, tmp_path / "out")
    msg = str(err.value)
    assert "n_image" in msg and "n_images (int, default 200)" in msg and "results_dir" in msg
    # the CLI reports it before running anything, with exit code 2
    assert main(["suite", str(config), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "index.html").exists()


def test_unused_default_and_dependency_errors(tmp_path):
    cfg = load_config(
        _write_config(tmp_path, [{"name": "x", "notebook": str(EXAMPLE)}], defaults={"seed": 0, "sed": 1})
    )
    with pytest.raises(SuiteConfigError, match="sed"):
        resolve_parameters(cfg, cfg.runs, tmp_path / "out")
    cfg = load_config(
        _write_config(
            tmp_path,
            [
                {"name": "a", "notebook": str(EXAMPLE), "after": ["b"]},
                {"name": "b", "notebook": str(EXAMPLE), "after": ["a"]},
            ],
        )
    )
    with pytest.raises(SuiteConfigError, match="cycle"):
        order_runs(cfg.runs)
    cfg = load_config(
        _write_config(
            tmp_path,
            [
                {"name": "late", "notebook": str(EXAMPLE), "after": ["early"]},
                {"name": "early", "notebook": str(EXAMPLE)},
            ],
        )
    )
    assert [r.name for r in order_runs(cfg.runs)] == ["early", "late"]


def test_shipped_configs_validate(tmp_path):
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        assert main(["suite", str(config), "--check", "--out", str(tmp_path)]) == 0, config.name


def test_atomic_write_on_a_full_disk_keeps_the_previous_file(tmp_path):
    import os
    import subprocess

    from probekit.atomic import DiskFullError, write_text_atomic

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("tmpfs mount refused")
    try:
        write_text_atomic(mnt / "index.html", "old, complete")
        with pytest.raises(DiskFullError, match=r"writing index.html needed 97.7 KiB, \d+.\d KiB are free"):
            write_text_atomic(mnt / "index.html", "x" * 100_000)
        assert (mnt / "index.html").read_text() == "old, complete" and sorted(os.listdir(mnt)) == [
            "index.html"
        ]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_invalid_yaml_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n  - name: a\n    notebook: [x\n")
    with pytest.raises(
        SuiteConfigError, match=r"bad.yaml: invalid YAML at line 4, column 1: while parsing a flow"
    ):
        load_config(bad)
