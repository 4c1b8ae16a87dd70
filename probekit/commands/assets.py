"""``probekit assets``: provision the offline assets and show where each one is."""

from __future__ import annotations

import argparse

from ..assets import all_assets, asset_table, format_table, provision

NAME = "assets"
HELP = "provision the offline assets (idempotent) and print where each one is"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only report, change nothing")
    parser.add_argument(
        "--required-only", action="store_true", help="only what the embedded default model needs"
    )


def run(args: argparse.Namespace) -> int:
    assets = [a for a in all_assets() if a.required or not args.required_only]
    if not args.check:
        for asset, outcome in provision(assets):
            if outcome not in ("present",):
                print(f"{asset.name}: {outcome}")
    print(format_table(asset_table(assets)))
    missing_required = [a.name for a in assets if a.required and a.locate() is None]
    return 1 if missing_required else 0
