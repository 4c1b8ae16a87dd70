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
# # 05 · Summary: does distribution shift predict where the best features are?
#
# Across datasets, the last-layer shift from notebook 01 against three outcomes: the relative
# depth of the best layer (02), the gain of the best site over the block output (03), and the gain
# of attentive layer fusion over the CLS-last probe (04). Each relation gets Spearman's ρ with a
# bootstrap interval; the findings below are written from these numbers. First, a check that the
# notebooks agree: the same probe on the same feature must give the same number in 02 and 04.

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
model: str = "dinov2_vits14"  # the model the other notebooks ran (for the record)
shift_measure: str = "mmd_rbf"  # measure of notebook 01 used as the shift score (mmd_rbf is unbiased, so comparable across datasets)
seed: int = 0  # seeds the bootstrap of the correlations
results_dir: str = ""  # folder holding the tables of notebooks 01 to 04; empty means reports/results or the suite output
# fmt: on

# %%
from IPython.display import Markdown

from probekit import charts, report
from probekit.studies import summary

info = report.run_info(report.notebook_parameters(globals()), seed)
folder = results_dir or report.default_results_dir()

# %% [markdown]
# ## Do notebooks 02 and 04 agree on the CLS-last probe?
#
# Notebook 04's linear probe on the last layer's CLS token (`cls_last_linear`, the baseline every
# fusion gain is measured against) beside notebook 02's probe on the same feature (`norm/cls`),
# test balanced accuracy per dataset. Gaps larger than 0.02 are flagged.

# %%
consistency = summary.cls_last_consistency(folder, model=model)
report.headline(
    "cls_last_agree",
    f"{int(consistency['agrees'].sum())}/{len(consistency)}",
    label="Datasets where 04's CLS-last probe is within 0.02 of 02's norm/cls",
)
Markdown(summary.consistency_text(consistency))

# %%
consistency.round(3)

# %% [markdown]
# ## Shift against the three outcomes

# %%
per_dataset = summary.outcomes_by_dataset(folder, measure=shift_measure, model=model)
correlations = summary.correlations(per_dataset, seed=seed, model=model)
report.save_table(correlations, summary.SUMMARY_TABLE, results_dir or None)
per_dataset.round(3)

# %% [markdown]
# ## Findings

# %%
Markdown("\n".join(f"- {line}" for line in summary.findings(correlations)))

# %%
summary.record_headlines(correlations)
correlations[["metric", "value", "ci_low", "ci_high", "n_datasets"]]

# %%
charts.scatter_with_fit(
    per_dataset.dropna(subset=["relative_depth"]),
    x="shift",
    y="relative_depth",
    seed=seed,
    title="Best layer's relative depth against shift (02)",
)

# %%
charts.scatter_with_fit(
    per_dataset.dropna(subset=["best_site_gain"]),
    x="shift",
    y="best_site_gain",
    seed=seed,
    title="Best site's gain over the block output against shift (03)",
)

# %%
charts.scatter_with_fit(
    per_dataset.dropna(subset=["alf_gain"]),
    x="shift",
    y="alf_gain",
    seed=seed,
    title="Attentive-fusion gain over CLS-last against shift (04)",
)

# %%
report.timings()
