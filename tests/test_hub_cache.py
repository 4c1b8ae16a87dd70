"""Hub weights through timm's own loading code, offline: the path an online user's run takes.

A Hugging Face hub cache is laid out in a temporary ``HF_HOME`` exactly as ``huggingface_hub``
writes it (``tests/hub_cache.py``), filled with the converted embedded DINOv2-S/14 weights, and
``load_model("vit_small_patch14_dinov2.lvd142m")`` runs in a fresh interpreter with
``HF_HOME`` and ``HF_HUB_OFFLINE=1`` set before anything is imported (``huggingface_hub`` reads
them at import): timm's ``load_state_dict_from_hf`` -> ``hf_hub_download`` -> the snapshot.
Nothing of probekit, timm or huggingface_hub is patched.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_cache import write_hub_cache

from probekit.models import embedded, load_model

REPO = "timm/vit_small_patch14_dinov2.lvd142m"
NAME = "vit_small_patch14_dinov2.lvd142m"
SIZE = 56
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
import numpy as np, torch
from probekit.errors import ProbekitError
from probekit.models import load_model

out, weights = sys.argv[1], sys.argv[2]
x = torch.randn(2, 3, {size}, {size}, generator=torch.Generator().manual_seed(0))
report = {{}}
for label, kwargs in [("hub", {{}}), ("overlay", {{"pretrained_cfg_overlay": {{"file": weights}}}})]:
    b = load_model("{name}", image_size={size}, device="cpu", **kwargs)
    with torch.no_grad():
        np.save(f"{{out}}/{{label}}.npy", b.model.forward_features(x).numpy())
    report[label] = {{"digest": b.weights_digest, "source": b.source, "image_size": b.image_size,
                      "data_config": {{k: list(v) if isinstance(v, tuple) else v for k, v in b.data_config.items()}}}}
try:
    load_model("vit_tiny_patch16_224.augreg_in21k", device="cpu")
    report["uncached"] = None
except ProbekitError as exc:
    report["uncached"] = {{"type": type(exc).__name__, "message": str(exc)}}
json.dump(report, open(f"{{out}}/report.json", "w"))
"""


def _offline_env(hf_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER"):
        env.pop(var, None)
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    return env


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory) -> tuple[dict, Path, Path]:
    import timm

    weights = embedded.ensure_weights()
    hf_home = tmp_path_factory.mktemp("hf_home")
    cfg = timm.models.get_pretrained_cfg(NAME).to_dict()
    config = {
        "architecture": "vit_small_patch14_dinov2",
        "num_classes": 0,
        "num_features": 384,
        "global_pool": "token",
        "pretrained_cfg": {k: v for k, v in cfg.items() if k != "hf_hub_id"},
    }
    snapshot = write_hub_cache(
        hf_home,
        REPO,
        {"model.safetensors": weights, "config.json": json.dumps(config, indent=2).encode()},
        lfs=("model.safetensors",),
    )
    out = tmp_path_factory.mktemp("hub_out")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(name=NAME, size=SIZE), str(out), str(weights)],
        env=_offline_env(hf_home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), out, snapshot


def test_cache_is_laid_out_as_huggingface_hub_writes_it(hub_run) -> None:
    _, _, snapshot = hub_run
    repo = snapshot.parent.parent
    assert repo.name == "models--timm--vit_small_patch14_dinov2.lvd142m"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    link = snapshot / "model.safetensors"
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
    assert link.resolve().parent == repo / "blobs"


def test_hub_model_loads_offline_with_the_embedded_features_and_the_hub_data_config(hub_run) -> None:
    import timm
    from timm.data import resolve_data_config

    report, out, _ = hub_run
    ref = load_model(embedded.NAME, image_size=SIZE, device="cpu")
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref.model.forward_features(x).numpy()
    hub = report["hub"]
    assert hub["source"] == "timm hub" and hub["image_size"] == SIZE
    assert hub["digest"] == ref.weights_digest
    np.testing.assert_array_equal(np.load(out / "hub.npy"), want)
    # the data config is the hub model's own (DINOv2: ImageNet mean/std, bicubic, crop_pct 1.0)
    expect = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(NAME).to_dict())
    got = hub["data_config"]
    for k in ("mean", "std", "interpolation", "crop_pct", "crop_mode"):
        assert got[k] == (list(expect[k]) if isinstance(expect[k], tuple) else expect[k]), k
    assert got["interpolation"] == "bicubic" and got["crop_pct"] == 1.0
    assert got["input_size"] == [3, SIZE, SIZE]


def test_pretrained_cfg_overlay_file_loads_the_same_weights(hub_run) -> None:
    report, out, _ = hub_run
    assert report["overlay"]["digest"] == report["hub"]["digest"]
    assert report["overlay"]["data_config"] == report["hub"]["data_config"]
    np.testing.assert_array_equal(np.load(out / "overlay.npy"), np.load(out / "hub.npy"))


def test_uncached_hub_model_error_names_only_options_that_exist(hub_run) -> None:
    from probekit.cli import build_parser

    report, _, _ = hub_run
    err = report["uncached"]
    assert err is not None, "an uncached hub model loaded offline"
    message = err["message"]
    assert err["type"] == "HubUnavailableError" and "vit_tiny_patch16_224" in message
    parser = build_parser()
    flags = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= {s for a in sub._actions for s in a.option_strings}
    named_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", message))
    assert named_flags <= flags, f"the error names CLI options no command has: {named_flags - flags}"
    keywords = set(re.findall(r"\b([a-z_]+)=", message))
    params = set(inspect.signature(load_model).parameters)
    assert keywords <= params, f"the error names load_model keywords that do not exist: {keywords - params}"
    assert named_flags or keywords, "the error should say which option loads local weights"
    assert embedded.NAME in message
