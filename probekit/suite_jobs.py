"""Scale-out of a suite on submitit: its runs as parallel local processes or as SLURM jobs.

``probekit suite CONFIG --executor local|slurm`` (``inline``, the default, runs every notebook in this
process, one after another). With a submitit executor each run is one job that executes
:func:`probekit.suite_execute.execute_run` (papermill, then the HTML page) and returns its
:class:`RunResult`; this process only submits and waits, in dependency waves: a run is submitted once
every run it comes ``after`` has finished ok (a sweep's models are independent of each other, and so are
notebooks whose dependencies are met), at most ``jobs`` at a time. Nothing here schedules beyond that.

- ``local``: :class:`submitit.LocalExecutor`, parallel processes on this machine (``--jobs N``, default
  2). Each job gets ``OMP_NUM_THREADS`` = cores / jobs unless the environment sets it, so N jobs do not
  fight over the cores; GPUs the parent sees stay visible.
- ``slurm``: :class:`submitit.SlurmExecutor`, one ``sbatch`` job per run with the partition, GPUs, CPUs,
  time and memory of the config's ``executor:`` section or the command line (:func:`slurm_parameters`).
  Extraction inside a job may still shard with ``torchrun`` as elsewhere.

Job logs (submitit's ``<job id>_0_log.out`` / ``.err``) go to ``logs/<run>/`` beside the run's page and
are linked from the index. A job that fails before its notebook rendered (killed, out of memory) is
rendered as a failed report saying so; ``Ctrl-C`` cancels every submitted job and records them as
failed; a rerun skips the runs already finished with the same notebook, parameters and code.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProbekitError
from .suite_execute import execute_run, new_result, render_failed_run, run_folder
from .suite_runs import RunResult, RunSpec, SuiteConfig, SuiteConfigError

EXECUTORS = ("inline", "local", "slurm")
DEFAULT_LOCAL_JOBS = 2
POLL_SECONDS = 1.0
# the `executor:` section's keys, each with its type; `kind` and `jobs` apply to every executor
OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "jobs": int,
    "partition": str,
    "gpus": int,
    "cpus": int,
    "time": int,
    "mem_gb": (int, float),
    "account": str,
    "qos": str,
    "constraint": str,
    "setup": list,
    "additional": dict,
}


class ExecutorError(ProbekitError, RuntimeError):
    """An executor that cannot run here: submitit missing, no SLURM on this machine."""


@dataclass
class ExecutorOptions:
    """How a suite's runs are executed (the config's ``executor:`` section, then the command line)."""

    kind: str = "inline"  # inline, local or slurm
    jobs: int | None = None  # most jobs at once: local default 2; slurm: no limit
    partition: str | None = None  # slurm: --partition
    gpus: int | None = None  # per job: slurm --gpus-per-node; local: GPUs visible to each job
    cpus: int | None = None  # slurm: --cpus-per-task
    time: int | None = None  # minutes per job (slurm --time; local: the job's timeout); default 24 h
    mem_gb: float | None = None  # slurm: --mem
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, conda activate)
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, as submitit names them

    def describe(self) -> str:
        """One line for the log: the executor and its non-default options."""
        given = {k: v for k, v in asdict(self).items() if k != "kind" and v not in (None, [], {})}
        return self.kind + (" (" + ", ".join(f"{k}={v}" for k, v in given.items()) + ")" if given else "")


def executor_options(
    section: Any, overrides: dict[str, Any] | None = None, where: str = "executor"
) -> ExecutorOptions:
    """The options of a config's ``executor:`` section with command-line ``overrides`` (None: not
    given) on top; unknown keys, unknown executors and values of the wrong type are errors."""
    if not isinstance(section, dict):
        raise SuiteConfigError(
            f"{where}: expected a mapping such as {{kind: slurm, partition: gpu, gpus: 1, time: 120}}; "
            f"got {section!r}"
        )
    merged = {**section, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(merged) - set(OPTION_TYPES))
    if unknown:
        raise SuiteConfigError(f"{where}: unknown keys {unknown}; valid: {', '.join(OPTION_TYPES)}")
    for key, value in merged.items():
        kind = OPTION_TYPES[key]
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise SuiteConfigError(
                f"{where}: {key} = {value!r}; expected {getattr(kind, '__name__', 'a number')}"
            )
    options = ExecutorOptions(**merged)
    if options.kind not in EXECUTORS:
        raise SuiteConfigError(
            f"{where}: unknown executor {options.kind!r}; choose one of {', '.join(EXECUTORS)}"
        )
    for key in ("jobs", "gpus", "cpus", "time"):
        value = getattr(options, key)
        if value is not None and value < (0 if key == "gpus" else 1):
            raise SuiteConfigError(f"{where}: {key} = {value}; give a positive number")
    if options.kind == "inline" and (options.jobs or 1) > 1:
        raise SuiteConfigError(
            f"{where}: jobs = {options.jobs} with the inline executor, which runs one notebook at a time "
            "in this process; use --executor local (or slurm) to run jobs in parallel"
        )
    return options


def slurm_parameters(options: ExecutorOptions, job_name: str) -> dict[str, Any]:
    """The parameters of :class:`submitit.SlurmExecutor` (its names: ``partition``, ``gpus_per_node``,
    ``time`` in minutes, ...) for one job; what the generated sbatch script says."""
    params: dict[str, Any] = {"job_name": job_name, "time": options.time or 24 * 60, "nodes": 1}
    params["ntasks_per_node"] = 1
    for ours, theirs in (
        ("partition", "partition"),
        ("gpus", "gpus_per_node"),
        ("cpus", "cpus_per_task"),
        ("account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if getattr(options, ours) is not None:
            params[theirs] = getattr(options, ours)
    if options.mem_gb is not None:
        params["mem"] = f"{options.mem_gb:g}GB"
    if options.setup:
        params["setup"] = list(options.setup)
    if options.additional:
        params["additional_parameters"] = dict(options.additional)
    return params


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ExecutorError(
            "--executor local/slurm runs the notebooks as submitit jobs, and submitit is not installed: "
            "`python -m pip install submitit` (a probekit dependency; `make venv` installs it)"
        ) from None
    return submitit


def make_executor(options: ExecutorOptions, folder: Path, job_name: str):
    """A submitit executor for one run whose logs go to ``folder``."""
    submitit = _submitit()
    if options.kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.time or 24 * 60, **_local_gpus(options))
        return executor
    if options.kind == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ExecutorError(
                f"--executor slurm needs SLURM's {' and '.join(missing)} on PATH, and this machine has "
                "none: run the suite on a cluster's login node, or use --executor local here"
            )
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(options, job_name))
        return executor
    raise ExecutorError(f"no submitit executor for {options.kind!r}")


def _local_gpus(options: ExecutorOptions) -> dict[str, Any]:
    """LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it is asked for (none by default): ask for
    the ones this process sees, so a local job uses the GPU like an inline run does."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if options.gpus is not None:
        return {"gpus_per_node": options.gpus}
    if visible is not None:
        devices = [int(d) for d in visible.split(",") if d.strip().isdigit()]
        return {"gpus_per_node": len(devices), "visible_gpus": devices} if devices else {}
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus_per_node": count} if count else {}


def job_environment(options: ExecutorOptions) -> dict[str, str]:
    """Environment for each job's kernel: a local job's share of the cores as its thread count."""
    if options.kind != "local":
        return {}
    threads = str(max(1, (os.cpu_count() or 1) // (options.jobs or DEFAULT_LOCAL_JOBS)))
    return {k: threads for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k not in os.environ}


def run_job(
    spec: RunSpec, params: dict[str, Any], out: Path, config: SuiteConfig, env: dict[str, str]
) -> RunResult:
    """What one job runs: the notebook with its cell outputs logged as they come, then its page."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", force=True)
    print(f"probekit job: {spec.name} ({spec.notebook.name}) on {os.uname().nodename}", flush=True)
    result = execute_run(spec, params, out, config, extra_env=env, log_output=True)
    print(f"probekit job: {spec.name}: {result.status} ({result.seconds:.1f} s)", flush=True)
    return result


def run_jobs(
    runs: list[RunSpec],
    params: dict[str, dict[str, Any]],
    out: Path,
    config: SuiteConfig,
    options: ExecutorOptions,
    *,
    finished: dict[str, str],
    record: Callable[[RunResult], None],
    log: Callable[[str], None] = print,
) -> None:
    """Submit ``runs`` (in dependency order) as submitit jobs in waves and ``record`` each result as it
    comes. ``finished`` maps runs already done (kept from an earlier run, or outside ``--only``) to
    their status; a run after a failed one is recorded as skipped."""
    limit = options.jobs or (DEFAULT_LOCAL_JOBS if options.kind == "local" else len(runs) or 1)
    env = job_environment(options)
    status = dict(finished)
    pending = list(runs)
    running: dict[str, tuple[RunSpec, Any, float]] = {}
    log(f"executor: {options.describe()}; {len(runs)} runs, at most {limit} at a time")
    try:
        while pending or running:
            for spec in list(pending):
                bad = [a for a in spec.after if status.get(a) not in (None, "ok")]
                if bad:
                    pending.remove(spec)
                    status[spec.name] = "skipped"
                    skipped = new_result(spec, params[spec.name], "skipped")
                    skipped.error = f"skipped: comes after failed run(s) {bad}"
                    record(skipped)
                elif all(status.get(a) == "ok" for a in spec.after) and len(running) < limit:
                    pending.remove(spec)
                    running[spec.name] = (
                        spec,
                        _submit(spec, params[spec.name], out, config, options, env),
                        time.time(),
                    )
                    job = running[spec.name][1]
                    log(
                        f"submitted {spec.name} as {options.kind} job {job.job_id} (log: {_rel(job.paths.stdout, out)})"
                    )
            done = [name for name, (_, job, _) in running.items() if job.done()]
            for name in done:
                spec, job, t0 = running.pop(name)
                result = _collect(spec, params[spec.name], job, out, options, time.time() - t0)
                status[name] = result.status
                record(result)
            if not done:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for spec, job, t0 in running.values():
            job.cancel(check=False)
            log(f"cancelled {spec.name} ({options.kind} job {job.job_id})")
            result = new_result(
                spec, params[spec.name], "failed", error="cancelled (Ctrl-C)", seconds=time.time() - t0
            )
            record(_with_logs(render_failed_run(result, spec, out), job, out, options))
        raise


def _submit(
    spec: RunSpec, params: dict[str, Any], out: Path, config: SuiteConfig, options: ExecutorOptions, env
):
    folder = run_folder(spec, out) / "logs" / spec.short_name
    executor = make_executor(options, folder, job_name=f"probekit-{spec.name.replace('/', '-')}")
    return executor.submit(run_job, spec, params, out, config, env)


def _collect(
    spec: RunSpec, params: dict[str, Any], job, out: Path, options: ExecutorOptions, seconds: float
) -> RunResult:
    """The job's :class:`RunResult`, or a failed one (rendered) when the job died without one."""
    try:
        result = job.result()
    except Exception as exc:  # noqa: BLE001  (the job raised, was killed or timed out: a failed run)
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else type(exc).__name__
        result = new_result(
            spec,
            params,
            "failed",
            seconds=seconds,
            error=f"{options.kind} job {job.job_id} failed: {why[:500]}",
        )
        result = render_failed_run(result, spec, out)
    return _with_logs(result, job, out, options)


def _with_logs(result: RunResult, job, out: Path, options: ExecutorOptions) -> RunResult:
    result.job = f"{options.kind} job {job.job_id}"
    result.logs = [_rel(p, out) for p in (job.paths.stdout, job.paths.stderr) if Path(p).exists()]
    return result


def _rel(path: Path, out: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(out))
    except ValueError:
        return str(path)
