"""``probekit suite``: run a grid of notebooks with papermill and render offline HTML reports."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "suite"
HELP = "run the notebooks of a suite config (papermill), render HTML reports and reports/index.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="suite config YAML (see configs/smoke.yaml)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this run (repeatable): a run's name in the config (for every model of a sweep) "
        "or a sweep's MODEL/NAME; runs it comes after are assumed done",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the config's 'out', else reports/)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config and every parameter's name, type and range; run and write nothing",
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="run every run again, also those that finished ok with the same notebook, parameters and code",
    )
    jobs = parser.add_argument_group(
        "executor", "where the runs execute (default: the config's 'executor:' section, else inline)"
    )
    jobs.add_argument(
        "--executor",
        choices=["inline", "local", "slurm"],
        default=None,
        help="inline: one after another in this process; local: parallel submitit processes on this "
        "machine; slurm: one SLURM job per run (submitit)",
    )
    jobs.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="most jobs at once (local: default 2)"
    )
    jobs.add_argument("--partition", default=None, help="slurm: partition")
    jobs.add_argument(
        "--gpus", type=int, default=None, metavar="N", help="GPUs per job (slurm: --gpus-per-node)"
    )
    jobs.add_argument(
        "--cpus", type=int, default=None, metavar="N", help="slurm: CPUs per job (--cpus-per-task)"
    )
    jobs.add_argument("--time", type=int, default=None, metavar="MIN", help="minutes per job (default 24 h)")


def _executor(args: argparse.Namespace, config):
    from ..suite_jobs import executor_options

    overrides = {
        "kind": args.executor,
        "jobs": args.jobs,
        "partition": args.partition,
        "gpus": args.gpus,
        "cpus": args.cpus,
        "time": args.time,
    }
    return executor_options(
        config.executor, overrides, where=f"{args.config}: executor (config and command line)"
    )


def run(args: argparse.Namespace) -> int:
    from ..suite import SuiteOutputError, check_writable, load_config, plan_runs, run_suite, writable

    config = load_config(args.config)
    executor = _executor(args, config)
    if args.check:  # writes nothing: the notebooks are converted in a scratch folder
        import tempfile

        out = (args.out or config.out or Path("reports")).resolve()
        with tempfile.TemporaryDirectory(prefix="probekit-check-") as scratch:
            runs, _ = plan_runs(config, out, work=Path(scratch))
        if (args.out or config.out) and not writable(out):
            raise SuiteOutputError(
                f"{args.config}: parameters valid, but the output folder {out} is not writable; "
                "give a writable folder with --out (or 'out:' in the config)"
            )
        sweep = f" ({len(config.models)} models x {len(config.runs)} notebooks)" if config.models else ""
        print(
            f"{args.config}: {len(runs)} runs{sweep}; every parameter name, type and range valid; "
            f"executor {executor.describe()}"
        )
        return 0
    if args.out or config.out:
        out = (args.out or config.out).resolve()
        check_writable(out)
    else:
        from ..paths import reports_dir

        out = reports_dir().resolve()
    results = run_suite(config, out, only=args.only, executor=executor, rerun=args.rerun)
    failed = [r.name for r in results if r.status != "ok"]
    print(f"index: {out / 'index.html'}")
    if failed:
        print(f"not ok: {', '.join(failed)}")
    return 1 if failed else 0
