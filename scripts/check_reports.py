"""Check rendered reports in headless Chromium, offline: every chart must actually be drawn.

    python scripts/check_reports.py [REPORTS_DIR] [--chromium PATH] [--budget-ms 15000]

Opens ``REPORTS_DIR/index.html`` and every report it links in Debian's ``chromium`` with all
network resolution disabled, lets the page run (virtual time budget), dumps the DOM and confirms:
each ``probekit-chart`` element holds a rendered SVG (or canvas) with marks, no chart says it
failed, and the index links only reports that exist. Exits 1 on any problem, 2 when chromium is
missing. CI needs the Debian packages ``chromium`` (and ``fonts-dejavu-core`` for text metrics).
"""

from __future__ import annotations

import argparse
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
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--disable-default-apps", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network name fails to resolve
]


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium binary: ``explicit``, ``$CHROMIUM``, or chromium/chromium-browser on PATH."""
    for cand in [explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]:
        if cand and (path := shutil.which(cand)):
            return path
    return None


def dump_dom(chromium: str, page: Path, budget_ms: int = 15000, timeout_s: int = 90) -> str:
    """The page's DOM after its scripts ran, from ``chromium --headless --dump-dom``."""
    with tempfile.TemporaryDirectory(prefix="probekit-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", "--dump-dom", page.resolve().as_uri()]
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


class _ChartScanner(HTMLParser):
    """Collects :class:`Chart` records for every element with the chart class, and all links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: list[Chart] = []
        self.links: list[str] = []
        self._stack: list[tuple[str, Chart | None, bool]] = []  # (tag, chart, opens a mark group)

    def _current(self) -> Chart | None:
        return next((c for _, c, _ in reversed(self._stack) if c is not None), None)

    def _in_mark_group(self) -> bool:
        return any(m for _, _, m in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
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

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self._stack and self._stack[-1][0] == tag:
            self._stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
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


def check_page(chromium: str, page: Path, budget_ms: int = 15000) -> tuple[list[str], _ChartScanner]:
    """Problems found on one page (empty when every chart drew), and what was scanned."""
    found = scan(dump_dom(chromium, page, budget_ms))
    problems = []
    want = expected_charts(page.read_text(encoding="utf-8", errors="replace"))
    if len(found.charts) != want:
        problems.append(f"{page.name}: {want} charts in the source, {len(found.charts)} in the DOM")
    for chart in found.charts:
        if not chart.drawn:
            said = " ".join(chart.text)[:200]
            problems.append(f"{page.name}: chart {chart.ident} not drawn (svg {chart.svgs}, mark groups "
                            f"{chart.mark_groups}, shapes {chart.mark_shapes}){': ' + said if said else ''}")
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
