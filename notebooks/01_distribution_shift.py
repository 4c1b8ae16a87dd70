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
# # 01 · Distribution shift, per layer and site
#
# How far is each dataset from the pretraining data, as the model itself sees it? The shift is
# measured between each dataset's frozen features and those of a reference set standing in for
# the pretraining data (ImageNet-like photos), at every layer and at every site inside the block,
# with bootstrap intervals. The corruption dial adds a controlled shift: each corruption family of
# CIFAR-10-C at rising severity, measured against the clean version of the same images.
#
# **Which measure drives the other notebooks.** Notebooks 02–05 read one number per dataset from
# this notebook's table: MMD² with an RBF kernel at the last layer (final norm, mean-pooled
# tokens). MMD² is unbiased, so datasets with different numbers of images compare fairly (FD is
# biased upwards by ~d/n and n differs between datasets); it assumes no Gaussian shape (FD does);
# and it keeps ranking far datasets where the domain classifier saturates at 100 % accuracy.
# Its scale is one for all datasets: each key's RBF bandwidth is fixed from the reference set
# alone (the median pairwise distance among the reference's features of that key), never from
# the dataset being measured, so a dataset's score does not change when other datasets are added
# or removed, and a far dataset cannot widen its own kernel. FD and the domain classifier are kept
# as second routes: a ranking that only one measure supports should be read with care.

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
model: str = "dinov2_vits14"  # timm name, or dinov2_vits14 for the embedded offline default
weights: str = ""  # local weights file for the model (.safetensors or .pth); empty: hub or embedded weights
image_size: int = 0  # input resolution in px; 0 means the model default (112 on CPU for the embedded model)
datasets: list = ["digits", "mnist5k", "fashion_mnist", "emoji", "textiles", "faces", "textures"]  # downstream dataset ids; corrupted ids such as emoji+snow@5 work too
reference_folder: str = ""  # folder of pretraining-like photos (ImageNet val, Imagenette); empty means the bundled photo crops
reference_images: int = 300  # images in the reference set
images_per_class: int = 40  # images per class drawn from each dataset (training split)
dial_dataset: str = "emoji"  # dataset the corruption dial is applied to
dial_severities: list = [1, 3, 5]  # corruption severities of the dial (1 to 5)
sites: list = []  # sites to measure; empty means all eight block sites plus embed and norm
pools: list = ["cls", "ap", "mean"]  # token poolings
measures: list = ["fd", "mmd_rbf", "mmd_linear", "domain_acc", "proxy_a"]  # shift measures
n_boot: int = 20  # bootstrap resamples for the intervals
seed: int = 0  # seeds python, numpy and torch, and every split and resample
results_dir: str = ""  # folder for the tidy CSV tables; empty means reports/results or the suite output
# fmt: on

# %%
from IPython.display import Markdown, display

from probekit import charts, report
from probekit.models import load_model
from probekit.studies import shift as study

info = report.run_info(report.notebook_parameters(globals()), seed)

# %%
with report.Timer("load model"):
    backbone = load_model(model, image_size=image_size or None, weights=weights)
report.describe(backbone)

# %% [markdown]
# ## Shift of every dataset from the reference
#
# Fréchet distance (FD) between Gaussian fits, unbiased MMD² with an RBF kernel (bandwidth per key
# from the reference set alone: the median pairwise distance among its features) and with a linear
# kernel, and the accuracy of a cross-validated linear domain classifier (with its proxy
# A-distance), for every (site, layer, pool). Equal numbers of images on both sides.

# %%
with report.Timer("extract and measure shift"):
    shift = study.shift_study(
        backbone,
        datasets,
        reference_folder=reference_folder or None,
        reference_images=reference_images,
        images_per_class=images_per_class,
        sites=sites or None,
        pools=pools,
        measures=measures,
        n_boot=n_boot,
        seed=seed,
    )
report.save_table(shift, study.SHIFT_TABLE, results_dir or None)

# %%
ranked = study.last_layer(shift, "mmd_rbf")
report.headline("nearest", ranked["dataset"].iloc[0], label="Nearest dataset (last layer, MMD²)")
report.headline("farthest", ranked["dataset"].iloc[-1], label="Farthest dataset (last layer, MMD²)")
charts.ranked_bars_with_ci(
    ranked,
    category="dataset",
    metric="mmd_rbf",
    title="Datasets ranked by shift at the last layer (final norm, mean pool, MMD² RBF, 95% CI)",
)

# %%
charts.ranked_bars_with_ci(
    study.last_layer(shift, "fd"),
    category="dataset",
    metric="fd",
    title="The same at the last layer by Fréchet distance (biased upwards at small n)",
)

# %% [markdown]
# ## Shift against depth, for each site
#
# MMD² (RBF) of each dataset from the reference, mean-pooled tokens, one line per site.

# %%
charts.depth_curve(
    shift[(shift["measure"] == "mmd_rbf") & (shift["pool"] == "mean")],
    color="site",
    facet="dataset",
    metric="mmd_rbf",
    title="Shift (MMD², RBF) against depth, per site",
)

# %%
charts.depth_curve(
    shift[(shift["measure"] == "domain_acc") & (shift["pool"] == "mean") & (shift["site"] == "resid_post")],
    color="dataset",
    metric="domain_acc",
    title="Domain-classifier accuracy (reference vs dataset) against depth, block outputs",
)

# %% [markdown]
# ## The corruption dial
#
# Each corruption family applied to the same images at rising severity, measured against the
# clean images (so the shift is the corruption's alone), at the block outputs and the final norm.
# Corruptions run at the scale their published parameters were made for: each image is resampled
# to a shorter side of 32 px (CIFAR-10-C parameters, images up to 64 px) or 224 px (ImageNet-C
# parameters, larger images), corrupted there and handed to the model's own resize, so severity 5
# means the same on 64-px emoji as on CIFAR (the dataset's provenance states the rule). A 64-px
# image corrupted with CIFAR-10-C parameters becomes a 32-px image, so every severity here also
# carries that loss of detail; the dial's order is what to read. The clean reference's features set
# the RBF bandwidth, so all severities are scored on one scale.

# %%
with report.Timer("corruption dial"):
    dial = study.corruption_dial(
        backbone,
        dial_dataset,
        severities=dial_severities,
        images_per_class=images_per_class,
        pools=pools,
        n_boot=n_boot,
        seed=seed,
    )
report.save_table(dial, study.DIAL_TABLE, results_dir or None)
dial_check = study.dial_is_monotone(dial, "mmd_rbf")
report.headline(
    "dial_rises",
    f"{int(dial_check['rises'].sum())}/{len(dial_check)}",
    label="Dial families rising with severity",
)
display(dial_check)

# %%
charts.depth_curve(
    dial[(dial["measure"] == "mmd_rbf") & (dial["site"] == "norm") & (dial["pool"] == "mean")],
    x="severity",
    color="corruption",
    metric="mmd_rbf",
    title=f"Corruption dial on {dial_dataset}: shift from the clean images against severity (final norm)",
)

# %%
Markdown(study.reading(ranked, dial_check))

# %% [markdown]
# ## Explore (JupyterLab)

# %%
charts.explore_widget(shift[shift["measure"] == "mmd_rbf"], metric="mmd_rbf")

# %%
report.timings()
