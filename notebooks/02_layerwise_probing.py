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
# # 02 · Layer by layer: which depth gives the best linear probe?
#
# A linear probe on every block output (paper 1's "layer", RC2) and on the final norm, for every
# dataset, trained by the batched trainer: multinomial L2 logistic regression, features L2-normalised
# per sample then standardised (paper 1's preprocessing), the regularisation chosen on a stratified
# validation split, refit on train+val, scored on the test split with bootstrap 95% intervals
# (`protocol = "paper1"` runs paper 1's protocol literally: training features extracted once through
# its random resized crop and flip, test features through its resize and centre crop, C = 1, no
# validation, best layer read off the test maximum; what still differs is listed in the run info).
# Then: is the best layer the last one, and does the best layer move shallower as the shift grows?
# Feature keys that are the same for every image are flagged and never chosen as the best layer.

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
model: str = "dinov2_vits14"  # timm name, or dinov2_vits14 for the embedded offline default
weights: str = ""  # local weights file for the model (.safetensors or .pth); empty: hub or embedded weights
image_size: int = 0  # input resolution in px; 0 means the model default (112 on CPU for the embedded model)
datasets: list = ["digits", "mnist5k", "fashion_mnist", "emoji", "textiles", "faces", "textures"]  # dataset ids; corrupted ids such as emoji+snow@5 work too
images_per_class: int = 40  # images per class in each split (train and test); 0 takes every image
sites: list = []  # sites extracted (shared with the other notebooks); empty means all sites
pools: list = ["cls", "ap", "mean"]  # token poolings extracted and probed
probe_sites: list = ["resid_post", "norm"]  # sites probed here: block outputs (paper 1's layers) and the final norm
curve_pool: str = "mean"  # pooling shown in the depth curves (mean is paper 1's recipe)
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
    protocol, model, image_size, datasets, images_per_class, pool=curve_pool, seed=seed
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
        probe_sites=probe_sites,
        images_per_class=images_per_class,
        protocol=protocol,
        Cs=Cs,
        val_fraction=val_fraction,
        seed=seed,
    )
report.save_table(study.table, probing.PROBES_TABLE, results_dir or None)
layers = study.test_rows("accuracy")
Markdown(probing.constant_text(study))

# %% [markdown]
# ## Accuracy against depth
#
# Test accuracy of the block-output probe after each block (layer 1 to L) and of the final norm
# (plotted at layer L as site `norm`), 95% bootstrap band.

# %%
charts.depth_curve(
    layers[layers["pool"] == curve_pool],
    color="site",
    facet="dataset",
    title=f"Test accuracy against depth ({curve_pool} pooling)",
)

# %%
charts.depth_curve(
    layers[layers["site"] == "resid_post"],
    color="pool",
    facet="dataset",
    title="Block-output probes: CLS, patch average (AP) and mean of all tokens",
)

# %% [markdown]
# ## Best layer against last layer
#
# For each dataset, the best block output against the last block output (paper 1's layers; the
# final norm is listed beside them). Under the validated protocol the best layer is chosen by
# validation accuracy, then scored on test; under paper1 it is the test maximum, as in the paper
# (optimistic). Ties go to the last layer. The gap has a paired bootstrap interval over test images.

# %%
best = probing.best_vs_last(study, pool=curve_pool, seed=seed)
report.save_table(best, probing.LAYERWISE_BEST_TABLE, results_dir or None)
probing.record_median("median_gap", "Median gap best − last layer", best, seed=seed)
report.headline(
    "best_not_last",
    f"{int((best['ci_low'] > 0).sum())}/{len(best)}",
    label="Datasets whose best layer beats the last (CI > 0)",
)
best[
    [
        "dataset",
        "best_key",
        "best_value",
        "last_value",
        "value",
        "ci_low",
        "ci_high",
        "relative_depth",
        "norm_value",
    ]
]

# %%
charts.ranked_bars_with_ci(
    best,
    category="dataset",
    metric=best["metric"].iloc[0],
    title="Gap: best layer minus last layer (test accuracy, paired 95% CI)",
)

# %% [markdown]
# ## Does the best layer get shallower as the shift grows?
#
# Relative depth of the best layer (best layer / depth) against the last-layer shift measured in
# notebook 01, with Spearman's ρ and a bootstrap interval over datasets.

# %%
shifts = probing.shift_scores(
    results_dir or report.default_results_dir(), measure=shift_measure, model=backbone.name
)
depth_vs_shift, rho_ci = probing.against_shift(best, shifts, "relative_depth", seed=seed)
probing.record_rho("rho_shift_depth", "Spearman ρ(shift, best-layer depth)", depth_vs_shift, rho_ci)
charts.scatter_with_fit(
    depth_vs_shift,
    x="shift",
    y="relative_depth",
    seed=seed,
    title="Best layer's relative depth against last-layer shift",
)

# %% [markdown]
# ## Explore (JupyterLab)

# %%
charts.explore_widget(study.test_rows("accuracy"), metric="accuracy")

# %%
report.timings()
