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
        help="run only this run (repeatable); runs it comes after are assumed done",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the config's 'out', else reports/)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config and every parameter's name, type and range; run and write nothing",
    )


def run(args: argparse.Namespace) -> int:
    from ..suite import (
        SuiteOutputError,
        check_writable,
        load_config,
        order_runs,
        resolve_parameters,
        run_suite,
        writable,
    )

    config = load_config(args.config)
    if args.check:  # writes nothing: the notebooks are converted in a scratch folder
        import tempfile

        out = (args.out or config.out or Path("reports")).resolve()
        with tempfile.TemporaryDirectory(prefix="probekit-check-") as scratch:
            resolve_parameters(config, order_runs(config.runs), out, work=Path(scratch))
        if (args.out or config.out) and not writable(out):
            raise SuiteOutputError(
                f"{args.config}: parameters valid, but the output folder {out} is not writable; "
                "give a writable folder with --out (or 'out:' in the config)"
            )
        print(f"{args.config}: {len(config.runs)} runs; every parameter name, type and range valid")
        return 0
    if args.out or config.out:
        out = (args.out or config.out).resolve()
        check_writable(out)
    else:
        from ..paths import reports_dir

        out = reports_dir().resolve()
    results = run_suite(config, out, only=args.only)
    failed = [r.name for r in results if r.status != "ok"]
    print(f"index: {out / 'index.html'}")
    if failed:
        print(f"not ok: {', '.join(failed)}")
    return 1 if failed else 0
