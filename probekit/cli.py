"""The ``probekit`` console command.

Each subcommand is one module in :mod:`probekit.commands` that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; this file only discovers and dispatches.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import shlex
import sys

from . import __version__, commands
from .errors import ProbekitError


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probekit",
        description="Find the ViT layer and module with the best frozen features for your data.",
    )
    parser.add_argument("--version", action="version", version=f"probekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "probekit " + shlex.join(a for a in argv if a != "--debug")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("PROBEKIT_DEBUG") == "1"
    try:
        return int(args._run(args) or 0)
    except ProbekitError as exc:
        if debug:
            raise
        print(f"probekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"probekit {args.command}: interrupted; work already written is kept.", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"probekit {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(
            f"probekit {args.command}: unexpected error: {type(exc).__name__}: {str(exc)[:500]}\n"
            f"Results written before it are kept. Rerun with --debug for the traceback, and please report it.",
            file=sys.stderr,
        )
        return 1


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: which file, what happened, what to do."""
    target = getattr(exc, "filename2", None) or exc.filename
    where = f" ({target})" if target else ""
    fixes = {
        errno.ENOSPC: "the disk is full: free space there or write to another disk",
        errno.EDQUOT: "the disk quota is exhausted: free space or write elsewhere",
        errno.EROFS: "that file system is read-only: choose a writable folder",
        errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
        errno.EPERM: "operation not permitted: choose a folder you own",
        errno.ENOENT: "no such file or folder: check the path",
        errno.EISDIR: "a folder is in the way of a file: remove or rename the folder",
        errno.ENOTDIR: "a file is in the way of a folder: remove or rename the file",
    }
    fix = fixes.get(exc.errno or -1, "check the path and the disk")
    return f"{exc.strerror or exc}{where}: {fix}"


if __name__ == "__main__":
    sys.exit(main())
