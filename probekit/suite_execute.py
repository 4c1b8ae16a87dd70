"""One run of the suite: a notebook executed with papermill in its own kernel, rendered to HTML.

:func:`execute_run` is what every executor runs, in this process (``--executor inline``) or inside a
submitit job (:mod:`probekit.suite_jobs`): it writes ``<out>/<name>.html`` (inputs hidden, charts drawn
offline) and ``executed/<name>.ipynb`` into the run's folder, and returns the :class:`RunResult`
read from the notebook's records, whatever the outcome; a failed notebook is rendered with
papermill's error banner, and a run that never produced a notebook as a placeholder page that says why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import nbformat

from .atomic import DiskFullError, is_disk_full, write_text_atomic
from .report import RECORD_MIME
from .suite_runs import RunResult, RunSpec, SuiteConfig

KERNEL = "python3"
# The kernel's own log (not cell output) says "WARNING | Kernel is running over TCP without encryption"
# (local loopback only) and "ERROR | KeyboardInterrupt caught in kernel" at shutdown: noise, not failures.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
RUN_ENV = {"PROBEKIT_REPORT": "html"}
RUN_ENV_DEFAULTS = {"TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}


def load_notebook(path: Path) -> nbformat.NotebookNode:
    """A notebook from a jupytext ``.py`` source or an ``.ipynb``, with the ``python3`` kernel set."""
    if path.suffix == ".py":
        import jupytext

        nb = jupytext.read(path)
    else:
        nb = nbformat.read(str(path), as_version=4)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.pop("jupytext", None)
    return nb


def prepare_input(nb_path: Path, work_dir: Path) -> Path:
    """The notebook as an ``.ipynb`` papermill can run, written under ``work_dir``."""
    nb = load_notebook(nb_path)
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{nb_path.stem}.ipynb"
    nbformat.write(nb, str(target))
    return target


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside, restore afterwards."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def read_records(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The probekit records (run info, tables, headlines, timings) in an executed notebook."""
    records = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            rec = output.get("data", {}).get(RECORD_MIME)
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _fill_from_records(result: RunResult, records: list[dict[str, Any]]) -> None:
    params = dict(result.parameters)
    for rec in records:
        kind = rec.get("kind")
        if kind == "run_info":
            params.update(rec.get("params") or {})
            result.env = rec.get("env") or {}
        elif kind == "headline":
            result.headlines.append(
                {
                    k: rec.get(k)
                    for k in ("name", "label", "value", "display", "note", "ci_low", "ci_high", "n")
                }
            )
        elif kind == "table":
            result.tables.append({k: rec.get(k) for k in ("name", "path", "rows")})
        elif kind == "timing":
            result.timings.append({"step": rec.get("step"), "seconds": rec.get("seconds")})
    result.model = str(params["model"]) if params.get("model") is not None else None
    ds = params.get("datasets", params.get("dataset"))
    result.datasets = [str(d) for d in ds] if isinstance(ds, (list, tuple)) else ([str(ds)] if ds else [])


def _failed_placeholder(input_ipynb: Path, message: str) -> nbformat.NotebookNode:
    nb = nbformat.read(str(input_ipynb), as_version=4)
    banner = nbformat.v4.new_markdown_cell(
        f'<div style="color:#b00020;font-weight:bold">This notebook did not run: {escape(message)}</div>'
    )
    nb.cells.insert(0, banner)
    return nb


def run_folder(spec: RunSpec, out: Path) -> Path:
    """The folder a run's page, ``executed/`` notebook, ``results/`` tables and ``logs/`` go in: the
    output itself, or a sweep's model folder inside it."""
    return out / spec.folder if spec.folder else out


def new_result(spec: RunSpec, params: dict[str, Any], status: str = "ok", **fields: Any) -> RunResult:
    """A :class:`RunResult` for ``spec``, stamped with the current time."""
    return RunResult(
        name=spec.name,
        notebook=str(spec.notebook),
        status=status,
        folder=spec.folder,
        parameters=params,
        started=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        **fields,
    )


def execute_run(
    spec: RunSpec,
    params: dict[str, Any],
    out: Path,
    config: SuiteConfig,
    extra_env: dict[str, str] | None = None,
    log_output: bool = False,
) -> RunResult:
    """Execute one run with papermill and render it to HTML, whatever the outcome.

    ``extra_env`` adds environment variables for the kernel (a local job's thread count);
    ``log_output`` logs each cell's output as it comes (a job's log)."""
    import papermill as pm

    result = new_result(spec, params)
    folder = run_folder(spec, out)
    input_ipynb = prepare_input(spec.notebook, folder / ".inputs")
    executed = folder / "executed" / f"{spec.short_name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)
    env = {
        **{k: v for k, v in RUN_ENV_DEFAULTS.items() if k not in os.environ},
        **(extra_env or {}),
        **config.env,
        **RUN_ENV,
        "PROBEKIT_RESULTS_DIR": str((folder / "results").resolve()),
    }
    t0 = time.perf_counter()
    try:
        with _environment(env):
            pm.execute_notebook(
                str(input_ipynb),
                str(executed),
                parameters=params,
                kernel_name=KERNEL,
                language="python",
                cwd=str(spec.notebook.parent),
                progress_bar=False,
                log_output=log_output,
                execution_timeout=config.timeout,
                extra_arguments=KERNEL_ARGS,
            )
    except pm.PapermillExecutionError as exc:
        if "No space left on device" in str(exc.evalue) or "Errno 28" in str(exc.evalue):
            raise DiskFullError(
                folder / "results", None, f"the notebook {spec.notebook.name}: {exc.evalue}"
            ) from None
        result.status, result.error = "failed", f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    except Exception as exc:  # noqa: BLE001  (kernel death, timeouts, missing kernels: recorded)
        if is_disk_full(exc):
            raise DiskFullError(executed, None, f"saving the executed notebook: {exc}") from None
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - t0
    nb = (
        nbformat.read(str(executed), as_version=4)
        if executed.is_file()
        else _failed_placeholder(input_ipynb, result.error or "unknown error")
    )
    _fill_from_records(result, read_records(nb))
    if executed.is_file():
        result.ipynb = str(executed.relative_to(out))
    t1 = time.perf_counter()
    html = _render_atomic(nb, out / f"{spec.name}.html", spec.name)
    result.render_seconds = time.perf_counter() - t1
    result.html = str(html.relative_to(out))
    return result


def render_failed_run(result: RunResult, spec: RunSpec, out: Path) -> RunResult:
    """A run whose job died before its notebook was rendered (killed, out of memory, cancelled): its
    page is the notebook with a banner saying why, as for a notebook that did not run."""
    input_ipynb = prepare_input(spec.notebook, run_folder(spec, out) / ".inputs")
    nb = _failed_placeholder(input_ipynb, result.error or "unknown error")
    _fill_from_records(result, [])
    result.html = str(_render_atomic(nb, out / f"{spec.name}.html", spec.name).relative_to(out))
    return result


def _render_atomic(nb: nbformat.NotebookNode, page: Path, title: str) -> Path:
    """Render into a scratch folder, then write the page into place atomically (a full disk leaves
    the previous page, and says how large the new one is)."""
    import tempfile

    from .render import render_html

    with tempfile.TemporaryDirectory(prefix="probekit-page-") as scratch:
        body = render_html(nb, Path(scratch) / page.name, title=title).read_text(encoding="utf-8")
    page.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(page, body)
