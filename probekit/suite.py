"""The notebook suite runner: a grid of (notebook, parameters) run with papermill, rendered to HTML.

A config (YAML) lists runs and shared defaults::

    out: reports                 # optional; --out wins
    timeout: 1800                # optional; seconds per cell
    env: {PROBEKIT_DATA: ...}    # optional; environment for every kernel
    defaults: {seed: 0}          # given to every notebook that declares the parameter
    runs:
      - name: model_check
        notebook: notebooks/00_model_check.py
        parameters: {n_images: 64}
        after: []                # runs that must finish first

Before anything runs, every parameter name is checked against the notebook's parameters cell
(``papermill.inspect_notebook``); an unknown name is an error that lists the valid ones, and each
value must have the type the cell declares (``image_size: int``) and, for ints, be at least 0.
Invalid YAML is reported with its file, line and column. Runs go
in dependency order, each in its own kernel with the notebook's folder as working directory; a
failed run is marked failed and still rendered, and runs after it are skipped. Each executed
notebook becomes ``<out>/<name>.html`` (inputs hidden, charts drawn offline) and the suite writes
``<out>/index.html`` and ``<out>/runs.json``. Pages, index and runs.json are written through a
temporary file and a rename; a full disk stops the suite with the space needed and free, and every
run finished before it stays rendered and listed. ``--check`` writes nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import yaml

from .atomic import DiskFullError, is_disk_full, write_text_atomic
from .errors import ProbekitError
from .report import RECORD_MIME
from .suite_runs import RunResult, RunSpec, SuiteConfig

KERNEL = "python3"
# The kernel's own log (not cell output) says "WARNING | Kernel is running over TCP without encryption"
# (local loopback only) and "ERROR | KeyboardInterrupt caught in kernel" at shutdown: noise, not failures.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
RUN_ENV = {"PROBEKIT_REPORT": "html"}
RUN_ENV_DEFAULTS = {"TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}


class SuiteConfigError(ProbekitError, ValueError):
    """A suite config that cannot run: unknown parameters, notebooks, dependencies."""


class SuiteOutputError(ProbekitError, OSError):
    """An output folder the suite cannot write to."""

    def __str__(self) -> str:
        return str(self.args[0])


# ----------------------------------------------------------------------------- config


def _resolve_notebook(raw: str, config_path: Path) -> Path:
    """A notebook path from the config: absolute, or found from the cwd, or from the config's
    folder and its parents (so ``notebooks/x.py`` works from ``configs/*.yaml``)."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    candidates = [Path.cwd() / path] + [d / path for d in [config_path.parent, *config_path.parent.parents]]
    for cand in candidates:
        if cand.is_file():
            return cand.resolve()
    raise SuiteConfigError(
        f"{config_path}: notebook {raw!r} not found from {Path.cwd()} or the config's folder"
    )


def load_config(path: str | Path) -> SuiteConfig:
    """Parse and check the shape of a suite config (parameters are checked by :func:`validate`)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteConfigError(f"suite config {path} does not exist")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SuiteConfigError(
            f"{path}: a suite config is a mapping with 'runs:' (and optionally out, timeout, "
            f"env, defaults); this file holds a {type(raw).__name__}"
        )
    unknown = set(raw) - {"out", "timeout", "env", "defaults", "runs"}
    if unknown:
        raise SuiteConfigError(
            f"{path}: unknown top-level keys {sorted(unknown)}; valid: out, timeout, env, defaults, runs"
        )
    if not raw.get("runs"):
        raise SuiteConfigError(
            f"{path}: no runs; add a 'runs:' list of {{name, notebook, parameters, after}}"
        )
    runs, seen = [], set()
    for i, item in enumerate(raw["runs"]):
        if not isinstance(item, dict) or "notebook" not in item:
            raise SuiteConfigError(f"{path}: run #{i + 1} needs at least 'notebook' (and 'name')")
        extra = set(item) - {"name", "notebook", "parameters", "after"}
        if extra:
            raise SuiteConfigError(
                f"{path}: run #{i + 1} has unknown keys {sorted(extra)}; "
                "valid: name, notebook, parameters, after"
            )
        name = str(item.get("name") or Path(item["notebook"]).stem)
        if name in seen:
            raise SuiteConfigError(f"{path}: run name {name!r} appears twice; names must be unique")
        seen.add(name)
        after = item.get("after") or []
        runs.append(
            RunSpec(
                name,
                _resolve_notebook(str(item["notebook"]), path),
                dict(item.get("parameters") or {}),
                [after] if isinstance(after, str) else list(after),
            )
        )
    out = raw.get("out")
    return SuiteConfig(
        path=path.resolve(),
        runs=runs,
        defaults=dict(raw.get("defaults") or {}),
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        out=Path(out) if out else None,
        timeout=int(raw["timeout"]) if raw.get("timeout") else None,
    )


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a syntax error names the file, line and column and what is wrong."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = " ".join(x for x in (err.context, err.problem) if x)
        line = ""
        if mark is not None:
            lines = path.read_text(encoding="utf-8").splitlines()
            if 0 <= mark.line < len(lines):
                line = f"\n    {lines[mark.line]}\n    {' ' * mark.column}^"
        raise SuiteConfigError(
            f"{path}: invalid YAML at {where}: {what}{line}\n"
            "Fix the indentation or quoting there (YAML: 'key: value', lists as '- item' "
            "or [a, b])."
        ) from None
    except yaml.YAMLError as err:
        raise SuiteConfigError(f"{path}: invalid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise SuiteConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None


def order_runs(runs: list[RunSpec]) -> list[RunSpec]:
    """Runs in dependency order (config order among independent runs); cycles are errors."""
    by_name = {r.name: r for r in runs}
    for r in runs:
        missing = [a for a in r.after if a not in by_name]
        if missing:
            raise SuiteConfigError(
                f"run {r.name!r} comes after unknown runs {missing}; runs: {list(by_name)}"
            )
    done: list[RunSpec] = []
    placed: set[str] = set()
    pending = list(runs)
    while pending:
        ready = [r for r in pending if all(a in placed for a in r.after)]
        if not ready:
            raise SuiteConfigError(f"dependency cycle among runs {[r.name for r in pending]}")
        first = ready[0]
        done.append(first)
        placed.add(first.name)
        pending.remove(first)
    return done


# ----------------------------------------------------------------------------- notebooks


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


def notebook_parameters(nb_path: Path, work_dir: Path) -> dict[str, dict[str, Any]]:
    """The declared parameters of a notebook (``papermill.inspect_notebook``), by name."""
    import papermill as pm

    ipynb = prepare_input(nb_path, work_dir)
    return pm.inspect_notebook(str(ipynb))


def prepare_input(nb_path: Path, work_dir: Path) -> Path:
    """The notebook as an ``.ipynb`` papermill can run, written under ``work_dir``."""
    nb = load_notebook(nb_path)
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{nb_path.stem}.ipynb"
    nbformat.write(nb, str(target))
    return target


def resolve_parameters(
    config: SuiteConfig, runs: list[RunSpec], out: Path, work: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Final parameters per run; raises one :class:`SuiteConfigError` listing every problem (unknown
    names, values of the wrong type or out of range). Notebooks are converted into ``work``
    (default ``<out>/.inputs``)."""
    work = out / ".inputs" if work is None else work
    declared = {r.name: notebook_parameters(r.notebook, work) for r in runs}
    problems: list[str] = []
    resolved: dict[str, dict[str, Any]] = {}
    for r in runs:
        valid = declared[r.name]
        unknown = [k for k in r.parameters if k not in valid]
        if unknown:
            problems.append(
                f"run {r.name!r} ({r.notebook.name}): unknown parameters {unknown}; "
                f"valid: {', '.join(_describe(p) for p in valid.values()) or 'none'}"
            )
        params = {k: v for k, v in config.defaults.items() if k in valid}
        if "results_dir" in valid:
            params["results_dir"] = str((out / "results").resolve())
        params.update(r.parameters)
        resolved[r.name] = params
        source = {
            **dict.fromkeys(config.defaults, "defaults"),
            **dict.fromkeys(r.parameters, f"run {r.name!r}"),
        }
        for key, value in params.items():
            if key in valid and key != "results_dir":
                why = check_value(valid[key], value)
                if why:
                    problems.append(
                        f"{source.get(key, 'run ' + repr(r.name))}: {key} = {value!r} {why} "
                        f"({r.notebook.name} declares {_describe(valid[key])})"
                    )
    used = {k for p in declared.values() for k in p}
    unused = [k for k in config.defaults if k not in used]
    if unused:
        problems.append(f"defaults {unused} are declared by none of the notebooks run")
    if problems:
        raise SuiteConfigError("invalid suite config " + str(config.path) + ":\n  " + "\n  ".join(problems))
    return resolved


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "list": (list, tuple),
    "dict": (dict,),
    "tuple": (list, tuple),
}


def check_value(declared: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` does not fit a parameter as its notebook declares it (None when it fits):
    the declared type (``n: int``), and at least 0 for ints (counts, sizes, seeds; 0 means a default)."""
    type_name = str(declared.get("inferred_type_name") or "").strip()
    base = type_name.split("[", 1)[0].lower()
    optional = "none" in type_name.lower() or "optional" in type_name.lower()
    if value is None:
        return None if optional or base in ("", "none") else f"is empty (null); give a {base}"
    if base not in _TYPES:
        return None  # no annotation, or a type we do not check
    if isinstance(value, bool) and base in ("int", "float"):
        return f"is a bool; the notebook declares {base}"
    if not isinstance(value, _TYPES[base]):
        return f"is a {type(value).__name__}; the notebook declares {base}"
    if base == "int" and value < 0:
        return "is negative; give an int >= 0"
    if base == "float" and math.isnan(value):
        return "is NaN"
    return None


def _describe(p: dict[str, Any]) -> str:
    return f"{p['name']} ({p.get('inferred_type_name', '?')}, default {p.get('default')})"


# ----------------------------------------------------------------------------- running


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
        f'<div style="color:#b00020;font-weight:bold">This notebook did not run: {message}</div>'
    )
    nb.cells.insert(0, banner)
    return nb


def execute_run(spec: RunSpec, params: dict[str, Any], out: Path, config: SuiteConfig) -> RunResult:
    """Execute one run with papermill and render it to HTML, whatever the outcome."""
    import papermill as pm

    result = RunResult(
        name=spec.name,
        notebook=str(spec.notebook),
        status="ok",
        parameters=params,
        started=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    )
    input_ipynb = prepare_input(spec.notebook, out / ".inputs")
    executed = out / "executed" / f"{spec.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)
    env = {
        **{k: v for k, v in RUN_ENV_DEFAULTS.items() if k not in os.environ},
        **config.env,
        **RUN_ENV,
        "PROBEKIT_RESULTS_DIR": str((out / "results").resolve()),
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
                log_output=False,
                execution_timeout=config.timeout,
                extra_arguments=KERNEL_ARGS,
            )
    except pm.PapermillExecutionError as exc:
        if "No space left on device" in str(exc.evalue) or "Errno 28" in str(exc.evalue):
            raise DiskFullError(
                out / "results", None, f"the notebook {spec.notebook.name}: {exc.evalue}"
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


def _render_atomic(nb: nbformat.NotebookNode, page: Path, title: str) -> Path:
    """Render into a scratch folder, then write the page into place atomically (a full disk leaves
    the previous page, and says how large the new one is)."""
    import tempfile

    from .render import render_html

    with tempfile.TemporaryDirectory(prefix="probekit-page-") as scratch:
        body = render_html(nb, Path(scratch) / page.name, title=title).read_text(encoding="utf-8")
    return write_text_atomic(page, body)


def check_writable(out: Path) -> None:
    """Make ``out`` and check a file can be written there; a clear error otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probekit-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SuiteOutputError(
            f"cannot write the reports to {out}: {err.strerror or err} ({err.filename or out}). Give a writable "
            "folder with --out (or 'out:' in the config)."
        ) from None


def writable(out: Path) -> bool:
    """Whether ``out`` (or, if it does not exist yet, its nearest existing parent) is writable;
    checked without writing anything."""
    path = Path(out)
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)


def run_suite(
    config: SuiteConfig,
    out: str | Path,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Validate, then execute and render every run (or only ``only``); write the index.

    With ``only``, the named runs execute and runs they come ``after`` are assumed done.
    """
    from .suite_index import write_index

    out = Path(out).resolve()
    check_writable(out)
    ordered = order_runs(config.runs)
    params = resolve_parameters(config, ordered, out)  # the whole config is checked, even with --only
    if only:
        missing = [n for n in only if n not in {r.name for r in ordered}]
        if missing:
            raise SuiteConfigError(f"--only {missing}: no such runs; runs: {[r.name for r in ordered]}")
        ordered = [r for r in ordered if r.name in only]
    results: list[RunResult] = []
    kept = _previous_results(out) if only else {}  # --only: the index still lists the other runs
    everything = order_runs(config.runs)
    bad: set[str] = set()
    t0 = time.perf_counter()
    for i, spec in enumerate(ordered, 1):
        blocked = [a for a in spec.after if a in bad]
        if blocked:
            res = RunResult(
                spec.name,
                str(spec.notebook),
                "skipped",
                parameters=params[spec.name],
                error=f"skipped: comes after failed run(s) {blocked}",
            )
        else:
            log(f"[{i}/{len(ordered)}] {spec.name} ({spec.notebook.name}) ...")
            try:
                res = execute_run(spec, params[spec.name], out, config)
            except OSError as exc:  # a full disk: stop here; the index already lists the finished runs
                raise _stopped(exc, spec, results) from None
        if res.status != "ok":
            bad.add(spec.name)
        log(
            f"[{i}/{len(ordered)}] {spec.name}: {res.status} ({res.seconds:.1f} s)"
            + (f": {res.error}" if res.error else "")
        )
        done = {r.name: r for r in [*results, res]}
        listed = [done.get(r.name) or kept.get(r.name) for r in everything]
        try:
            write_index([r for r in listed if r is not None], out, config, time.perf_counter() - t0)
        except OSError as exc:  # the previous index and runs.json stay, complete
            raise _stopped(exc, spec, results) from None
        results.append(res)
    return results


def _stopped(exc: OSError, spec: RunSpec, finished: list[RunResult]) -> Exception:
    """The error that stops a suite at ``spec``: a full disk with space needed/free, else ``exc``."""
    if not isinstance(exc, DiskFullError):
        if not is_disk_full(exc):
            return exc
        exc = DiskFullError(Path(exc.filename or "."), None, exc.strerror or "")
    names = ", ".join(r.name for r in finished) or "none"
    exc.args = (f"suite stopped at run {spec.name!r}: {exc} Runs finished, rendered and listed: {names}.",)
    return exc


def _previous_results(out: Path) -> dict[str, RunResult]:
    """Runs recorded in an earlier ``runs.json`` of the same output folder, by name."""
    path = out / "runs.json"
    if not path.exists():
        return {}
    fields = set(RunResult.__dataclass_fields__)
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        return {r["name"]: RunResult(**{k: v for k, v in r.items() if k in fields}) for r in runs}
    except (ValueError, KeyError, TypeError):
        return {}
