"""The suite's records: a parsed config, its runs, and what happened to each (``runs.json``).

A leaf module: :mod:`probekit.suite` builds these records and :mod:`probekit.suite_index` renders
them, and neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunSpec:
    """One (notebook, parameters) cell of the grid."""

    name: str
    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)


@dataclass
class SuiteConfig:
    """A parsed suite config; paths resolved."""

    path: Path
    runs: list[RunSpec]
    defaults: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    out: Path | None = None
    timeout: int | None = None


@dataclass
class RunResult:
    """What happened to one run; one row of the index and of ``runs.json``."""

    name: str
    notebook: str
    status: str  # "ok", "failed" or "skipped"
    seconds: float = 0.0  # papermill execution
    render_seconds: float = 0.0  # HTML export
    started: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    html: str | None = None
    ipynb: str | None = None
    error: str | None = None
    model: str | None = None
    datasets: list[str] = field(default_factory=list)
    headlines: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)


def results_as_dicts(results: list[RunResult]) -> list[dict[str, Any]]:
    """The results as plain dicts (for ``runs.json``)."""
    return [asdict(r) for r in results]
