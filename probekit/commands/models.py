"""``probekit models``: the models probekit can load, the embedded default marked."""

from __future__ import annotations

import argparse

from ..assets import format_table
from ..models import list_models

NAME = "models"
HELP = "list the models probekit can load (the embedded offline default is marked *)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", help="glob over timm names, e.g. 'vit_base*dinov2*'")
    parser.add_argument("--all", action="store_true", help="list every timm ViT-family pretrained tag")


def run(args: argparse.Namespace) -> int:
    rows = list_models(args.pattern, include_hub=bool(args.all or args.pattern))
    print(format_table(rows))
    if not (args.all or args.pattern):
        print(
            "\n* embedded, works offline. Any timm ViT-family name also loads (hub weights when online, "
            "or --weights FILE); `probekit models --all` or `probekit models 'vit_base*'` lists them."
        )
    return 0
