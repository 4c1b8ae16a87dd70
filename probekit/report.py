"""What every notebook calls to make its report: run info, tidy tables, headlines, timings.

Each helper shows something readable in the notebook (and so in the HTML report) and, in the
same output, a machine-readable record under the mimetype :data:`RECORD_MIME`. ``probekit suite``
reads those records back from the executed notebook to build ``reports/index.html``; HTML
exporters and JupyterLab ignore the mimetype, so nothing extra is drawn.

    info = run_info(dict(model=model, dataset=dataset), seed)   # seeds, shows the run-info table
    with Timer("extract features"):
        ...
    save_table(df, "layerwise", results_dir)                     # reports/results/layerwise.csv
    headline("best_layer", 7, label="Best layer (block output)")
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from typing_extensions import Self

from .errors import MissingTableError, ProbekitError
from .provenance import environment_info, seed_everything

RECORD_MIME = "application/vnd.probekit.record+json"
TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "site",
    "layer",
    "pool",
    "metric",
    "value",
    "ci_low",
    "ci_high",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_TIMINGS: list[dict[str, Any]] = []
_HEADLINES: dict[str, Any] = {}
_WARNED: set[tuple[str, str]] = set()
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"<>()`]+/)+([^\s/'\"<>()`]+)")


class TableError(ProbekitError, ValueError):
    """A result table that does not have the tidy shape every analysis shares."""


def _emit(kind: str, payload: dict[str, Any], text: str, html_text: str | None = None) -> None:
    """Display ``text`` (and ``html_text``) with the machine-readable record beside it."""
    record = {"kind": kind, **payload}
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain python without IPython: print only
        print(text)
        return
    if get_ipython() is None:
        print(text)
        return
    bundle: dict[str, Any] = {"text/plain": text, RECORD_MIME: _jsonable(record)}
    if html_text is not None:
        bundle["text/html"] = html_text
    else:
        bundle["text/markdown"] = text
    display(bundle, raw=True)


def report_mode() -> bool:
    """True inside a ``probekit suite`` run (``PROBEKIT_REPORT=html``): the page will be published."""
    return os.environ.get("PROBEKIT_REPORT", "") == "html"


def scrub_paths(text: str) -> str:
    """``text`` with absolute local paths cut to their last part (``/tmp/ipykernel_1/2.py`` -> ``2.py``)."""
    return _ABS_PATH.sub(r"\1", text)


def shown_path(path: str | Path) -> str:
    """How a file is named on a page: relative to the report in a suite run, else as given.

    In a suite run the report lies beside ``$PROBEKIT_RESULTS_DIR``, so a results table shows as
    ``results/<name>.csv``; a page copied to a web server carries no local path.
    """
    if not report_mode():
        return str(path)
    results = os.environ.get("PROBEKIT_RESULTS_DIR")
    base = Path(results).resolve().parent if results else Path.cwd()
    rel = os.path.relpath(Path(path).resolve(), base)
    return Path(path).name if rel.startswith("..") else Path(rel).as_posix()


class SavedPath(type(Path())):  # type: ignore[misc]
    """The path :func:`save_table` returns: a plain path that displays nothing as a cell's value
    (the saved-table note already names it), so no ``PosixPath('/abs/...')`` reaches a page."""

    def _ipython_display_(self) -> None:
        return None


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for report runs: each warning once, as a note without source lines."""
    text = scrub_paths(str(message))
    key = (category.__name__, text)
    if key in _WARNED:
        return
    _WARNED.add(key)
    _emit(
        "warning",
        {"category": category.__name__, "message": text},
        f"Warning ({category.__name__}): {text}",
        f'<div class="probekit-note"><b>Note</b> ({html.escape(category.__name__)}): {html.escape(text)}</div>',
    )


def _frame_html(df: pd.DataFrame) -> str:
    """A DataFrame as a page shows it: no unnamed integer index column (the row numbers pandas
    keeps through sorts and filters), inside its own scrolling box. A named index is data: kept."""
    plain_index = (
        df.index.nlevels == 1
        and df.index.name is None
        and df.index.is_unique
        and pd.api.types.is_integer_dtype(df.index.dtype)
    )  # 0..n-1, perhaps sorted or filtered
    table = df.to_html(
        index=not plain_index,
        border=0,
        classes="dataframe probekit-table",
        max_rows=pd.get_option("display.max_rows"),
        max_cols=pd.get_option("display.max_columns"),
    )
    return f'<div class="probekit-table-box" style="overflow-x:auto;max-width:100%">{table}</div>'


def _publishable_display() -> None:
    """In a report run: warnings become one-time notes and DataFrames drop the RangeIndex column."""
    _WARNED.clear()
    if not report_mode():
        return
    warnings.showwarning = _show_warning
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, _frame_html)


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: numpy scalars/arrays unwrapped, NaN/inf to None, rest str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _jsonable(value.tolist())
    return str(value)


def default_results_dir() -> Path:
    """``$PROBEKIT_RESULTS_DIR`` (set by ``probekit suite``), else ``reports/results``."""
    import os

    from .paths import reports_dir

    env = os.environ.get("PROBEKIT_RESULTS_DIR")
    return Path(env) if env else reports_dir() / "results"


# Parameters run_info does not list: the seed has its own row, and local paths (where tables go, a
# weights file) name this machine's folders, which a published page must not show.
NOT_RECORDED = ("seed", "results_dir", "weights")


def notebook_parameters(
    namespace: Mapping[str, Any], *, exclude: Sequence[str] = NOT_RECORDED
) -> dict[str, Any]:
    """A notebook's parameters and their values, for :func:`run_info`: derived, never hand-copied.

    ``namespace`` is the notebook's ``globals()``. The parameters are the names its parameters cell
    declares with a type (``image_size: int = 112``; the suite checks values against these types),
    read from the namespace's ``__annotations__`` in the cell's order, with the values they hold now
    (papermill's injected values included). ``exclude``: names left out (:data:`NOT_RECORDED`).
    """
    names = namespace.get("__annotations__") or {}
    if not names:
        raise ValueError(
            "no typed parameters in this namespace: call notebook_parameters(globals()) in a notebook whose "
            "parameters cell declares each parameter with a type (image_size: int = 112)"
        )
    return {name: namespace[name] for name in names if name not in exclude and name in namespace}


def run_info(params: dict[str, Any], seed: int | None = None) -> pd.DataFrame:
    """Seed everything, then show and return a table of the run's parameters and environment.

    ``params`` are the notebook's parameters (at least ``model`` and ``dataset``/``datasets``
    when the notebook has them: the suite index shows them). The table also lists versions of
    probekit/torch/timm/numpy/scikit-learn, python, device, git sha, seed and start time.
    """
    if seed is not None:
        seed_everything(seed)
    _publishable_display()
    _TIMINGS.clear()
    _HEADLINES.clear()
    env = environment_info()
    started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    rows = [("parameter", k, _short(v)) for k, v in params.items()]
    rows.append(("run", "seed", "none" if seed is None else str(seed)))
    rows.append(("run", "start time", started))
    rows += [("environment", k, v) for k, v in env.items()]
    table = pd.DataFrame(rows, columns=["group", "name", "value"])
    payload = {"params": params, "seed": seed, "env": env, "start_time": started}
    html_text = (
        "<details open><summary><b>Run info</b></summary>"
        + table.to_html(index=False, classes="probekit-run-info", border=0)
        + "</details>"
    )
    text = "Run info\n" + table.to_string(index=False)
    _emit("run_info", payload, text, html_text)
    return table


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def save_table(
    df: pd.DataFrame, name: str, results_dir: str | Path | None = None, *, strict: bool = True
) -> Path:
    """Write ``df`` as ``<results_dir>/<name>.csv`` and record it for the suite index.

    With ``strict`` (the default) the table must have the shared tidy columns
    :data:`TABLE_COLUMNS`; extra columns are kept. ``results_dir`` defaults to
    ``reports/results``. Returns the CSV path (shown on the page relative to the report, see
    :func:`shown_path`).
    """
    if not _NAME.match(name):
        raise TableError(f"table name {name!r} must be letters, digits, '_', '-' or '.'")
    if strict:
        missing = [c for c in TABLE_COLUMNS if c not in df.columns]
        if missing:
            raise TableError(
                f"table {name!r} lacks the tidy columns {missing}; every result table needs "
                f"{list(TABLE_COLUMNS)} (use NaN/'' where one does not apply, or strict=False)"
            )
    out_dir = Path(results_dir) if results_dir else default_results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.csv"
    ordered = [c for c in TABLE_COLUMNS if c in df.columns] + [
        c for c in df.columns if c not in TABLE_COLUMNS
    ]
    df[ordered].to_csv(path, index=False)
    payload = {
        "name": name,
        "path": str(path.resolve()),
        "rows": len(df),
        "columns": [str(c) for c in ordered],
    }
    shown = shown_path(path)
    where = f"[`{shown}`]({shown})" if report_mode() and not Path(shown).is_absolute() else f"`{shown}`"
    _emit("table", payload, f"Saved table `{name}` ({len(df)} rows) to {where}")
    return SavedPath(path)


def read_table(name: str, results_dir: str | Path | None, *, notebook: str) -> pd.DataFrame:
    """``<results_dir>/<name>.csv`` as :func:`save_table` wrote it (``results_dir`` defaults as there).

    ``notebook`` is the notebook that writes the table; a missing table is a
    :class:`~probekit.errors.MissingTableError` that says to run it.
    """
    folder = Path(results_dir) if results_dir else default_results_dir()
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise MissingTableError(
            f"{path} is missing: notebook {notebook} writes the {name!r} table. Run it first with "
            f"results_dir={str(folder)!r} (a suite config runs it when listed before this notebook)."
        )
    return pd.read_csv(path)


def headline(
    name: str,
    value: Any,
    *,
    label: str | None = None,
    fmt: str | None = None,
    ci: tuple[float, float] | None = None,
    n: Any = None,
    why: str | None = None,
) -> Any:
    """Show a headline number and record it for the suite index; returns ``value``.

    ``fmt`` is a format spec such as ``".3f"``; floats default to 4 significant digits. ``ci``
    (low, high) and ``n`` (the sample size, e.g. ``"7 datasets"``) are shown beside the value, with
    "not resolved at this sample size" when the interval spans 0; ``why`` says why a NaN value could
    not be computed (see :mod:`probekit.headlines`).
    """
    from .headlines import describe

    if not _NAME.match(name):
        raise ProbekitError(f"headline name {name!r} must be letters, digits, '_', '-' or '.'")
    text = describe(value, fmt, ci=ci, n=n, why=why)
    shown = text["display"] + (f" ({text['note']})" if text["note"] else "")
    _HEADLINES[name] = value
    payload = {
        "name": name,
        "value": value,
        "label": label or name,
        "display": text["display"],
        "note": text["note"],
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "n": n,
    }
    _emit("headline", payload, f"**{html.escape(label or name)}**: {shown}")
    return value


def format_value(value: Any, fmt: str | None = None) -> str:
    """A compact string for a headline value."""
    if fmt:
        return format(value, fmt)
    if isinstance(value, float) or hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        value = float(value)
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def headlines() -> dict[str, Any]:
    """Headlines recorded since the last :func:`run_info` (in this kernel)."""
    return dict(_HEADLINES)


class Timer:
    """Time a step; on exit show ``"<name>: 1.23 s"`` and record it for the report.

    >>> with Timer("extract features") as t:
    ...     pass
    >>> t.seconds >= 0
    True
    """

    def __init__(self, name: str, *, quiet: bool = False) -> None:
        self.name = name
        self.quiet = quiet
        self.seconds: float = float("nan")
        self._start = 0.0

    def __enter__(self) -> Self:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        _TIMINGS.append({"step": self.name, "seconds": self.seconds})
        if not self.quiet:
            _emit(
                "timing", {"step": self.name, "seconds": self.seconds}, f"*{self.name}: {self.seconds:.2f} s*"
            )


def timings() -> pd.DataFrame:
    """Steps timed with :class:`Timer` since the last :func:`run_info`, in order."""
    return pd.DataFrame(_TIMINGS, columns=["step", "seconds"])


def describe(backbone: Any) -> None:
    """Show the model facts a reader needs (name as reported, weights, size, depth × width)."""
    facts = backbone.describe()
    table = pd.DataFrame(list(facts.items()), columns=["model", "value"])
    html_text = (
        "<details open><summary><b>Model</b></summary>"
        + table.to_html(index=False, classes="probekit-run-info", border=0)
        + "</details>"
    )
    _emit(
        "model",
        {k: _jsonable(v) for k, v in facts.items()},
        "Model\n" + table.to_string(index=False),
        html_text,
    )
