"""The house rules that hold the package's shape, checked on its import graph (read with ``ast``).

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``. No module may
reach itself through imports, and the libraries (shift measures, probes, the feature store, sites,
extraction) never reach a study or the dataset registry: studies orchestrate, libraries compute.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "probekit"
LIBRARIES = ("probekit.shift", "probekit.probes", "probekit.store", "probekit.sites", "probekit.extract")
FORBIDDEN = ("probekit.studies", "probekit.data.registry")  # probekit.data's __init__ imports the registry


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The probekit modules ``name`` imports anywhere in its file (``from x import y`` counts ``x.y``
    when ``y`` is a module, else ``x``)."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        found |= {m for t in targets if t.startswith("probekit") and (m := known(t)) is not None}
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module importing ``start`` runs, with the module that imported it. Importing
    ``a.b.c`` also runs the packages ``a`` and ``a.b``."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        nexts = set(graph[node])
        for target in list(nexts):
            parts = target.split(".")
            nexts |= {".".join(parts[:i]) for i in range(1, len(parts))}
        for target in nexts:
            if target not in seen and target != start:
                seen[target] = node
                todo.append(target)
    return seen


def test_the_graph_reads_function_level_imports() -> None:
    graph = import_graph()
    assert "probekit.pipeline" in graph["probekit.studies.shift"]
    assert "probekit.models.build" in graph["probekit.models.embedded"]  # imported inside a function


def test_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def test_libraries_never_reach_a_study_or_the_dataset_registry() -> None:
    graph = import_graph()
    libraries = [m for m in graph if m.startswith(LIBRARIES)]
    assert "probekit.shift.table" in libraries and "probekit.extract" in libraries
    bad = {}
    for lib in libraries:
        reached = _reachable(graph, lib)
        for forbidden in FORBIDDEN:
            hits = [m for m in reached if m == forbidden or m.startswith(forbidden + ".")]
            if hits:
                path, node = [hits[0]], hits[0]
                while node in reached and reached[node] != lib:
                    node = reached[node]
                    path.append(node)
                bad[lib] = " <- ".join(path + [lib])
    assert not bad, bad


def test_the_cycle_check_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
