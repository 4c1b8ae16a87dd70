"""JupyterLab in a real browser: a project notebook opens as a notebook, runs, and draws its charts.

Starts ``jupyter lab`` from this venv on a free localhost port with a temporary root and temporary
Jupyter config/data/runtime/settings folders (nothing leaks in from ``~/.jupyter``; the project's
own ``jupyter/`` settings are on the config path exactly as ``make`` installs them), then drives
Debian's Chromium through Playwright: double-click-equivalent open of ``00_model_check.py`` (the
default viewer must be the jupytext notebook), *Run All*, and checks in the DOM that every chart
output holds a drawn vega ``<svg>``/``<canvas>``, that no cell has an error output, and that moving
the explorer's layer slider redraws its chart. No network is used: Chromium resolves no host names.

Needs the Debian package ``chromium`` (``bash scripts/system_deps.sh``) and the ``playwright``
Python package (a dev dependency; never run ``playwright install``, the system Chromium is used).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "00_model_check.py"
# Tiny random-init ViT: the notebook's own code paths in seconds on two cores.
TINY = {"model": "vit_tiny_patch16_224", "pretrained": False, "image_size": 32, "depth": 2, "n_images": 40}
CHROMIUM_ARGS = [
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
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # offline except the local server
]
DRAWN = "svg.marks, canvas.marks"  # vega-embed gives the element it draws into the class "marks"


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "Chromium is not installed: run `bash scripts/system_deps.sh` as root (Debian package "
            "`chromium`) or set $CHROMIUM; the JupyterLab browser test needs it"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_copy(dest: Path) -> Path:
    """``00_model_check.py`` with a papermill-style injected-parameters cell for the tiny model."""
    import jupytext
    import nbformat

    nb = jupytext.read(NOTEBOOK)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    lines = [f"{k} = {v!r}" for k, v in {**TINY, "results_dir": str(dest / "results")}.items()]
    injected = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, injected)
    out = dest / NOTEBOOK.name
    jupytext.write(nb, out, fmt="py:percent")
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running ``jupyter lab`` (url, token, root) with nothing from the user's own Jupyter setup."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    _tiny_copy(root)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("PROBEKIT_REPORT", "JUPYTER_PATH")}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        JUPYTER_CONFIG_PATH=str(ROOT / "jupyter"),
        JUPYTER_PLATFORM_DIRS="1",
        TQDM_DISABLE="1",
        PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
    )
    args = [
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
    ]
    with open(tmp / "lab.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", *args],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not start:\n" + (tmp / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"url": url, "token": token, "root": root, "log": tmp / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# JavaScript run in the page. The notebook model's JSON is the ground truth for outputs.
_MODEL_JSON = "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.model.toJSON())"
_ALL_RAN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.content.model) return false;
  const cells = w.content.model.toJSON().cells.filter(c => c.cell_type === 'code');
  const busy = w.sessionContext.session && w.sessionContext.session.kernel
    && w.sessionContext.session.kernel.status !== 'idle';
  return !busy && cells.length > 0 && cells.every(c => Number.isInteger(c.execution_count));
}"""
_CHART_CELLS = f"""() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell')).map(cell => {{
  const src = cell.querySelector('.jp-InputArea-editor').textContent.trim().split('\\n');
  const outs = Array.from(cell.querySelectorAll('.jp-OutputArea-output'));
  return {{last: src[src.length - 1], drawn: cell.querySelectorAll('{DRAWN}').length,
          text: outs.map(o => o.textContent.trim()).join(' | ').slice(0, 200)}};
}})"""
_EXPLORER = f"""() => {{
  const box = document.querySelector('.jp-Notebook .widget-vbox');
  if (!box) return null;
  const marks = Array.from(box.querySelectorAll('{DRAWN}'));
  return {{drawn: marks.length,
          picture: marks.map(m => m.tagName === 'CANVAS' ? m.toDataURL() : m.outerHTML).join('|'),
          text: box.textContent}};
}}"""


def test_notebook_draws_every_chart_in_jupyterlab(lab, tmp_path):
    chromium = _chromium()
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the playwright package is missing: .venv/bin/pip install playwright "
            "(never `playwright install`; the test drives the system Chromium)"
        )
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab['url']}/lab?token={lab['token']}", timeout=60_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000)
            page.evaluate("() => window.jupyterapp.restored")
            # What a double-click does: open with the default viewer for the file type.
            page.evaluate(
                f"() => window.jupyterapp.commands.execute('docmanager:open', "
                f"{{path: {json.dumps(NOTEBOOK.name)}}})"
            )
            try:
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=30_000)
            except PlaywrightTimeout:
                pytest.fail(
                    f"{NOTEBOOK.name} did not open as a notebook by default (the jupytext default "
                    "viewer from jupyter/labconfig is not applied)"
                )
            page.wait_for_function(
                "() => { const s = window.jupyterapp.shell.currentWidget.sessionContext;"
                " return s.session && s.session.kernel && "
                "s.session.kernel.status === 'idle'; }",
                timeout=60_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(_ALL_RAN, timeout=120_000, polling=500)
            model = json.loads(page.evaluate(_MODEL_JSON))
            failed = [o for c in model["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
            assert not failed, "cells failed:\n" + "\n".join(f"{o['ename']}: {o['evalue']}" for o in failed)
            # Every cell ending in a charts.* expression must show a drawn chart, not "<VegaLite chart>".
            page.wait_for_timeout(1500)  # vega draws asynchronously after the output is attached
            cells = page.evaluate(_CHART_CELLS)
            chart_cells = [c for c in cells if c["last"].startswith("charts.")]
            assert len(chart_cells) >= 3, cells
            blind = [c for c in chart_cells if c["drawn"] == 0]
            said = "\n".join(f"  {c['last'][:70]} -> {c['text'][:120]!r}" for c in blind)
            assert not blind, f"charts not drawn in JupyterLab (cell output text shown instead):\n{said}"
            # The explorer: its live chart is drawn, and moving the slider redraws it.
            page.wait_for_function(f"() => ({_EXPLORER})() && ({_EXPLORER})().drawn > 0", timeout=20_000)
            before = page.evaluate(_EXPLORER)
            handle = page.locator(".jp-Notebook .widget-vbox .widget-slider .noUi-handle").first
            handle.focus()
            page.keyboard.press("Home")  # first layer (the explorer starts at the last)
            try:
                page.wait_for_function(
                    f"(old) => {{ const e = ({_EXPLORER})(); "
                    "return e && e.drawn > 0 && e.picture !== old; }",
                    arg=before["picture"],
                    timeout=20_000,
                    polling=250,
                )
            except PlaywrightTimeout:
                pytest.fail("moving the explorer's layer slider did not change its chart")
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            if os.environ.get("PROBEKIT_SCREENSHOT"):
                page.screenshot(path=os.environ["PROBEKIT_SCREENSHOT"])
        finally:
            browser.close()
    assert not errors, f"JavaScript errors in the page: {errors[:5]}"
