"""The suite's landing page and machine-readable log: ``<out>/index.html`` and ``<out>/runs.json``.

The index is one static HTML file with no scripts: a table of runs with status, duration, model,
datasets, headline numbers, result tables and links to each report (and to a submitit job's logs). A
sweep's index (``defaults.models``) puts the cross-model runs and their headlines first ("Across
models"), then one section per model with that model's runs. Each headline shows its value
with its interval and sample size (``+0.12 [-0.30, +0.50], n = 7 datasets``), flagged "not resolved
at this sample size" when the interval spans 0, or why it could not be computed
(:mod:`probekit.headlines`).
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .paths import model_folder
from .suite_runs import RunResult, SuiteConfig, results_as_dicts

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 24px 32px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 24px 0 6px 0; }
.meta { color: #666; margin-bottom: 16px; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: 6px 12px 6px 0; border-bottom: 1px solid #e4e4e4; }
th { font-weight: 600; border-bottom: 2px solid #bbb; }
.status { font-weight: 600; padding: 1px 6px; border-radius: 3px; color: white; }
.ok { background: #2e7d32; } .failed { background: #c62828; } .skipped { background: #9e9e9e; }
.num { font-variant-numeric: tabular-nums; }
.error { color: #b00020; font-size: 12px; max-width: 420px; }
ul { margin: 0; padding-left: 16px; }
.note { color: #8a5a00; font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _rel(path: str | None, out: Path) -> str | None:
    if not path:
        return None
    try:
        return os.path.relpath(path, out)
    except ValueError:
        return path


def _row(r: RunResult, out: Path) -> str:
    name = f'<a href="{_e(r.html)}">{_e(r.name)}</a>' if r.html else _e(r.name)
    heads = "".join(_headline(h) for h in r.headlines)
    tables = "".join(
        f'<li><a href="{_e(_rel(t.get("path"), out))}">{_e(t.get("name"))}.csv</a> '
        f"({_e(t.get('rows'))} rows)</li>"
        for t in r.tables
    )
    error = f'<div class="error">{_e(r.error)}</div>' if r.error else ""
    logs = " ".join(f'<a href="{_e(log)}">{_e(Path(log).suffix.lstrip(".") or "log")}</a>' for log in r.logs)
    job = (
        f"<div class=meta>{_e(r.job)}{' · log: ' + logs if logs else ''}</div>"
        if r.job and r.job != "inline"
        else ""
    )
    return (
        "<tr>"
        f"<td>{name}<div class=meta>{_e(Path(r.notebook).name)}</div>{job}</td>"
        f'<td><span class="status {_e(r.status)}">{_e(r.status)}</span>{error}</td>'
        f"<td class=num>{r.seconds:.1f} s</td>"
        f"<td>{_e(r.model)}</td>"
        f"<td>{_e(', '.join(r.datasets))}</td>"
        f"<td><ul>{heads}</ul></td>"
        f"<td><ul>{tables}</ul></td>"
        "</tr>"
    )


def _headline(h: dict[str, Any]) -> str:
    """One headline: label, value with interval and n, and the note (unresolved, or why not computed)."""
    note = f' <span class="note">{_e(h.get("note"))}</span>' if h.get("note") else ""
    return f"<li>{_e(h.get('label'))}: <b class=num>{_e(h.get('display'))}</b>{note}</li>"


def index_html(results: list[RunResult], out: Path, config: SuiteConfig, seconds: float) -> str:
    """The index page as a string."""
    n_ok = sum(r.status == "ok" for r in results)
    env = next((r.env for r in results if r.env), {})
    when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    meta = (
        f"{n_ok}/{len(results)} runs ok · {seconds:.0f} s · config {_e(config.path.name)} · "
        f"probekit {_e(env.get('probekit', __version__))} · git {_e(env.get('git_sha', '?'))} · "
        f"{_e(env.get('device', ''))} · {_e(when)}"
    )
    if config.models:
        sections = [("Across models", "cross", [r for r in results if not r.folder])]
        sections += [
            (f"Model {model}", f"model-{i}", [r for r in results if r.folder == model_folder(model)])
            for i, model in enumerate(config.models, 1)
        ]
        body = "\n".join(_table(rows, out, ident, title) for title, ident, rows in sections if rows)
        where = (
            "tables under each model's <code>&lt;model&gt;/results/</code> and the cross-model ones under "
        )
        meta += f" · sweep over {len(config.models)} models"
    else:
        body, where = _table(results, out, "runs"), "tables under "
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>probekit reports</title><style>{_CSS}</style></head><body>\n"
        f"<h1>probekit reports</h1><div class=meta>{meta}</div>\n"
        f"{body}\n"
        f'<p class=meta>Machine-readable: <a href="runs.json">runs.json</a>; {where}'
        '<a href="results/">results/</a>.</p>\n</body></html>\n'
    )


def _table(results: list[RunResult], out: Path, ident: str, title: str = "") -> str:
    """One table of runs, under a heading when it is one of a sweep's sections."""
    rows = "\n".join(_row(r, out) for r in results)
    heading = f"<h2>{_e(title)}</h2>\n" if title else ""
    return (
        f"{heading}<table id={ident}><thead><tr><th>run</th><th>status</th><th>time</th><th>model</th>"
        "<th>datasets</th><th>headline numbers</th><th>tables</th></tr></thead><tbody>\n"
        f"{rows}\n</tbody></table>"
    )


def write_index(results: list[RunResult], out: Path, config: SuiteConfig, seconds: float) -> Path:
    """Write ``index.html`` and ``runs.json`` into ``out`` atomically; returns the index path."""
    from .atomic import write_text_atomic

    index = out / "index.html"
    payload = {
        "config": str(config.path),
        "written": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "seconds": seconds,
        "ok": all(r.status == "ok" for r in results),
        "runs": results_as_dicts(results),
    }
    # both through a temporary file and a rename: a full disk keeps the previous, complete versions
    write_text_atomic(out / "runs.json", json.dumps(payload, indent=2, default=str))
    write_text_atomic(index, index_html(results, out, config, seconds))
    return index
