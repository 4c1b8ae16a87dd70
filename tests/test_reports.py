"""Report helpers and offline HTML rendering, checked in headless Chromium (no kernel needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from probekit import charts, report
from probekit.render import external_scripts, render_html

ROOT = Path(__file__).resolve().parent.parent


def _check_module():
    spec = importlib.util.spec_from_file_location("check_reports", ROOT / "scripts" / "check_reports.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_reports", mod)
    spec.loader.exec_module(mod)
    return mod


def _tidy() -> pd.DataFrame:
    return pd.DataFrame({"model": "m", "dataset": "d", "site": ["ln2", "act", "ln2", "act"], "layer": [0, 0, 1, 1],
                             "pool": "cls", "metric": "accuracy", "value": [0.5, 0.6, 0.7, 0.65],
                             "ci_low": [0.45, 0.55, 0.65, 0.6], "ci_high": [0.55, 0.65, 0.75, 0.7]})


def test_save_table_orders_columns_and_rejects_untidy(tmp_path):
    df = _tidy().assign(extra=1)[["extra", *reversed(report.TABLE_COLUMNS)]]
    path = report.save_table(df, "probe", tmp_path)
    back = pd.read_csv(path)
    assert list(back.columns) == [*report.TABLE_COLUMNS, "extra"] and len(back) == 4
    with pytest.raises(report.TableError, match="ci_low"):
        report.save_table(df.drop(columns=["ci_low"]), "probe", tmp_path)
    with pytest.raises(report.TableError):
        report.save_table(df, "../escape", tmp_path)


def test_run_info_records_versions_seed_and_params():
    import numpy as np

    info = report.run_info({"model": "m", "dataset": "d"}, 7)
    values = dict(zip(info["name"], info["value"]))
    assert values["seed"] == "7" and values["model"] == "m"
    assert values["torch"] not in ("", "not installed") and values["device"].startswith(("cpu", "cuda", "mps"))
    a = np.random.rand()
    report.run_info({}, 7)
    assert np.random.rand() == a  # seeded
    with report.Timer("step", quiet=True) as t:
        pass
    assert t.seconds >= 0 and list(report.timings()["step"]) == ["step"]


def _chart_notebook(monkeypatch) -> nbformat.NotebookNode:
    """A notebook whose outputs are what the report-mode renderer emits for two real charts."""
    monkeypatch.setenv(charts.REPORT_ENV, "html")
    nb = nbformat.v4.new_notebook()
    for chart in (charts.depth_curve(_tidy()), charts.site_layer_heatmap(_tidy())):
        cell = nbformat.v4.new_code_cell("chart")
        cell.outputs = [nbformat.v4.new_output("display_data", data=charts.probekit_renderer(chart.to_dict()))]
        nb.cells.append(cell)
    return nb


def test_rendered_report_is_offline_and_charts_draw(tmp_path, monkeypatch):
    page = render_html(_chart_notebook(monkeypatch), tmp_path / "r.html", title="r")
    html = page.read_text()
    assert external_scripts(html) == []
    assert html.count("window.vegaEmbed=") == 1
    assert page.stat().st_size < 1_300_000
    check = _check_module()
    chromium = check.find_chromium()
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium); CI installs it")
    problems, found = check.check_page(chromium, page)
    assert problems == [] and len(found.charts) == 2 and all(c.drawn for c in found.charts)
    # the same page without the inlined bundle: the check must notice the charts are not drawn
    start = html.index("(function () {\nconst")
    stripped = tmp_path / "stripped.html"
    stripped.write_text(html[:start] + html[html.index("})();\n</script>", start) + 6:])
    problems, found = check.check_page(chromium, stripped)
    assert len(problems) == 2 and "not drawn" in problems[0] and "lacks the inlined vega bundle" in problems[0]


def test_page_without_charts_skips_the_bundle(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# no charts")])
    html = render_html(nb, tmp_path / "plain.html").read_text()
    assert "vegaEmbed" not in html and len(html) < 400_000 and external_scripts(html) == []
