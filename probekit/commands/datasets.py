"""``probekit datasets``: list the dataset registry with availability, sizes and class counts."""

from __future__ import annotations

import argparse
import json

from ..assets import format_table

NAME = "datasets"
HELP = "list the registered datasets: availability, size, classes, and how to get missing ones"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="where torchvision datasets live (default: data dir)")
    parser.add_argument("--available", action="store_true", help="only datasets present on this machine")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..data import CORRUPTIONS, list_datasets

    rows = list_datasets(root=args.root)
    if args.available:
        rows = [r for r in rows if r["available"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        {
            "id": r["id"],
            "kind": r["kind"],
            "classes": str(r["classes"]),
            "size": str(r["size"]),
            "here": "yes" if r["available"] else "no",
            "source / how to get it": r["source"] if r["available"] else r["how"],
        }
        for r in rows
    ]
    print(format_table(table))
    print(
        "\nAlso: folder:/path/to/images (one sub-folder per class). Add +<corruption>@<1-5> to any id "
        f"for a shifted copy; corruptions: {', '.join(CORRUPTIONS)} (e.g. emoji+gaussian_noise@3)."
    )
    return 0
