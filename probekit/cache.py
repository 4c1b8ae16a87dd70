"""An on-disk cache of analysis results, keyed by everything that determines them.

Feature stores make re-extraction free; this makes re-analysis free too, so a rerun of the
notebook suite with nothing changed only re-renders. A result is stored under a hash of its
inputs (feature-store names, which are content hashes themselves, the analysis parameters, the
seed) and of the probekit code that computes it: the module that defines the computation and
every probekit module it imports, directly or not (:func:`import_closure`). A change to the
data, the settings or that code computes afresh; a change elsewhere (charts, reports, the suite
runner, another analysis) keeps the result, so a long run survives edits that cannot change it.
Results live under ``data/cache/results/``; deleting it is always safe.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from .paths import data_dir

T = TypeVar("T")

PACKAGE_ROOT = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def code_version(module: str | None = None, root: Path = PACKAGE_ROOT) -> str:
    """Hash of the sources ``module`` runs (:func:`import_closure`); ``None``: every source of the package."""
    paths = (
        sorted(root.rglob("*.py"))
        if module is None
        else sorted(p for m in import_closure(module, root) if (p := _source(m, root)))
    )
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def import_closure(module: str, root: Path = PACKAGE_ROOT) -> set[str]:
    """``module`` and every module of the package it imports, directly or through others, with their
    parent packages (whose ``__init__`` runs on import). Read from the sources (imports inside
    functions included), so nothing is imported to find out."""
    package = root.name
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == package or name.startswith(package + ".")):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = _source(name, root)
        if path is not None:
            todo += _imports(name, path, root)
    return seen


def _source(module: str, root: Path) -> Path | None:
    """The file of ``module`` (``pkg.a.b`` -> ``root/a/b.py`` or ``root/a/b/__init__.py``), if any."""
    rel = Path(*module.split(".")[1:])
    for path in (root / rel.with_suffix(".py") if rel.parts else None, root / rel / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _imports(module: str, path: Path, root: Path) -> list[str]:
    """Modules named by the import statements of ``module`` (at ``path``), relative ones resolved;
    ``from x import y`` also yields ``x.y`` where that is a module."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[: len(here) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names if _source(f"{base}.{a.name}", root)]
    return out


def result_key(kind: str, inputs: dict[str, Any], module: str | None = None) -> str:
    """Content hash naming one result of the computation defined in ``module`` (``None``: the whole package)."""
    blob = json.dumps({"kind": kind, "code": code_version(module), **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached(kind: str, inputs: dict[str, Any], compute: Callable[[], T]) -> T:
    """``compute()``'s value, from the cache when these exact inputs were computed before by the same code.

    The code is that of the module defining ``compute`` and what it imports (module docstring); a
    ``compute`` defined outside probekit is keyed on the whole package. Set
    ``PROBEKIT_NO_RESULT_CACHE=1`` to always compute. A result that cannot be written (a full disk)
    is still returned, with a warning; an unreadable cache entry is computed again.
    """
    if os.environ.get("PROBEKIT_NO_RESULT_CACHE", "").strip() in ("1", "true", "yes"):
        return compute()
    module = getattr(compute, "__module__", None) or ""
    module = module if module.split(".")[0] == PACKAGE_ROOT.name else None
    path = data_dir() / "cache" / "results" / kind / f"{result_key(kind, inputs, module)}.pkl"
    if path.exists():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass  # a truncated or stale entry: compute it again
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError as exc:
        warnings.warn(
            f"could not cache the {kind} result in {path.parent} ({exc}); it was computed and is "
            "returned, but a rerun will compute it again",
            stacklevel=2,
        )
    return value
