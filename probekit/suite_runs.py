"""The suite's records: a parsed config, its runs, and what happened to each (``runs.json``).

A leaf module: :mod:`probekit.suite` builds these records and :mod:`probekit.suite_index` renders
them, and neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProbekitError


class SuiteConfigError(ProbekitError, ValueError):
    """A suite config that cannot run: unknown parameters, notebooks, dependencies, models, executor."""


@dataclass
class RunSpec:
    """One (notebook, parameters) cell of the grid.

    In a sweep (``defaults.models``) each run of the config becomes one run per model, named
    ``<model folder>/<run>`` and written under that folder of the output (:func:`probekit.paths.model_folder`);
    a cross-model run (a notebook that declares ``models``) runs once, at the top.
    """

    name: str
    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    model: str | None = (
        None  # the sweep's model this run is for; None outside a sweep and for cross-model runs
    )
    folder: str = ""  # sub-folder of the output for its page, executed notebook, tables and job logs

    @property
    def short_name(self) -> str:
        """The run's name in the config (``layerwise`` for ``dinov2_vits14/layerwise``)."""
        return self.name.rsplit("/", 1)[-1]


@dataclass
class SuiteConfig:
    """A parsed suite config; paths resolved."""

    path: Path
    runs: list[RunSpec]
    defaults: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    out: Path | None = None
    timeout: int | None = None
    models: list[str] = field(default_factory=list)  # defaults.models: a sweep; empty: one model, as before
    executor: dict[str, Any] = field(default_factory=dict)  # the config's `executor:` section (suite_jobs)


@dataclass
class RunResult:
    """What happened to one run; one row of the index and of ``runs.json``."""

    name: str
    notebook: str
    status: str  # "ok", "failed" or "skipped"
    folder: str = ""  # the run's sub-folder of the output (a sweep's model folder)
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
    logs: list[str] = field(default_factory=list)  # job logs (submitit executors), relative to the output
    job: str = ""  # "inline", or "<executor> job <id>"
    fingerprint: str = ""  # notebook, parameters and code: an ok run with the same one is not run again


def results_as_dicts(results: list[RunResult]) -> list[dict[str, Any]]:
    """The results as plain dicts (for ``runs.json``)."""
    return [asdict(r) for r in results]
