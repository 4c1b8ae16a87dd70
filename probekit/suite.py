"""The notebook suite runner: a grid of (notebook, parameters) run with papermill, rendered to HTML.

A config (YAML) lists runs and shared defaults::

    out: reports                 # optional; --out wins
    timeout: 1800                # optional; seconds per cell
    env: {PROBEKIT_DATA: ...}    # optional; environment for every kernel
    executor: {kind: local, jobs: 2}  # optional; inline (default), local or slurm (probekit.suite_jobs)
    defaults: {seed: 0}          # given to every notebook that declares the parameter
                                 # (models: [a, b] instead of model: a makes a sweep, probekit.suite_sweep)
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
run finished before it stays rendered and listed. ``--check`` writes nothing. A run that finished ok
in an earlier run of the same output folder with the same fingerprint (notebook source, parameters,
kernel environment, probekit code) is kept, not run again, unless ``--rerun``. One run is executed by
:mod:`probekit.suite_execute`; with ``--executor local|slurm`` the runs go to submitit
(:mod:`probekit.suite_jobs`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .atomic import DiskFullError, is_disk_full
from .errors import ProbekitError
from .suite_execute import execute_run, new_result, prepare_input
from .suite_jobs import ExecutorOptions, executor_options
from .suite_runs import RunResult, RunSpec, SuiteConfig, SuiteConfigError
from .suite_sweep import MODELS, expand_runs, select, sweep_models


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
            f"env, defaults, executor); this file holds a {type(raw).__name__}"
        )
    unknown = set(raw) - {"out", "timeout", "env", "defaults", "runs", "executor"}
    if unknown:
        raise SuiteConfigError(
            f"{path}: unknown top-level keys {sorted(unknown)}; valid: out, timeout, env, defaults, runs, executor"
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
        if "/" in name:
            raise SuiteConfigError(
                f"{path}: run name {name!r} holds a '/'; a sweep names its runs <model>/<run> itself"
            )
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
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteConfigError(f"{path}: 'defaults' is a mapping of parameter: value; it holds {defaults!r}")
    executor = raw.get("executor") or {}
    executor_options(executor, where=f"{path}: executor")  # checked here: a typo fails before anything runs
    return SuiteConfig(
        path=path.resolve(),
        runs=runs,
        defaults=dict(defaults),
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        out=Path(out) if out else None,
        timeout=int(raw["timeout"]) if raw.get("timeout") else None,
        models=sweep_models(defaults, str(path)),
        executor=dict(executor) if isinstance(executor, dict) else {},
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


def notebook_parameters(nb_path: Path, work_dir: Path) -> dict[str, dict[str, Any]]:
    """The declared parameters of a notebook (``papermill.inspect_notebook``), by name."""
    import papermill as pm

    ipynb = prepare_input(nb_path, work_dir)
    return pm.inspect_notebook(str(ipynb))


def declared_parameters(runs: list[RunSpec], work: Path) -> dict[Path, dict[str, dict[str, Any]]]:
    """Each notebook's declared parameters, by notebook path (each notebook read once)."""
    declared: dict[Path, dict[str, dict[str, Any]]] = {}
    for r in runs:
        if r.notebook not in declared:
            declared[r.notebook] = notebook_parameters(r.notebook, work)
    return declared


def plan_runs(
    config: SuiteConfig, out: Path, work: Path | None = None
) -> tuple[list[RunSpec], dict[str, dict[str, Any]]]:
    """The runs to execute, in dependency order (a sweep's expanded per model), and their final
    parameters; every problem of the config raised at once (:func:`resolve_parameters`)."""
    work = out / ".inputs" if work is None else work
    declared = declared_parameters(config.runs, work)
    cross_model = {r.name for r in config.runs if MODELS in declared[r.notebook]} if config.models else set()
    runs = order_runs(expand_runs(config.runs, config.models, cross_model))
    return runs, resolve_parameters(config, runs, out, work, declared=declared)


def resolve_parameters(
    config: SuiteConfig,
    runs: list[RunSpec],
    out: Path,
    work: Path | None = None,
    declared: dict[Path, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Final parameters per run; raises one :class:`SuiteConfigError` listing every problem (unknown
    names, values of the wrong type or out of range). Notebooks are converted into ``work``
    (default ``<out>/.inputs``).

    A run's ``results_dir`` is ``<out>/results``, or ``<out>/<model folder>/results`` for a sweep's
    per-model run, which also gets its ``model``; ``defaults.models`` goes to the notebooks that
    declare ``models`` (the cross-model ones)."""
    work = out / ".inputs" if work is None else work
    declared = declared or declared_parameters(runs, work)
    problems: list[str] = []
    resolved: dict[str, dict[str, Any]] = {}
    for r in runs:
        valid = declared[r.notebook]
        unknown = [k for k in r.parameters if k not in valid]
        if unknown:
            problems.append(
                f"run {r.name!r} ({r.notebook.name}): unknown parameters {unknown}; "
                f"valid: {', '.join(_describe(p) for p in valid.values()) or 'none'}"
            )
        params = {k: v for k, v in config.defaults.items() if k in valid}
        if r.model is not None:
            params.pop(MODELS, None)
            if "model" in valid:
                params["model"] = r.model
        if "results_dir" in valid:
            params["results_dir"] = str((out / r.folder / "results").resolve())
        params.update(r.parameters)
        resolved[r.name] = params
        source = {
            **dict.fromkeys(config.defaults, "defaults"),
            "model": "defaults.models" if r.model is not None else "defaults",
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
    used = {k for r in runs for k in declared[r.notebook]}
    if config.models and used & {"model", MODELS}:
        used.add(MODELS)
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
    executor: ExecutorOptions | None = None,
    rerun: bool = False,
) -> list[RunResult]:
    """Validate, then execute and render every run (or only ``only``); write the index.

    With ``only``, the named runs execute and runs they come ``after`` are assumed done. ``executor``
    (default: the config's ``executor:`` section, else inline) runs them in this process or as submitit
    jobs (:mod:`probekit.suite_jobs`). A run that finished ok in an earlier run of the same output folder,
    with the same notebook, parameters and probekit code, is kept as it is unless ``rerun``.
    """
    from .suite_index import write_index

    out = Path(out).resolve()
    check_writable(out)
    options = executor or executor_options(config.executor, where=f"{config.path}: executor")
    everything, params = plan_runs(config, out)  # the whole config is checked, even with --only
    ordered = everything
    if only:
        picked = set(select(everything, only))
        ordered = [r for r in everything if r.name in picked]
    previous = _previous_results(out)
    kept = dict(previous) if only else {}  # --only: the index still lists the other runs
    results: dict[str, RunResult] = {}
    t0 = time.perf_counter()

    def record(res: RunResult) -> None:
        results[res.name] = res
        done = len(results)
        log(
            f"[{done}/{len(ordered)}] {res.name}: {res.status} ({res.seconds:.1f} s)"
            + (f": {res.error}" if res.error else "")
        )
        listed = [results.get(r.name) or kept.get(r.name) for r in everything]
        write_index([r for r in listed if r is not None], out, config, time.perf_counter() - t0)

    selected = {r.name for r in ordered}
    finished = {r.name: "ok" for r in everything if r.name not in selected}  # outside --only: assumed done
    to_run = []
    for spec in ordered:
        fingerprint = run_fingerprint(spec, params[spec.name], config)
        before = previous.get(spec.name)
        if not rerun and _still_good(before, fingerprint, out):
            log(
                f"{spec.name}: finished earlier with the same notebook, parameters and code: kept (--rerun runs it again)"
            )
            finished[spec.name] = "ok"
            record(before)
            continue
        to_run.append((spec, fingerprint))
    fingerprints = {spec.name: fingerprint for spec, fingerprint in to_run}
    if options.kind != "inline":
        from .suite_jobs import run_jobs

        def record_job(res: RunResult) -> None:
            res.fingerprint = fingerprints.get(res.name, "") if res.status == "ok" else ""
            record(res)

        run_jobs(
            [s for s, _ in to_run],
            params,
            out,
            config,
            options,
            finished=finished,
            record=record_job,
            log=log,
        )
        return [results[r.name] for r in ordered if r.name in results]
    bad: set[str] = {name for name, status in finished.items() if status != "ok"}
    for spec, fingerprint in to_run:
        blocked = [a for a in spec.after if a in bad]
        if blocked:
            res = new_result(
                spec, params[spec.name], "skipped", error=f"skipped: comes after failed run(s) {blocked}"
            )
        else:
            log(f"[{len(results) + 1}/{len(ordered)}] {spec.name} ({spec.notebook.name}) ...")
            try:
                res = execute_run(spec, params[spec.name], out, config)
            except OSError as exc:  # a full disk: stop here; the index already lists the finished runs
                raise _stopped(exc, spec, list(results.values())) from None
        res.job = "inline"
        if res.status != "ok":
            bad.add(spec.name)
        else:
            res.fingerprint = fingerprint
        try:
            record(res)
        except OSError as exc:  # the previous index and runs.json stay, complete
            raise _stopped(exc, spec, list(results.values())) from None
    return [results[r.name] for r in ordered]


def _still_good(before: RunResult | None, fingerprint: str, out: Path) -> bool:
    """Whether an earlier run's record can stand: ok, the same fingerprint, and its page still there."""
    return bool(
        before
        and before.status == "ok"
        and before.fingerprint == fingerprint
        and before.html
        and (out / before.html).is_file()
    )


def run_fingerprint(spec: RunSpec, params: dict[str, Any], config: SuiteConfig) -> str:
    """What a run's outcome depends on: the notebook's source, its parameters, the kernels' environment
    and probekit's code. A finished run with the same fingerprint is not run again."""
    import hashlib

    from .cache import code_version

    h = hashlib.sha256(spec.notebook.read_bytes())
    h.update(json.dumps([params, config.env, code_version()], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


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
