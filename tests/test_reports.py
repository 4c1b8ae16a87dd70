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
    return pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "site": ["ln2", "act", "ln2", "act"],
            "layer": [0, 0, 1, 1],
            "pool": "cls",
            "metric": "accuracy",
            "value": [0.5, 0.6, 0.7, 0.65],
            "ci_low": [0.45, 0.55, 0.65, 0.6],
            "ci_high": [0.55, 0.65, 0.75, 0.7],
        }
    )


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
    assert values["torch"] not in ("", "not installed") and values["device"].startswith(
        ("cpu", "cuda", "mps")
    )
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
        cell.outputs = [
            nbformat.v4.new_output("display_data", data=charts.probekit_renderer(chart.to_dict()))
        ]
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
        pytest.fail(
            "Chromium is not installed: run `bash scripts/system_deps.sh` as root (Debian package chromium)"
        )
    problems, found = check.check_page(chromium, page)
    assert problems == [] and len(found.charts) == 2 and all(c.drawn for c in found.charts)
    # the same page without the inlined bundle: the check must notice the charts are not drawn
    start = html.index("(function () {\nconst")
    stripped = tmp_path / "stripped.html"
    stripped.write_text(html[:start] + html[html.index("})();\n</script>", start) + 6 :])
    problems, found = check.check_page(chromium, stripped)
    assert (
        len(problems) == 2 and "not drawn" in problems[0] and "lacks the inlined vega bundle" in problems[0]
    )


def test_page_without_charts_skips_the_bundle(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# no charts")])
    html = render_html(nb, tmp_path / "plain.html").read_text()
    assert "vegaEmbed" not in html and len(html) < 400_000 and external_scripts(html) == []


def test_save_table_names_the_file_relative_to_the_report_in_a_suite_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBEKIT_REPORT", "html")
    monkeypatch.setenv("PROBEKIT_RESULTS_DIR", str(tmp_path / "results"))
    path = report.save_table(_tidy(), "probe", tmp_path / "results")
    said = capsys.readouterr().out
    assert "[`results/probe.csv`](results/probe.csv)" in said and str(tmp_path) not in said
    assert (
        path == tmp_path / "results" / "probe.csv" and path._ipython_display_() is None
    )  # no PosixPath(...)
    monkeypatch.delenv("PROBEKIT_REPORT")
    assert report.shown_path(path) == str(path)  # interactive: as given


def test_report_run_shows_each_warning_once_as_a_note_without_paths(monkeypatch, capsys):
    import warnings

    monkeypatch.setenv("PROBEKIT_REPORT", "html")
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    report.run_info({}, 0)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = report._show_warning
        for _ in range(3):
            warnings.warn("image /tmp/data/x/big.png is large", UserWarning, stacklevel=1)
    said = capsys.readouterr().out
    assert said.count("Warning (UserWarning): image big.png is large") == 1 and "/tmp" not in said


def test_tables_on_a_page_drop_the_range_index_and_scroll_in_their_box():
    html = report._frame_html(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).sort_values("a", ascending=False))
    assert (
        "<th>0</th>" not in html
        and "<th>1</th>" not in html
        and 'class="probekit-table-box"' in html
        and "overflow-x:auto" in html
    )
    keyed = report._frame_html(pd.DataFrame({"a": [1, 2]}, index=pd.Index(["d1", "d2"], name="dataset")))
    assert "d1" in keyed  # a meaningful index stays


def _defect_notebook(monkeypatch) -> nbformat.NotebookNode:
    """One cell per defect a published page must not have (see scripts/check_reports.py)."""
    import altair as alt

    monkeypatch.setenv(charts.REPORT_ENV, "html")
    gains = pd.DataFrame(
        {"dataset": ["a", "a", "b", "b"], "method": ["alf", "mean"] * 2, "value": [1, 2, 3, 4]}
    )
    stacked = alt.Chart(gains).mark_bar().encode(y="dataset:N", x="value:Q", color="method:N")
    crowded = (
        alt.Chart(pd.DataFrame({"x": range(30), "v": [0.72] * 30}))
        .mark_text(fontSize=12)
        .encode(x=alt.X("x:O", scale=alt.Scale(paddingInner=0)), text=alt.Text("v:Q", format=".2f"))
        .properties(width=alt.Step(12))
    )
    out = nbformat.v4.new_output
    outputs = [
        out("display_data", data=charts.probekit_renderer(stacked.to_dict())),
        out("display_data", data=charts.probekit_renderer(crowded.to_dict())),
        out("stream", name="stderr", text="/tmp/ipykernel_1/2.py:3: UserWarning: careful\n  x = f()\n"),
        out(
            "execute_result",
            data={"text/plain": "PosixPath('/home/me/reports/results/x.csv')"},
            execution_count=1,
        ),
        out(
            "display_data",
            data={"text/html": pd.DataFrame({"a": [1, 2, 3]}).sort_values("a", ascending=False).to_html()},
        ),
        out(
            "display_data",
            data={"text/html": pd.DataFrame({"a": [1, 2]}, index=pd.Index([0, 1], name="layer")).to_html()},
        ),  # a named index is data: not a defect
    ]
    nb = nbformat.v4.new_notebook()  # outputs and markdown scroll in their own box; this escapes it
    nb.cells.append(nbformat.v4.new_markdown_cell('<div style="position:absolute;width:2400px">wide</div>'))
    for o in outputs:
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [o]
        nb.cells.append(cell)
    return nb


def test_checker_fails_on_each_defect_a_reader_would_see(tmp_path, monkeypatch):
    check = _check_module()
    chromium = check.find_chromium()
    if chromium is None:
        pytest.fail(
            "Chromium is not installed: run `bash scripts/system_deps.sh` as root (Debian package chromium)"
        )
    page = render_html(_defect_notebook(monkeypatch), tmp_path / "bad.html", title="bad")
    problems, _ = check.check_page(chromium, page)
    said = "\n".join(problems)
    for expected in (
        "stacked bars",
        "absolute local path",
        "'/tmp/ipykernel_1/2.py:3:'",
        "PosixPath(",
        "stderr block",
        "1 table(s) show the pandas row-number index",
        "printed over each other",
        "page wider than",
    ):
        assert expected in said, (expected, said)
    # and the same outputs made fit to publish pass
    good = _chart_notebook(monkeypatch)
    problems, _ = check.check_page(chromium, render_html(good, tmp_path / "good.html", title="good"))
    assert problems == []


def test_notebook_parameters_are_the_typed_names_in_cell_order():
    namespace = {
        "__annotations__": {"model": str, "curve_pool": str, "seed": int},
        "model": "m",
        "curve_pool": "cls",
        "seed": 3,
        "report": report,
        "derived": [1, 2],
    }
    assert report.notebook_parameters(namespace) == {"model": "m", "curve_pool": "cls"}
    with pytest.raises(ValueError, match="parameters cell"):
        report.notebook_parameters({"model": "m"})
