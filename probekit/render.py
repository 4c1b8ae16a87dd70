"""Render an executed notebook to a self-contained HTML report that draws its charts offline.

Uses nbconvert's JupyterLab look through the ``probekit`` template
(``probekit/templates/probekit``): inputs hidden, no CDN scripts (require.js, MathJax, mermaid,
widget manager), and the vega/vega-lite/vega-embed bundle from ``vl_convert`` inlined once in
``<head>`` when the page holds a chart. Charts are the ``probekit-chart`` fragments that
:mod:`probekit.charts` emits in report mode. Widget outputs fall back to their text.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path

import nbformat
from nbformat import NotebookNode

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHART_CLASS = "probekit-chart"  # same as probekit.charts.CHART_CLASS (kept import-free)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(https?:)?//[^\"' >]+", re.IGNORECASE)


def bundle_vegalite_version() -> str | None:
    """The vega-lite version (``"5.20"``) of altair's specs, when vl-convert can bundle it."""
    import altair
    import vl_convert

    major_minor = ".".join(altair.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    versions = getattr(vl_convert, "get_vegalite_versions", list)()
    return major_minor if major_minor in versions else None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The vega-embed + vega-lite + vega JavaScript bundle (~0.9 MB); sets ``window.vegaEmbed``.

    Its vega-lite is the version altair writes specs for (:func:`bundle_vegalite_version`).
    Building it takes seconds, so it is cached per vl-convert and vega-lite version under the
    data directory.
    """
    import vl_convert

    from .paths import data_dir

    vl_version = bundle_vegalite_version()
    version = re.sub(r"[^A-Za-z0-9.]", "_", str(getattr(vl_convert, "__version__", "unknown")))
    cache = data_dir() / "cache" / f"vega-bundle-vl-convert-{version}-vl{vl_version or 'default'}.js"
    if cache.is_file():
        return cache.read_text(encoding="utf-8")
    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(bundle, encoding="utf-8")
    tmp.replace(cache)
    return bundle


def _has_charts(nb: NotebookNode) -> bool:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if CHART_CLASS in str(out.get("data", {}).get("text/html", "")):
                return True
    return False


def _without_widgets(nb: NotebookNode) -> NotebookNode:
    """A copy whose widget outputs show their text fallback and with no widget state."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not data:
                    data["text/plain"] = ""
    return nb


def render_html(nb: NotebookNode | str | Path, html_path: str | Path, *, title: str | None = None) -> Path:
    """Write ``nb`` (a node or an ``.ipynb`` path) as an offline HTML report with inputs hidden."""
    from nbconvert import HTMLExporter

    if not isinstance(nb, NotebookNode):
        nb = nbformat.read(str(nb), as_version=4)
    nb = _without_widgets(nb)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(template_name="probekit", extra_template_basedirs=[str(TEMPLATES)])
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    resources: dict = {"metadata": {"name": title or "report"}}
    if _has_charts(nb):
        import vl_convert

        resources["vega_bundle"] = vega_bundle()
        resources["vl_convert_version"] = getattr(vl_convert, "__version__", "")
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def external_scripts(html: str) -> list[str]:
    """``<script src=...>`` tags in ``html`` that load from the network (should be none)."""
    return [m.group(0) for m in _EXTERNAL_SCRIPT.finditer(html)]
