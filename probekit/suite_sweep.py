"""A sweep: one suite config run for several models (``defaults.models: [a, b, ...]``).

Every run of the config becomes one run per model, named ``<model folder>/<run>`` and written under
``<out>/<model folder>/`` (its page, ``executed/`` notebook, ``results/`` tables and job logs;
:func:`probekit.paths.model_folder` names the folder), with the model given as the notebook's ``model``
parameter; ``after:`` links the runs of the same model. A *cross-model* run (a notebook that declares a
``models`` parameter, such as ``notebooks/07_models.py``) runs once, at the top of the output, after
every model's runs it names in ``after:``, and is given the list. Feature stores are keyed by model and
weights, so each (model, dataset) is extracted once and shared by that model's notebooks, as before.

A config with a single ``model`` is not a sweep: its runs, names and paths are unchanged.
"""

from __future__ import annotations

from typing import Any

from .paths import model_folder
from .suite_runs import RunSpec, SuiteConfigError

MODELS = "models"  # the defaults key (and the cross-model notebooks' parameter) naming a sweep's models


def sweep_models(defaults: dict[str, Any], where: str) -> list[str]:
    """The models of ``defaults.models`` (empty when the config names one ``model`` or none), checked:
    a non-empty list of distinct names with distinct folders, and not together with ``model``."""
    if MODELS not in defaults:
        return []
    models = defaults[MODELS]
    if "model" in defaults:
        raise SuiteConfigError(
            f"{where}: defaults name both 'model' ({defaults['model']!r}) and 'models' ({models!r}); "
            "give one model as 'model: NAME', or a sweep as 'models: [NAME, ...]'"
        )
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models:
        raise SuiteConfigError(
            f"{where}: defaults.models is {models!r}; a sweep needs a non-empty list of model names, "
            "e.g. models: [dinov2_vits14, random:dinov2_vits14]"
        )
    bad = [m for m in models if not isinstance(m, str) or not m.strip()]
    if bad:
        raise SuiteConfigError(f"{where}: defaults.models holds {bad!r}; every entry is a model name (text)")
    folders: dict[str, str] = {}
    for m in models:
        try:
            folder = model_folder(m)
        except ValueError as err:
            raise SuiteConfigError(f"{where}: {err}") from None
        if folder in folders:
            same = (
                "appears twice"
                if folders[folder] == m
                else f"and {folders[folder]!r} share the folder {folder!r}"
            )
            raise SuiteConfigError(f"{where}: defaults.models: {m!r} {same}; give each model once")
        folders[folder] = m
    return list(models)


def expand_runs(runs: list[RunSpec], models: list[str], cross_model: set[str]) -> list[RunSpec]:
    """The runs of a sweep: each run not in ``cross_model`` once per model (model by model, in the
    config's order), then the cross-model runs; ``after:`` names rewritten to the expanded runs."""
    if not models:
        return runs
    per_model = [r for r in runs if r.name not in cross_model]
    for r in per_model:
        if "model" in r.parameters:
            raise SuiteConfigError(
                f"run {r.name!r} sets 'model: {r.parameters['model']}', but the config is a sweep over "
                f"defaults.models {models}; drop it from the run (each run goes once per model)"
            )
    expanded = []
    for m in models:
        folder = model_folder(m)
        for r in per_model:
            after = [a if a in cross_model else f"{folder}/{a}" for a in r.after]
            expanded.append(RunSpec(f"{folder}/{r.name}", r.notebook, dict(r.parameters), after, m, folder))
    for r in runs:
        if r.name in cross_model:
            after = [
                x
                for a in r.after
                for x in ([a] if a in cross_model else [f"{model_folder(m)}/{a}" for m in models])
            ]
            expanded.append(RunSpec(r.name, r.notebook, dict(r.parameters), after))
    return expanded


def select(runs: list[RunSpec], only: list[str]) -> list[str]:
    """The names ``--only`` picks: a run's full name (``dinov2_vits14/layerwise``), or its name in the
    config (``layerwise``: that run for every model). Unknown names are an error listing the valid ones."""
    picked, missing = [], []
    for name in only:
        hits = [r.name for r in runs if name in (r.name, r.short_name)]
        if hits:
            picked.extend(hits)
        else:
            missing.append(name)
    if missing:
        raise SuiteConfigError(f"--only {missing}: no such runs; runs: {[r.name for r in runs]}")
    return picked
