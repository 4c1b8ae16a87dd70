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
# # Model check
#
# Loads the backbone, reads the CLS token after every block for a few scikit-learn digits, and
# shows how the CLS norm and a nearest-class-mean accuracy change with depth. It is the example
# every analysis notebook follows (see `notebooks/README.md`).

# %% tags=["parameters"]
# papermill reads one `name: type = value  # help` line per parameter: not for the formatter
# fmt: off
model: str = "dinov2_vits14"  # timm name, or "dinov2_vits14" for the embedded offline default
weights: str = ""  # local weights file for the model (.safetensors or .pth); empty: hub or embedded weights
image_size: int = 112  # input resolution in pixels
pretrained: bool = True  # False: random initialisation (tests, controls)
depth: int = 0  # number of blocks; 0 keeps the model's own (small values make tiny test models)
n_images: int = 200  # digits to feed through the model (half fit class means, half test)
seed: int = 0  # seeds python, numpy and torch
results_dir: str = ""  # folder for the tidy CSV tables; empty means reports/results or the suite output
# fmt: on

# %%
from probekit import charts, model_check, report
from probekit.models import load_model

info = report.run_info({**report.notebook_parameters(globals()), "dataset": "digits"}, seed)

# %% [markdown]
# ## Load the model and read every layer

# %%
with report.Timer("load model"):
    backbone = load_model(
        model,
        image_size=image_size,
        pretrained=pretrained,
        weights=weights,
        **({"depth": depth} if depth else {}),
    )
images, labels = model_check.digits_images(n_images, seed=seed)
with report.Timer("features and table"):
    table = model_check.layer_table(backbone, images, labels, dataset="digits", seed=seed)
report.save_table(table, "model_check", results_dir or None)

# %% [markdown]
# ## Depth curves
#
# Nearest-class-mean accuracy (half of the images fit the class means, the other half are
# classified; 95% bootstrap interval) and the CLS-token norm after each block.

# %%
charts.depth_curve(
    table, metric="ncm_accuracy", color="dataset", title="Nearest-class-mean accuracy by block"
)

# %%
charts.depth_curve(table, metric="cls_norm", color="dataset", title="CLS-token norm by block")

# %%
acc = table[table["metric"] == "ncm_accuracy"]
best = acc.loc[acc["value"].idxmax()]
report.headline("best_layer", int(best["layer"]), label="Best layer (nearest class mean)")
report.headline("best_accuracy", float(best["value"]), label="Its accuracy", fmt=".3f")

# %% [markdown]
# ## Explore (JupyterLab)
#
# In JupyterLab the explorer below lets you pick dataset, site and pool and slide through the
# layers; the report shows the static chart only.

# %%
charts.explore_widget(table, metric="ncm_accuracy")

# %%
report.timings()
