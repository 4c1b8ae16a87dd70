# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Across models: do the papers' findings hold for every backbone?
#
# The tables each model's notebooks wrote, side by side: paper 2's Table 1 (the gain of each fusion
# method over the CLS-last linear probe, per model and dataset, and its mean over datasets with a
# bootstrap interval), then paper 1's findings per model (does the best layer move shallower, and the
# best site's gain grow, with shift; which site wins under weak and strong shift). A sweep
# (`defaults.models` in a suite config) runs this once, after every model's notebooks; with one model
# it shows that model alone.

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
models: list = []  # models to compare (a sweep passes its defaults.models); empty means every model whose tables are found
shift_measure: str = "mmd_rbf"  # measure of notebook 01 used as the shift score (mmd_rbf is unbiased, so comparable across datasets)
seed: int = 0  # seeds the bootstrap intervals over datasets
results_dir: str = ""  # folder for this notebook's tables; each model's are read from its sweep folder beside it, or from here (one model)
# fmt: on

# %%
from IPython.display import Markdown

from probekit import charts, report
from probekit.studies import models as across

info = report.run_info(report.notebook_parameters(globals()), seed)
folders = across.model_results_dirs(results_dir or report.default_results_dir(), models)
compared = list(folders)
gains, no_gains = across.fusion_gains(folders)
table1 = across.table1(gains, seed=seed)
correlations, per_dataset, no_findings = across.shift_findings(folders, measure=shift_measure, seed=seed)
sites = across.sites_by_shift(folders, measure=shift_measure)

# %% [markdown]
# ## Findings

# %%
across.record_headlines(compared, table1, correlations)
Markdown(
    "\n".join(
        f"- {line}" for line in across.findings(compared, table1, correlations, sites, no_gains, no_findings)
    )
)

# %% [markdown]
# ## Paper 2's Table 1: gain over the CLS-last linear probe
#
# Per model and fusion method, the mean over datasets of the test balanced-accuracy gain over the
# linear probe on the last layer's CLS token, with a 95% bootstrap interval over datasets.

# %%
report.save_table(table1, across.TABLE1_TABLE, results_dir or None)
table1.pivot_table(index="model", columns="method", values="value", sort=False).round(3) if len(
    table1
) else Markdown("No model has notebook 04's gains table.")

# %%
charts.ranked_bars_with_ci(
    table1, category="model", color="method", title="Mean gain over CLS-last per model (95% CI over datasets)"
) if len(table1) else Markdown("No gains to chart.")

# %% [markdown]
# Attentive layer fusion (ALF) per dataset (rows: models), as in paper 2's per-dataset table.

# %%
across.gains_by_dataset(gains)

# %%
charts.ranked_bars_with_ci(
    gains[gains["method"] == across.HEADLINE_METHOD],
    category="dataset",
    color="model",
    title="ALF gain over CLS-last per dataset (paired 95% CI)",
) if len(gains) else Markdown("No gains to chart.")

# %% [markdown]
# ## Paper 1 per model: shift against the best layer and the best site
#
# Spearman's ρ of each dataset's last-layer shift (measured in that model's features) with the best
# layer's relative depth (paper 1: negative) and with the best site's gain over the block output
# (paper 1: positive), with a bootstrap interval over datasets.

# %%
report.save_table(correlations, across.FINDINGS_TABLE, results_dir or None)
correlations[["model", "metric", "value", "ci_low", "ci_high", "n_datasets"]].round(3) if len(
    correlations
) else Markdown("No model has notebook 01's to 03's tables.")

# %%
charts.ranked_bars_with_ci(
    across.rho_rows(correlations),
    category="model",
    color="outcome",
    title="Spearman ρ of shift with each outcome, per model (95% CI)",
) if len(correlations) else Markdown("No correlations to chart.")

# %% [markdown]
# ## Which site wins under weak and under strong shift?
#
# Per model, its datasets split at the median of its shift; per group, each site's mean best-layer
# accuracy (paper 1: the FFN activation `act` under strong shift, `ln2` under weak shift).

# %%
report.save_table(sites, across.SITES_TABLE, results_dir or None)
across.winners(sites)

# %%
charts.ranked_bars_with_ci(
    sites[sites["shift group"] == "strong shift"],
    category="site",
    color="model",
    title="Strong shift: mean best-layer accuracy per site",
) if len(sites) else Markdown("No site table to chart (notebook 03).")

# %%
charts.ranked_bars_with_ci(
    sites[sites["shift group"] == "weak shift"],
    category="site",
    color="model",
    title="Weak shift: mean best-layer accuracy per site",
) if len(sites) else Markdown("No site table to chart (notebook 03).")

# %%
report.timings()
