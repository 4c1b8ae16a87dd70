"""``probekit suite``: run a grid of notebooks with papermill and render offline HTML reports."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "suite"
HELP = "run the notebooks of a suite config (papermill), render HTML reports and reports/index.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="suite config YAML (see configs/smoke.yaml)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this run (repeatable); runs it comes after are assumed done")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the config's 'out', else reports/)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and every parameter name, run nothing")


def run(args: argparse.Namespace) -> int:
    from ..paths import reports_dir
    from ..suite import load_config, order_runs, resolve_parameters, run_suite

    config = load_config(args.config)
    out = (args.out or config.out or reports_dir()).resolve()
    if args.check:
        resolve_parameters(config, order_runs(config.runs), out)
        print(f"{args.config}: {len(config.runs)} runs, every parameter name valid")
        return 0
    results = run_suite(config, out, only=args.only)
    failed = [r.name for r in results if r.status != "ok"]
    print(f"index: {out / 'index.html'}")
    if failed:
        print(f"not ok: {', '.join(failed)}")
    return 1 if failed else 0
