"""Check rendered reports in headless Chromium, offline: what a reader sees is fit to publish.

    python scripts/check_reports.py [REPORTS_DIR] [--chromium PATH] [--budget-ms 15000]

Opens ``REPORTS_DIR/index.html`` and every report it links in Debian's ``chromium`` (a 1280 px
window) with all network resolution disabled, lets the page run (virtual time budget), dumps the
DOM and fails on:

- a ``probekit-chart`` element without a rendered SVG (or canvas) with marks, or one that failed;
- an absolute local path in the visible text or a link (``/tmp/...``, ``PosixPath(...)``,
  ``file://``): ``reports/`` is copied to a web server as-is;
- a stderr block (warnings belong in a one-time note, tracebacks in an error banner);
- a bar chart whose bars stack (a colour field on bars with no offset and no ``stack: null``):
  values such as gains over a baseline are compared side by side, never summed;
- a pandas table showing its 0..n-1 index column;
- text marks of a chart that overprint each other (heatmap numbers, point labels), measured in
  the laid-out page; and a page wider than the window (wide tables scroll in their own box);
- an index link to a report that does not exist.

Exits 1 on any problem, 2 when chromium is missing. CI needs the Debian packages ``chromium``
(and ``fonts-dejavu-core`` for text metrics): ``bash scripts/system_deps.sh``.
"""

from __future__ import annotations

import argparse
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHART_CLASS = "probekit-chart"
MARK_TAGS = {"path", "rect", "line", "circle", "ellipse", "polygon", "polyline", "text"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network name fails to resolve
    "--window-size=1280,1000",
]
LAYOUT_ID = "probekit-layout"
# Measures the laid-out page once the charts have drawn (or after 6 s of virtual time) and writes
# the findings into the DOM, where --dump-dom carries them out.
LAYOUT_PROBE = """<script>
(function () {
  function boxes(chart) {
    return Array.from(chart.querySelectorAll("g.role-mark text")).map(function (t) {
      var r = t.getBoundingClientRect();
      return {x0: r.left, x1: r.right, y0: r.top, y1: r.bottom, s: t.textContent};
    }).filter(function (b) { return b.x1 > b.x0 && b.s.trim(); });
  }
  function overlaps(bs) {  // text marks that overlap or run together (less than 3 px apart)
    var hits = [];
    for (var i = 0; i < bs.length && hits.length < 3; i++) for (var j = i + 1; j < bs.length; j++) {
      var a = bs[i], b = bs[j];
      var w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0), h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
      if (w > -3 && h > 1.5) { hits.push(a.s + " / " + b.s); break; }  // overlap, or under 3 px apart
    }
    return hits;
  }
  function widest() {
    var out = null, limit = window.innerWidth + 2;
    document.querySelectorAll("body *").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (r.right <= limit || out) return;
      // scrolling inside its own box is fine; the body (JupyterLab's .jp-Notebook) is the page
      for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        var o = getComputedStyle(p).overflowX;
        if ((o === "auto" || o === "scroll" || o === "hidden") && p.getBoundingClientRect().right <= limit) return;
      }
      out = el.tagName.toLowerCase() + "." + (el.className && el.className.baseVal === undefined
        ? String(el.className).split(" ").join(".") : "") + " (" + Math.round(r.right) + " px)";
    });
    return out;
  }
  function measure() {
    var doc = document.documentElement, body = document.body;
    var wide = doc.scrollWidth > window.innerWidth + 2 || body.scrollWidth > body.clientWidth + 2;
    var res = {width: Math.max(doc.scrollWidth, body.scrollWidth), window: window.innerWidth, wide: wide,
               widest: wide ? widest() : null, overprint: []};
    document.querySelectorAll(".probekit-chart").forEach(function (c) {
      var hits = overlaps(boxes(c));
      if (hits.length) res.overprint.push({chart: c.id, text: hits});
    });
    var pre = document.createElement("pre");
    pre.id = "LAYOUT_ID"; pre.hidden = true; pre.textContent = JSON.stringify(res);
    document.body.appendChild(pre);
  }
  var waited = 0;
  function wait() {
    var charts = document.querySelectorAll(".probekit-chart");
    var done = Array.from(charts).every(function (c) { return c.querySelector("svg, canvas") || c.textContent; });
    if ((done && waited >= 500) || waited >= 6000) { measure(); } else { waited += 250; setTimeout(wait, 250); }
  }
  window.addEventListener("load", function () { setTimeout(wait, 250); });
})();
</script>""".replace("LAYOUT_ID", LAYOUT_ID)
ABS_PATH = re.compile(
    r"(?<![\w:/.~-])/(?:[^\s/'\"<>()`]+/)+[^\s/'\"<>()`]+|PosixPath\(|WindowsPath\(|file://"
    r"|\b[A-Z]:\\(?=\w)"
)
STDERR_MIME = "application/vnd.jupyter.stderr"


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium binary: ``explicit``, ``$CHROMIUM``, or chromium/chromium-browser on PATH."""
    for cand in [explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]:
        if cand and (path := shutil.which(cand)):
            return path
    return None


def dump_dom(chromium: str, page: Path, budget_ms: int = 15000, timeout_s: int = 90) -> str:
    """The page's DOM after its scripts ran, from ``chromium --headless --dump-dom``, with the
    layout findings of :data:`LAYOUT_PROBE` appended (the probe runs in a copy of the page)."""
    source = page.read_text(encoding="utf-8", errors="replace")
    at = source.rfind("</body>")
    probed = source[:at] + LAYOUT_PROBE + source[at:] if at >= 0 else source + LAYOUT_PROBE
    with tempfile.TemporaryDirectory(prefix="probekit-chromium-") as profile:
        copy = Path(profile) / "page" / page.name
        copy.parent.mkdir()
        copy.write_text(probed, encoding="utf-8")
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            copy.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"chromium failed on {page} (rc {proc.returncode}): {proc.stderr[-800:]}")
    return proc.stdout


@dataclass
class Chart:
    """What was found inside one chart element of the dumped DOM."""

    ident: str
    svgs: int = 0
    canvases: int = 0
    mark_groups: int = 0
    mark_shapes: int = 0
    text: list[str] = field(default_factory=list)

    @property
    def drawn(self) -> bool:
        return (self.svgs > 0 and self.mark_groups > 0 and self.mark_shapes > 0) or self.canvases > 0


@dataclass
class Table:
    """A pandas table (``table.dataframe``) and the first cell of each body row."""

    first_cells: list[tuple[str, str]] = field(default_factory=list)  # (tag, text)
    head_rows: list[str] = field(default_factory=list)  # text of each header row's first cell

    @property
    def shows_range_index(self) -> bool:
        """Body rows start with header cells of distinct integers under an unnamed index (one header
        row, its first cell empty): pandas' row numbers, kept through sorts and filters."""
        cells = self.first_cells
        unnamed = len(self.head_rows) == 1 and not self.head_rows[0]
        ints = [text for tag, text in cells if tag == "th" and re.fullmatch(r"-?\d+", text)]
        return unnamed and bool(cells) and len(ints) == len(cells) and len(set(ints)) == len(ints)


class _ChartScanner(HTMLParser):
    """Collects :class:`Chart` records for every element with the chart class, and what a reader
    sees: links, visible text, stderr blocks, pandas tables and the layout probe's findings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: list[Chart] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.stderr: list[str] = []
        self.tables: list[Table] = []
        self.layout: dict | None = None
        self._stack: list[tuple[str, Chart | None, bool]] = []  # (tag, chart, opens a mark group)
        self._hidden = 0  # inside <script>/<style>
        self._stderr_depth: int | None = None
        self._error_depth: int | None = None
        self._layout = False
        self._table: Table | None = None
        self._in_tbody = False
        self._row_cell: list | None = None  # [tag, text] of the current row's first cell, while open
        self._row_started = False

    def _current(self) -> Chart | None:
        return next((c for _, c, _ in reversed(self._stack) if c is not None), None)

    def _in_mark_group(self) -> bool:
        return any(m for _, _, m in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in ("script", "style"):
            self._hidden += 1
        if "probekit-error" in classes and self._error_depth is None:
            self._error_depth = len(self._stack)  # a failed run's traceback: reported by the suite
        elif (
            a.get("data-mime-type") == STDERR_MIME
            and self._stderr_depth is None
            and self._error_depth is None
        ):
            self._stderr_depth = len(self._stack)
            self.stderr.append("")
        if a.get("id") == LAYOUT_ID:
            self._layout = True
        self._table_start(tag, classes)
        chart = None
        if CHART_CLASS in classes:
            chart = Chart(ident=a.get("id") or f"chart-{len(self.charts) + 1}")
            self.charts.append(chart)
        cur = chart or self._current()
        is_mark_group = False
        if cur is not None:
            if tag == "svg":
                cur.svgs += 1
            elif tag == "canvas":
                cur.canvases += 1
            elif tag == "g" and "role-mark" in classes:
                cur.mark_groups += 1
                is_mark_group = True
            elif tag in MARK_TAGS and self._in_mark_group() and (tag != "path" or a.get("d")):
                cur.mark_shapes += 1
        if tag not in _VOID:
            self._stack.append((tag, chart, is_mark_group))

    def _table_start(self, tag: str, classes: list[str]) -> None:
        if tag == "table" and "dataframe" in classes:
            self._table = Table()
            self.tables.append(self._table)
        elif self._table is not None:
            if tag == "tbody":
                self._in_tbody = True
            elif tag == "tr":
                self._row_started = True
            elif tag in ("th", "td") and self._row_started:
                self._row_started = False
                self._row_cell = [tag, ""]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self._stack and self._stack[-1][0] == tag:
            self._stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1
        if self._table is not None:
            if tag in ("th", "td") and self._row_cell is not None:
                if self._in_tbody:
                    self._table.first_cells.append((self._row_cell[0], self._row_cell[1].strip()))
                else:
                    self._table.head_rows.append(self._row_cell[1].strip())
                self._row_cell = None
            elif tag == "tbody":
                self._in_tbody = False
            elif tag == "table":
                self._table = None
        if tag == "pre" and self._layout:
            self._layout = False
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                if self._stderr_depth is not None and len(self._stack) <= self._stderr_depth:
                    self._stderr_depth = None
                if self._error_depth is not None and len(self._stack) <= self._error_depth:
                    self._error_depth = None
                return

    def handle_data(self, data: str) -> None:
        if self._layout:
            try:
                self.layout = json.loads(data)
            except ValueError:
                self.layout = {"error": data[:200]}
            return
        if self._hidden:
            return
        if self._row_cell is not None:
            self._row_cell[1] += data
        if data.strip() and self._error_depth is None:
            self.text.append(data.strip())
            if self._stderr_depth is not None:
                self.stderr[-1] += data
        cur = self._current()
        if cur is not None and data.strip() and not self._in_mark_group():
            cur.text.append(data.strip())


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def scan(dom: str) -> _ChartScanner:
    """Charts and links found in a dumped DOM."""
    scanner = _ChartScanner()
    scanner.feed(dom)
    scanner.close()
    return scanner


def expected_charts(html_source: str) -> int:
    """How many chart elements the page source declares (before any script ran)."""
    return len(re.findall(rf'class="{CHART_CLASS}"', html_source))


_SPEC = re.compile(r"^\s*var spec = (\{.*\});\s*$", re.MULTILINE)


def chart_specs(html_source: str) -> list[dict]:
    """The vega-lite specs of the page's probekit charts (from their inline fragments)."""
    return [json.loads(m.group(1).replace("<\\/", "</")) for m in _SPEC.finditer(html_source)]


def stacked_bars(spec: dict) -> list[str]:
    """Titles of bar layers in ``spec`` whose bars stack: a colour field other than the bar's own
    category, no x/y offset channel, and no ``stack: null`` on the value axis."""
    found: list[str] = []

    def walk(node: object, inherited: dict, title: str) -> None:
        if isinstance(node, list):
            for sub in node:
                walk(sub, inherited, title)
            return
        if not isinstance(node, dict):
            return
        title = str(
            node.get("title", {}).get("text")
            if isinstance(node.get("title"), dict)
            else node.get("title") or title
        )
        enc = {**inherited, **(node.get("encoding") or {})}
        mark = node.get("mark")
        mark = mark.get("type") if isinstance(mark, dict) else mark
        if mark == "bar" and isinstance(enc.get("color"), dict) and enc["color"].get("field"):
            quant = [
                c for c in ("x", "y") if isinstance(enc.get(c), dict) and enc[c].get("type") == "quantitative"
            ]
            cats = {
                enc[c].get("field") for c in ("x", "y") if isinstance(enc.get(c), dict) and c not in quant
            }
            offset = "xOffset" in enc or "yOffset" in enc
            unstacked = all("stack" in enc[c] and not enc[c]["stack"] for c in quant)
            if quant and not offset and not unstacked and enc["color"]["field"] not in cats:
                found.append(title or "untitled chart")
        for key in ("layer", "hconcat", "vconcat", "concat", "spec"):
            if key in node:
                walk(node[key], enc if key == "layer" else {}, title)

    walk(spec, {}, "")
    return found


def absolute_paths(found: _ChartScanner) -> list[str]:
    """Absolute local paths a reader would see in the text or follow in a link."""
    hits = [m.group(0) for t in found.text for m in ABS_PATH.finditer(t)]
    hits += [h for h in found.links if h.startswith(("file:", "/")) or re.match(r"^[A-Za-z]:\\", h)]
    return list(dict.fromkeys(hits))


def check_page(chromium: str, page: Path, budget_ms: int = 15000) -> tuple[list[str], _ChartScanner]:
    """Problems found on one page (empty when it is fit to publish), and what was scanned."""
    found = scan(dump_dom(chromium, page, budget_ms))
    problems = []
    source = page.read_text(encoding="utf-8", errors="replace")
    want = expected_charts(source)
    if len(found.charts) != want:
        problems.append(f"{page.name}: {want} charts in the source, {len(found.charts)} in the DOM")
    for chart in found.charts:
        if not chart.drawn:
            said = " ".join(chart.text)[:200]
            problems.append(
                f"{page.name}: chart {chart.ident} not drawn (svg {chart.svgs}, mark groups "
                f"{chart.mark_groups}, shapes {chart.mark_shapes}){': ' + said if said else ''}"
            )
    for path in absolute_paths(found)[:5]:
        problems.append(
            f"{page.name}: absolute local path on the page: {path!r} (use a path relative to the report)"
        )
    for block in found.stderr:
        problems.append(f"{page.name}: stderr block on the page: {html_lib.unescape(block).strip()[:160]!r}")
    for spec in chart_specs(source):
        for title in stacked_bars(spec):
            problems.append(
                f"{page.name}: stacked bars in chart {title!r} (compare side by side: yOffset or stack=None)"
            )
    shown = sum(t.shows_range_index for t in found.tables)
    if shown:
        problems.append(f"{page.name}: {shown} table(s) show the pandas row-number index column")
    layout = found.layout
    if layout is None:
        problems.append(f"{page.name}: the layout probe did not report (page scripts did not finish?)")
    elif "error" in layout:
        problems.append(f"{page.name}: layout probe: {layout['error']}")
    else:
        if layout.get("wide"):
            problems.append(
                f"{page.name}: page wider than the {layout['window']} px window "
                f"({layout['width']} px; {layout.get('widest') or 'see the page'}): "
                "make it fit or scroll in its own box"
            )
        for hit in layout.get("overprint", []):
            problems.append(
                f"{page.name}: chart {hit['chart']} has text marks printed over each other: "
                f"{'; '.join(hit['text'])[:160]}"
            )
    return problems, found


def check_reports(reports: Path, chromium: str, budget_ms: int = 15000, log=print) -> list[str]:
    """Check the index and every local HTML report it links; returns all problems."""
    index = reports / "index.html"
    if not index.is_file():
        return [f"{index} does not exist; run `probekit suite CONFIG --out {reports}` first"]
    problems, found = check_page(chromium, index, budget_ms)
    pages = []
    for href in dict.fromkeys(found.links):
        if re.match(r"^[a-z]+:", href) or href.startswith("#"):
            continue
        target = (reports / href.split("#")[0]).resolve()
        if not target.exists():
            problems.append(f"index.html links {href}, which does not exist")
        elif target.suffix == ".html":
            pages.append(target)
    if not pages:
        problems.append("index.html links no reports")
    for page in pages:
        page_problems, page_found = check_page(chromium, page, budget_ms)
        drawn = sum(c.drawn for c in page_found.charts)
        log(f"{page.name}: {drawn}/{len(page_found.charts)} charts drawn")
        problems += page_problems
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="?", type=Path, default=Path("reports"))
    parser.add_argument("--chromium", default=None, help="chromium binary (default: $CHROMIUM or PATH)")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time each page may run")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("chromium not found: apt-get install -y chromium (or set $CHROMIUM)", file=sys.stderr)
        return 2
    problems = check_reports(args.reports, chromium, args.budget_ms)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print("reports ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
