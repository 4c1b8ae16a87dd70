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
# # 03 · Module by module: which point inside the block gives the best features?
#
# Linear probes at paper 1's eight points inside every block (LN1, MHA, RC1, LN2, FC1, Act, FC2,
# RC2: `ln1`, `attn`, `resid_mid`, `ln2`, `fc1`, `act`, `fc2`, `resid_post`) on every dataset,
# trained as in notebook 02 (features are shared). Paper 1 finds the FFN activation (`act`) best
# under strong shift and the normalised attention output (`ln2`) under weak shift; here the
# numbers decide. `protocol = "paper1"` runs paper 1's protocol literally (see notebook 02; the
# deviations that remain are listed in the run info). Feature keys that are the same for every
# image are flagged and never chosen as a best site.

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
model: str = "dinov2_vits14"  # timm name, or dinov2_vits14 for the embedded offline default
weights: str = ""  # local weights file for the model (.safetensors or .pth); empty: hub or embedded weights
image_size: int = 0  # input resolution in px; 0 means the model default (112 on CPU for the embedded model)
datasets: list = ["digits", "mnist5k", "fashion_mnist", "emoji", "textiles", "faces", "textures"]  # dataset ids; corrupted ids such as emoji+snow@5 work too
images_per_class: int = 40  # images per class in each split (train and test); 0 takes every image
sites: list = []  # sites extracted (shared with the other notebooks); empty means all sites
pools: list = ["cls", "ap", "mean"]  # token poolings extracted
probe_pool: str = "mean"  # pooling probed and compared here (mean is paper 1's recipe)
protocol: str = "validated"  # validated (C and best layer chosen on a validation split) or paper1 (C fixed at 1, best layer read off the test split, as in the paper)
Cs: list = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]  # inverse regularisation grid, chosen on validation
val_fraction: float = 0.2  # stratified share of the training split used to choose C
shift_measure: str = "mmd_rbf"  # measure of notebook 01 used as the shift score (mmd_rbf is unbiased, so comparable across datasets)
seed: int = 0  # seeds python, numpy and torch, and every split and resample
results_dir: str = ""  # folder for the tidy CSV tables; empty means reports/results or the suite output
# fmt: on

# %%
from IPython.display import Markdown

from probekit import charts, report
from probekit.models import load_model
from probekit.studies import probing

deviations = probing.protocol_deviations(
    protocol, model, image_size, datasets, images_per_class, pool=probe_pool, seed=seed
)
info = report.run_info({**report.notebook_parameters(globals()), "deviations_from_paper1": deviations}, seed)
Markdown(probing.deviations_text(deviations))

# %%
with report.Timer("load model"):
    backbone = load_model(model, image_size=image_size or None, weights=weights)
report.describe(backbone)

# %%
with report.Timer("extract features and train every probe"):
    study = probing.probe_study(
        backbone,
        datasets,
        sites=sites or None,
        pools=pools,
        probe_pools=[probe_pool],
        images_per_class=images_per_class,
        protocol=protocol,
        Cs=Cs,
        val_fraction=val_fraction,
        seed=seed,
    )
report.save_table(study.table, probing.MODULEWISE_TABLE, results_dir or None)
rows = study.test_rows("accuracy")
Markdown(probing.constant_text(study))

# %% [markdown]
# ## Site × layer, per dataset
#
# Test accuracy of every (site, layer) probe; the best cell of each dataset is outlined.

# %%
charts.site_layer_heatmap(
    rows[~rows["site"].isin(["embed", "norm"])],
    metric="accuracy",
    facet="dataset",
    title=f"Test accuracy by site and layer ({probe_pool} pooling)",
)

# %% [markdown]
# ## The best site of each dataset, against the block output
#
# The best (site, layer) probe inside the blocks against the best block-output probe, both chosen
# by validation accuracy (or the test maximum under paper1); ties go to the block output, so a
# tie is a zero gain. The gain has a paired bootstrap interval over the test images.

# %%
best = probing.best_sites(study, pool=probe_pool, seed=seed)
report.save_table(best, probing.MODULEWISE_BEST_TABLE, results_dir or None)
probing.record_median("median_site_gain", "Median gain of best site over block output", best, seed=seed)
best[
    [
        "dataset",
        "best_key",
        "best_value",
        "block_output_key",
        "block_output_value",
        "value",
        "ci_low",
        "ci_high",
    ]
]

# %%
charts.ranked_bars_with_ci(
    best,
    category="dataset",
    metric=best["metric"].iloc[0],
    title="Gain of the best site over the best block output (paired 95% CI)",
)

# %% [markdown]
# ## Paper 1's summary table
#
# For each site, its best-layer accuracy on each dataset, then the mean over datasets (paper 1's
# table, with this run's protocol; `protocol = "paper1"` reproduces the paper's C = 1 training).

# %%
summary = probing.site_summary(study, pool=probe_pool)
report.save_table(summary, probing.MODULEWISE_SITES_TABLE, results_dir or None)
table = summary.pivot_table(index="site", columns="dataset", values="value")
table.assign(mean=table.mean(axis=1)).sort_values("mean", ascending=False).round(3)

# %%
charts.ranked_bars_with_ci(
    summary, category="site", metric="accuracy", title="Best-layer accuracy per site, mean over datasets"
)

# %% [markdown]
# ## Which site wins under weak and under strong shift?
#
# Datasets are split at the median of the last-layer shift measured in notebook 01.

# %%
shifts = probing.shift_scores(
    results_dir or report.default_results_dir(), measure=shift_measure, model=backbone.name
)
groups = probing.weak_vs_strong(summary, shifts)
Markdown(probing.winners_text(groups))

# %%
groups

# %% [markdown]
# Paper 1's module finding (the FFN activation `act` under strong shift, its input `ln2` under weak
# shift), as a paired gap per dataset averaged over each group, with a bootstrap interval over datasets.

# %%
gaps = probing.site_gap_by_shift(summary, shifts, "act", "ln2", seed=seed)
probing.record_site_gaps(gaps)
gaps.round(3)

# %%
charts.explore_widget(rows, metric="accuracy")

# %%
report.timings()
