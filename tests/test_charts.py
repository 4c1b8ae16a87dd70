"""Chart builders: aggregated data, valid vega-lite that renders with marks, Spearman, renderer modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vl_convert
from scipy.stats import spearmanr

from probekit import charts


def _table(n_layers: int = 6, repeats: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("digits", "mnist"):
        for site in ("ln1", "ln2", "act", "resid_post"):
            for layer in range(n_layers):
                for pool in ("cls", "ap"):
                    for _ in range(repeats):
                        v = float(rng.uniform(0.4, 0.9))
                        rows.append(
                            {
                                "model": "m",
                                "dataset": ds,
                                "site": site,
                                "layer": layer,
                                "pool": pool,
                                "metric": "accuracy",
                                "value": v,
                                "ci_low": v - 0.05,
                                "ci_high": v + 0.05,
                            }
                        )
    return pd.DataFrame(rows)


def _marks(chart) -> int:
    svg = vl_convert.vegalite_to_svg(chart.to_dict())
    return svg.count("role-mark")


def test_depth_curve_aggregates_and_renders():
    df = _table(repeats=3)  # 3 rows per (dataset, site, layer, pool): averaged before charting
    chart = charts.depth_curve(df[df.pool == "cls"], facet="dataset")
    spec = chart.to_dict()
    (rows,) = spec["datasets"].values()
    assert len(rows) == 2 * 4 * 6
    expected = df[
        (df.pool == "cls") & (df.dataset == "digits") & (df.site == "act") & (df.layer == 2)
    ].value.mean()
    got = next(r for r in rows if r["dataset"] == "digits" and r["site"] == "act" and r["layer"] == 2)[
        "value"
    ]
    assert got == pytest.approx(expected)
    assert _marks(chart) >= 3  # band, line, points in each facet


def test_each_builder_renders_with_marks():
    df = _table()
    wide = pd.DataFrame(
        {"dataset": list("abcdef"), "shift": [1, 2, 3, 4, 5, 6], "gain": [0.1, 0.3, 0.2, 0.5, 0.4, 0.7]}
    )
    built = [
        charts.site_layer_heatmap(df[df.pool == "cls"], facet="dataset"),
        charts.ranked_bars_with_ci(df[df.layer == 5], top=3),
        charts.scatter_with_fit(wide, "shift", "gain"),
        charts.layer_attention_heatmap(df[df.site == "act"], facet="pool"),
    ]
    for chart in built:
        assert _marks(chart) >= 1


def test_heatmap_outlines_the_best_cell():
    df = _table()
    data = next(
        iter(
            charts.site_layer_heatmap(df[(df.pool == "cls") & (df.dataset == "mnist")])
            .to_dict()["datasets"]
            .values()
        )
    )
    best = [r for r in data if r["best"]]
    assert len(best) == 1 and best[0]["value"] == max(r["value"] for r in data)


def test_metric_selection_errors_are_helpful():
    df = pd.concat([_table(), _table().assign(metric="balanced_accuracy")])
    with pytest.raises(charts.ChartError, match="several metrics"):
        charts.depth_curve(df)
    with pytest.raises(charts.ChartError, match="not in the table"):
        charts.depth_curve(df, metric="f1")
    with pytest.raises(charts.ChartError, match="needs columns"):
        charts.depth_curve(df.drop(columns="site"), metric="accuracy")


def test_too_many_rows_after_aggregation():
    big = pd.DataFrame({"site": "s", "layer": np.arange(6000), "value": 1.0})
    with pytest.raises(charts.ChartError, match="5000"):
        charts.depth_curve(big)


def test_spearman_matches_scipy_and_interval_brackets_it():
    x = np.arange(12.0)
    y = x + np.random.default_rng(1).normal(0, 3, size=12)
    rho, lo, hi = charts.spearman_ci(x, y)
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    assert lo <= rho <= hi
    assert np.isnan(charts.spearman_ci([1, 2], [3, 4])[0])
    spec = charts.scatter_with_fit(
        pd.DataFrame({"dataset": list("abcdefghijkl"), "s": x, "g": y}), "s", "g"
    ).to_dict()
    assert f"ρ = {rho:.2f}" in spec["title"]["subtitle"][0]


def test_renderer_mimetype_in_lab_and_html_in_reports(monkeypatch):
    spec = charts.depth_curve(_table()[lambda d: (d.pool == "cls") & (d.dataset == "digits")]).to_dict()
    monkeypatch.delenv(charts.REPORT_ENV, raising=False)
    lab = charts.probekit_renderer(spec)
    assert charts.vegalite_mime() in lab and "text/html" not in lab
    monkeypatch.setenv(charts.REPORT_ENV, "html")
    html = charts.probekit_renderer(spec)["text/html"]
    assert f'class="{charts.CHART_CLASS}"' in html and "window.vegaEmbed(" in html
    assert "cdn" not in html.lower()


def test_lab_mimetype_is_one_the_installed_jupyterlab_draws():
    """JupyterLab's bundled vega extension registers renderers for some vega-lite majors only
    (v3-v5 in JupyterLab 4): a mimetype outside them shows as the text ``<VegaLite chart>``."""
    import re
    import sys
    from pathlib import Path

    static = Path(sys.prefix) / "share" / "jupyter" / "lab" / "static"
    drawn = {
        m
        for f in static.glob("*.js")
        for m in re.findall(r"application/vnd\.vegalite\.v\d+\+json", f.read_text(errors="ignore"))
    }
    assert drawn, f"no vega-lite renderer found in {static}"
    assert charts.vegalite_mime() in drawn, (charts.vegalite_mime(), sorted(drawn))


def _layers(spec: dict) -> list[dict]:
    out = [spec]
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            out += _layers(sub)
    if "spec" in spec:
        out += _layers(spec["spec"])
    return out


def _mark(spec: dict) -> str | None:
    mark = spec.get("mark")
    return mark.get("type") if isinstance(mark, dict) else mark


def test_bars_with_color_are_grouped_with_own_whiskers_never_stacked():
    gains = pd.DataFrame(
        {
            "dataset": ["a", "a", "b", "b"],
            "method": ["alf", "mean"] * 2,
            "metric": "gain",
            "value": [0.6, 0.9, 0.2, 0.4],
            "ci_low": [0.5, 0.8, 0.1, 0.3],
            "ci_high": [0.7, 1.0, 0.3, 0.5],
        }
    )
    spec = charts.ranked_bars_with_ci(gains, category="dataset", color="method").to_dict()
    bars = [s for s in _layers(spec) if _mark(s) == "bar"]
    assert bars and all(b["encoding"]["x"].get("stack", "zero") is None for b in bars)
    assert all("yOffset" in s["encoding"] for s in _layers(spec) if "encoding" in s)  # bars and whiskers
    svg = vl_convert.vegalite_to_svg(spec)
    assert svg.count("<path") >= 4


def test_heatmap_numbers_only_where_they_fit():
    df = _table(n_layers=6)
    narrow = charts.site_layer_heatmap(
        _table(n_layers=24)[lambda d: d.pool == "cls"], facet="dataset"
    ).to_dict()
    wide = charts.site_layer_heatmap(df[(df.pool == "cls") & (df.dataset == "mnist")]).to_dict()
    has_text = [any(_mark(s) == "text" for s in _layers(x)) for x in (narrow, wide)]
    assert has_text == [False, True]
    assert charts.heatmap_cell_width(6, faceted=False) >= charts.LABEL_CELL_PX
    assert charts.heatmap_cell_width(13, faceted=True) < charts.LABEL_CELL_PX


def test_scatter_names_points_by_legend_not_overprinting_text():
    wide = pd.DataFrame({"dataset": ["a", "b", "c"], "shift": [1.0, 1.01, 3.0], "gain": [0.1, 0.1, 0.3]})
    spec = charts.scatter_with_fit(wide, "shift", "gain").to_dict()
    assert not any(_mark(s) == "text" for s in _layers(spec))
    assert any(s.get("encoding", {}).get("color", {}).get("field") == "dataset" for s in _layers(spec))


def test_spearman_interval_does_not_depend_on_the_order_of_the_points():
    x = np.arange(12.0)
    y = x + np.random.default_rng(1).normal(0, 3, size=12)
    perm = np.random.default_rng(2).permutation(12)
    assert charts.spearman_ci(x, y) == charts.spearman_ci(x[perm], y[perm])
