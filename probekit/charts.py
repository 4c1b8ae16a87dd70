"""Altair charts from tidy result tables, drawn offline in JupyterLab and in HTML reports.

Tables have the shared columns ``model, dataset, site, layer, pool, metric, value, ci_low,
ci_high`` (see :data:`probekit.report.TABLE_COLUMNS`). Every builder aggregates before charting,
so a chart never carries more than :data:`MAX_ROWS` rows.

Importing this module enables the ``probekit`` theme and the ``probekit`` renderer: in
JupyterLab 4 and Notebook 7 it emits the vega-lite mimetype, which their bundled vega extension
draws offline (it knows vega-lite v3-v5 only, hence ``altair<6``: altair 6 emits a v6 mimetype
they show as the text ``<VegaLite chart>``; see ``notebooks/README.md``). In a batch report run
(``PROBEKIT_REPORT=html``, set by ``probekit suite``) it emits a small HTML fragment that calls
the page-global ``vegaEmbed`` which :mod:`probekit.render` inlines once per report page.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from .errors import ProbekitError
from .metrics import spearman_ci

MAX_ROWS = 5000
REPORT_ENV = "PROBEKIT_REPORT"
CHART_CLASS = "probekit-chart"
PALETTE = [
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#b279a2",
    "#eeca3b",
    "#9d755d",
    "#ff9da6",
    "#bab0ac",
]
_VALUE_COLS = ["value", "ci_low", "ci_high"]


class ChartError(ProbekitError, ValueError):
    """A table that cannot be charted as asked (missing columns, too many rows)."""


# ----------------------------------------------------------------------------- theme + renderer


@alt.theme.register("probekit", enable=True)
def probekit_theme() -> alt.theme.ThemeConfig:
    """The project look: quiet axes, one palette, readable sizes."""
    font = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
    return {
        "config": {
            "view": {"continuousWidth": 380, "continuousHeight": 240, "stroke": None},
            "font": font,
            "title": {"fontSize": 14, "fontWeight": 600, "anchor": "start", "offset": 8},
            "axis": {
                "labelFontSize": 11,
                "titleFontSize": 12,
                "gridColor": "#e6e6e6",
                "domainColor": "#888",
                "tickColor": "#888",
            },
            "legend": {"labelFontSize": 11, "titleFontSize": 12},
            "range": {"category": PALETTE, "heatmap": {"scheme": "viridis"}},
            "line": {"strokeWidth": 2},
            "point": {"size": 40, "filled": True},
        }
    }


def report_mode() -> bool:
    """True inside a ``probekit suite`` run, where charts render for the HTML report."""
    return os.environ.get(REPORT_ENV, "") == "html"


def vegalite_major() -> int:
    """Major vega-lite version of the specs altair writes (5 for altair 5.x)."""
    return int(alt.SCHEMA_VERSION.lstrip("v").split(".")[0])


def vegalite_mime() -> str:
    """The mimetype JupyterLab/Notebook draw the spec under: ``application/vnd.vegalite.v5+json``."""
    return f"application/vnd.vegalite.v{vegalite_major()}+json"


def chart_html(spec: dict[str, Any]) -> str:
    """An HTML fragment drawing ``spec`` with the page-global ``vegaEmbed`` as SVG."""
    div = f"pk-{uuid.uuid4().hex[:12]}"
    spec_json = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<div class="{CHART_CLASS}" id="{div}"></div>\n'
        '<script type="text/javascript">\n(function () {\n'
        f'  var el = document.getElementById("{div}");\n'
        f"  var spec = {spec_json};\n"
        "  if (!window.vegaEmbed) {\n"
        '    el.textContent = "Chart not drawn: this page lacks the inlined vega bundle.";\n'
        "    return;\n  }\n"
        '  window.vegaEmbed(el, spec, {renderer: "svg", actions: {export: true, source: false, '
        "compiled: false, editor: false}})\n"
        '    .catch(function (e) { el.textContent = "Chart failed: " + e; });\n'
        "})();\n</script>"
    )


def probekit_renderer(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """Altair renderer: vega-lite mimetype interactively, the vegaEmbed fragment in reports."""
    if report_mode():
        return {"text/html": chart_html(spec), "text/plain": "<probekit chart>"}
    return {vegalite_mime(): spec, "text/plain": "<VegaLite chart>"}


alt.renderers.register("probekit", probekit_renderer)
alt.renderers.enable("probekit")


# ----------------------------------------------------------------------------- helpers


def _require(df: pd.DataFrame, cols: Sequence[str], chart: str) -> None:
    missing = [c for c in cols if c and c not in df.columns]
    if missing:
        raise ChartError(f"{chart} needs columns {missing}; the table has {list(df.columns)}")


def _select_metric(df: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """Rows of one metric: ``metric`` if given, else the only one present (error if several)."""
    if "metric" not in df.columns:
        return df
    metrics = list(pd.unique(df["metric"]))
    if metric is None:
        if len(metrics) > 1:
            raise ChartError(f"the table holds several metrics {metrics}; pass metric=")
        return df
    if metric not in metrics:
        raise ChartError(f"metric {metric!r} not in the table; it has {metrics}")
    return df[df["metric"] == metric]


def aggregate(df: pd.DataFrame, by: Sequence[str], values: Sequence[str] = _VALUE_COLS) -> pd.DataFrame:
    """Mean of ``values`` per group ``by`` (order of first appearance kept); at most MAX_ROWS rows.

    Where a group pools several rows, its interval columns become NaN: the mean of several
    intervals is not an interval for the mean, so no whisker is drawn for it.
    """
    by = [c for c in dict.fromkeys(by) if c]
    vals = [c for c in values if c in df.columns and c not in by]
    grouped = df.groupby(by, sort=False, dropna=False)
    out = grouped[vals].mean().reset_index()
    pooled = grouped.size().to_numpy() > 1
    for c in ("ci_low", "ci_high"):
        if c in out.columns:
            out.loc[pooled, c] = np.nan
    if len(out) > MAX_ROWS:
        raise ChartError(
            f"{len(out)} rows after aggregating by {by}: over the {MAX_ROWS}-row limit for an "
            "inlined chart; filter the table (e.g. one dataset or pool) first"
        )
    return out


FACET_COLUMNS = 4  # small multiples per row: a dozen datasets stay readable


def _facet(chart: alt.TopLevelMixin, data: pd.DataFrame, facet: str) -> alt.FacetChart:
    """Small multiples of ``chart`` by ``facet``, wrapped at :data:`FACET_COLUMNS` per row."""
    return chart.facet(
        facet=alt.Facet(f"{facet}:N", sort=_order(data, facet), title=facet), columns=FACET_COLUMNS
    )


def _order(df: pd.DataFrame, col: str) -> list[Any]:
    return [v for v in pd.unique(df[col]) if not pd.isna(v)]


def _metric_title(df: pd.DataFrame, metric: str | None) -> str:
    if metric:
        return metric
    if "metric" in df.columns and df["metric"].nunique() == 1:
        return str(df["metric"].iloc[0])
    return "value"


# ----------------------------------------------------------------------------- chart builders


def depth_curve(
    df: pd.DataFrame,
    *,
    color: str = "site",
    metric: str | None = None,
    x: str = "layer",
    facet: str | None = None,
    band: bool = True,
    title: str | None = None,
) -> alt.Chart:
    """Metric against depth, one line per ``color`` (site, dataset, ...) with its CI band."""
    _require(df, [x, color, "value", facet], "depth_curve")
    data = _select_metric(df, metric)
    ytitle = _metric_title(data, metric)
    data = aggregate(data, [facet, color, x])
    base = alt.Chart(data).encode(
        x=alt.X(f"{x}:Q", title=x, axis=alt.Axis(tickMinStep=1)),
        color=alt.Color(f"{color}:N", sort=_order(data, color), title=color),
    )
    tooltip = [alt.Tooltip(f"{c}:N" if c != x else f"{c}:Q") for c in [facet, color, x] if c]
    tooltip += [alt.Tooltip(f"{c}:Q", format=".3f") for c in _VALUE_COLS if c in data.columns]
    layers = []
    if band and {"ci_low", "ci_high"} <= set(data.columns) and data["ci_low"].notna().any():
        layers.append(base.mark_area(opacity=0.18).encode(y="ci_low:Q", y2="ci_high:Q"))
    layers.append(base.mark_line().encode(y=alt.Y("value:Q", title=ytitle, scale=alt.Scale(zero=False))))
    layers.append(base.mark_point().encode(y="value:Q", tooltip=tooltip))
    chart = alt.layer(*layers, data=data)
    if facet:
        chart = _facet(chart, data, facet)
    return chart.properties(title=title or f"{ytitle} by {x}")


LABEL_CELL_PX = 30  # narrowest heatmap cell that shows its value ("0.72" at 10 px) with room to spare
PANEL_PX = {False: 640, True: 240}  # widest heatmap panel alone / as one of FACET_COLUMNS small multiples


def heatmap_cell_width(n_columns: int, *, faceted: bool) -> int:
    """Pixels per heatmap column: up to 36, shrunk so the panel stays within :data:`PANEL_PX`."""
    return int(max(8, min(36, PANEL_PX[faceted] // max(1, n_columns))))


def site_layer_heatmap(
    df: pd.DataFrame,
    *,
    metric: str | None = None,
    x: str = "layer",
    y: str = "site",
    facet: str | None = None,
    title: str | None = None,
    annotate: bool = True,
) -> alt.Chart:
    """A ``y`` × ``x`` grid (site × layer) coloured by the metric, the best cell outlined."""
    _require(df, [x, y, "value", facet], "site_layer_heatmap")
    data = _select_metric(df, metric)
    ctitle = _metric_title(data, metric)
    data = aggregate(data, [facet, y, x])
    group = data.groupby(facet, sort=False)["value"] if facet else data["value"]
    data["best"] = data["value"] == (group.transform("max") if facet else group.max())
    cell = heatmap_cell_width(data[x].nunique(), faceted=bool(facet))
    base = alt.Chart(data).encode(
        x=alt.X(f"{x}:O", title=x),
        y=alt.Y(f"{y}:N", sort=_order(data, y), title=y),
    )
    tooltip = [alt.Tooltip(f"{c}:N") for c in [facet, y, x] if c]
    tooltip += [alt.Tooltip(f"{c}:Q", format=".3f") for c in _VALUE_COLS if c in data.columns]
    layers = [
        base.mark_rect().encode(
            color=alt.Color("value:Q", title=ctitle, scale=alt.Scale(scheme="viridis")), tooltip=tooltip
        ),
        base.transform_filter("datum.best").mark_rect(fill=None, stroke="#d62728", strokeWidth=2),
    ]
    if annotate and cell >= LABEL_CELL_PX:  # numbers only where "0.72" fits; tooltips always carry them
        mid = float((data["value"].min() + data["value"].max()) / 2)
        layers.append(
            base.mark_text(fontSize=10).encode(
                text=alt.Text("value:Q", format=".2f"),
                color=alt.condition(f"datum.value > {mid!r}", alt.value("black"), alt.value("white")),
                tooltip=tooltip,
            )
        )
    chart = alt.layer(*layers, data=data).properties(width=alt.Step(cell))
    if facet:
        chart = _facet(chart, data, facet)
    return chart.properties(title=title or f"{ctitle}: {y} × {x}")


def ranked_bars_with_ci(
    df: pd.DataFrame,
    *,
    category: str = "site",
    metric: str | None = None,
    color: str | None = None,
    top: int | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Horizontal bars of the metric per ``category``, best first, with CI whiskers."""
    _require(df, [category, "value", color], "ranked_bars_with_ci")
    data = _select_metric(df, metric)
    xtitle = _metric_title(data, metric)
    data = aggregate(data, [category, color]).sort_values("value", ascending=False)
    if top:
        data = data.head(top)
    sort = list(dict.fromkeys(data[category]))
    ycat = alt.Y(f"{category}:N", sort=sort, title=category)
    tooltip = [alt.Tooltip(f"{c}:N") for c in [category, color] if c]
    tooltip += [alt.Tooltip(f"{c}:Q", format=".3f") for c in _VALUE_COLS if c in data.columns]
    # With ``color`` every (category, color) pair gets its own bar and whisker side by side
    # (yOffset): values such as gains over a baseline are compared, never stacked into a sum.
    group: dict[str, Any] = {}
    if color:
        order = _order(data, color)
        group = {
            "color": alt.Color(f"{color}:N", sort=order, title=color),
            "yOffset": alt.YOffset(f"{color}:N", sort=order),
        }
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(y=ycat, x=alt.X("value:Q", title=xtitle, stack=None), tooltip=tooltip, **group)
    )
    layers = [bars]
    if {"ci_low", "ci_high"} <= set(data.columns) and data["ci_low"].notna().any():
        layers.append(
            alt.Chart(data)
            .mark_rule(color="#333")
            .encode(y=ycat, x="ci_low:Q", x2="ci_high:Q", **({"yOffset": group["yOffset"]} if color else {}))
        )
    chart = alt.layer(*layers)
    if color:
        chart = chart.properties(height=alt.Step(12))  # the step of the offset scale: 12 px per bar
    return chart.properties(title=title or f"{xtitle} by {category}")


def scatter_with_fit(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    label: str | None = "dataset",
    color: str | None = None,
    title: str | None = None,
    seed: int = 0,
) -> alt.Chart:
    """``y`` against ``x``, one point per row, a least-squares line and Spearman rho with its CI.

    ``df`` is wide here (one row per dataset, say): ``x`` and ``y`` are column names. ``label``
    names the points by colour and shape with a legend (up to ten names; always in the tooltip).
    """
    _require(df, [x, y, label, color], "scatter_with_fit")
    keep = [c for c in dict.fromkeys([x, y, label, color]) if c]
    data = df[keep].dropna(subset=[x, y]).reset_index(drop=True)
    if len(data) > MAX_ROWS:
        raise ChartError(f"{len(data)} points: over the {MAX_ROWS}-row limit; aggregate first")
    rho, lo, hi = spearman_ci(data[x], data[y], seed=seed)
    note = (
        f"Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}], n = {len(data)}"
        if np.isfinite(lo)
        else f"Spearman ρ = {rho:.2f}, n = {len(data)}"
        if np.isfinite(rho)
        else f"Spearman ρ undefined (n = {len(data)})"
    )
    base = alt.Chart(data)
    tooltip = [alt.Tooltip(f"{c}:N") for c in [label, color] if c]
    tooltip += [alt.Tooltip(f"{x}:Q", format=".3f"), alt.Tooltip(f"{y}:Q", format=".3f")]
    enc: dict[str, Any] = {
        "x": alt.X(f"{x}:Q", scale=alt.Scale(zero=False)),
        "y": alt.Y(f"{y}:Q", scale=alt.Scale(zero=False)),
        "tooltip": tooltip,
    }
    # Points are named by colour and legend, not by text beside them: datasets with similar values
    # sit close together and their labels would overprint. Beyond the palette, names are in tooltips.
    key = color or (label if label and data[label].nunique() <= len(PALETTE) else None)
    if key:
        enc["color"] = alt.Color(f"{key}:N", title=key)
        if label and key == label:
            enc["shape"] = alt.Shape(f"{key}:N", title=key)  # same field and title: one merged legend
    layers = [base.mark_point(size=70, filled=True, opacity=0.9).encode(**enc)]
    if len(data) >= 2:
        layers.append(
            base.transform_regression(x, y)
            .mark_line(color="#888", strokeDash=[4, 3])
            .encode(x=f"{x}:Q", y=f"{y}:Q")
        )
    return alt.layer(*layers).properties(title=alt.TitleParams(title or f"{y} against {x}", subtitle=[note]))


def layer_attention_heatmap(
    df: pd.DataFrame,
    *,
    x: str = "layer",
    y: str = "dataset",
    value: str = "value",
    facet: str | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Attention weight of the attentive probe over layers (``x``) for each ``y`` (dataset, head)."""
    _require(df, [x, y, value, facet], "layer_attention_heatmap")
    data = aggregate(df, [facet, y, x], values=[value])
    tooltip = [alt.Tooltip(f"{c}:N") for c in [facet, y, x] if c] + [alt.Tooltip(f"{value}:Q", format=".3f")]
    chart = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x),
            y=alt.Y(f"{y}:N", sort=_order(data, y), title=y),
            color=alt.Color(f"{value}:Q", title="attention", scale=alt.Scale(scheme="blues")),
            tooltip=tooltip,
        )
    )
    if facet:
        chart = _facet(chart, data, facet)
    return chart.properties(title=title or "Attention over layers")


# ----------------------------------------------------------------------------- widget


def explore_widget(
    df: pd.DataFrame, *, metric: str | None = None, static: alt.TopLevelMixin | None = None
) -> None:
    """Show a static overview chart, and in JupyterLab a dataset/site/pool/layer explorer.

    The static chart (``static``, else a site × layer heatmap of the first pool) is always
    displayed, so the HTML report never depends on the widget. The widget (dropdowns for dataset,
    site, pool and a layer slider) is made and displayed only outside report runs: a report run never
    shows it, and its comm messages only load the batch run (an intermittent papermill hang at this
    cell was seen when the widgets were created in report runs on a busy machine).
    """
    from IPython.display import Markdown, display

    _require(df, ["dataset", "site", "pool", "layer", "value"], "explore_widget")
    data = _select_metric(df, metric)
    if static is None:
        first_pool = data[data["pool"] == _order(data, "pool")[0]]
        facet = "dataset" if first_pool["dataset"].nunique() > 1 else None
        static = site_layer_heatmap(first_pool, facet=facet, metric=metric)
    display(static)
    if report_mode():
        display(Markdown("*Open this notebook in JupyterLab for the interactive explorer.*"))
        return
    import ipywidgets as widgets

    def options(col: str) -> list[Any]:
        return _order(data, col)

    dataset = widgets.Dropdown(options=options("dataset"), description="dataset")
    site = widgets.Dropdown(options=options("site"), description="site")
    pool = widgets.Dropdown(options=options("pool"), description="pool")
    layers = sorted(int(v) for v in options("layer"))
    layer = widgets.IntSlider(
        min=layers[0], max=layers[-1], value=layers[-1], description="layer", continuous_update=False
    )
    out = widgets.Output()

    def redraw(_: Any = None) -> None:
        sel = data[(data["dataset"] == dataset.value) & (data["pool"] == pool.value)]
        curve = depth_curve(sel, title=f"{dataset.value} / {pool.value}")
        rule = (
            alt.Chart(pd.DataFrame({"layer": [layer.value]})).mark_rule(color="#d62728").encode(x="layer:Q")
        )
        at = sel[sel["layer"] == layer.value]
        bars = ranked_bars_with_ci(at, title=f"sites at layer {layer.value}") if len(at) else None
        picked = at[at["site"] == site.value]
        with out:
            out.clear_output(wait=True)
            display(alt.layer(curve, rule) if bars is None else alt.hconcat(alt.layer(curve, rule), bars))
            if len(picked):
                row = picked.iloc[0]
                display(Markdown(f"**{site.value}**, layer {layer.value}: {row['value']:.4f}"))

    for w in (dataset, site, pool, layer):
        w.observe(redraw, names="value")
    ui = widgets.VBox([widgets.HBox([dataset, site, pool]), layer, out])
    redraw()
    display(ui)
