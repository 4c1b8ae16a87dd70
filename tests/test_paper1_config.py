"""configs/paper1.yaml: valid as written, and its whole study run end to end on fixtures at a tiny size.

The tiny run keeps the config's runs, notebooks, dataset ids, sites, pools and protocol, and
overrides only what a CPU and a machine without a network need (said here, in one place):

* ``model`` -> the embedded ``dinov2_vits14`` at ``image_size: 28`` (the config's ViT-B/16 in21k
  would need the hub), ``images_per_class`` -> 2 (shift: 3), ``sites`` -> ``ln2 act resid_post norm``
  (4 of the 9), shift ``n_boot`` -> 2, ``reference_images`` -> 20,
  ``dial_severities`` -> ``[5]``: a CPU shared by many runs the probes and measures of all 11
  datasets in minutes;
* the dataset *locations*: ``PROBEKIT_DATA`` points at a temporary folder whose ``torchvision/``
  holds the fixture files of ``tests/torchvision_layouts.py`` in the real on-disk layouts (and
  whose ``weights/`` links to the provisioned embedded weights);
* torchvision's md5 check of the real CIFAR/Flowers release files is switched off in the kernels
  by a ``sitecustomize`` shim on ``PYTHONPATH`` (the same patch as tests/test_torchvision_layouts.py;
  nothing of probekit is patched), and ``PROBEKIT_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from torchvision_layouts import (
    write_cifar10,
    write_cifar10c,
    write_cifar100,
    write_domainnet,
    write_flowers102,
    write_pets,
)

from probekit.cli import main
from probekit.suite import SuiteConfig, load_config, run_suite

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "paper1.yaml"
PAPER1_DATASETS = {
    "flowers102",
    "cifar10",
    "pets",
    "cifar100",
    "domainnet:clipart",
    "domainnet:sketch",
    *(f"cifar10c:{c}@5" for c in ("contrast", "gaussian_noise", "motion_blur", "snow", "speckle_noise")),
}
SHIM = '''"""Test shim: torchvision's md5 check of the real release files is off (tiny fixtures)."""
import importlib

for _name in ("cifar", "flowers102"):
    setattr(importlib.import_module(f"torchvision.datasets.{_name}"), "check_integrity", lambda *a, **k: True)
'''


def test_paper1_config_passes_check(capsys) -> None:
    assert main(["suite", str(CONFIG), "--check"]) == 0
    assert "every parameter name" in capsys.readouterr().out


def test_paper1_config_is_paper1s_study() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    d = raw["defaults"]
    assert d["model"] == "vit_base_patch16_224.orig_in21k" and d["image_size"] == 224
    assert set(d["datasets"]) == PAPER1_DATASETS and len(d["datasets"]) == 11
    assert d["pools"] == ["mean"]
    assert {"ln1", "attn", "resid_mid", "ln2", "fc1", "act", "fc2", "resid_post"} <= set(d["sites"])
    runs = {r["name"]: r for r in raw["runs"]}
    assert runs["layerwise"]["parameters"]["protocol"] == "paper1"
    assert runs["modulewise"]["parameters"]["protocol"] == "paper1"
    assert "notebooks/04_attentive_fusion.py" not in {r["notebook"] for r in raw["runs"]}  # paper 2's


def _fixture_data(data: Path) -> None:
    from probekit.paths import weights_dir

    tv = data / "torchvision"
    # Every class gets at least 2 images in each of train, val and test after the splits (probekit
    # refuses a class with fewer: probekit.pipeline.TooFewImagesError).
    write_cifar10(tv, per_class_batch=2, per_class_test=2)
    write_cifar100(tv, per_class_train=10, per_class_test=2)
    write_pets(tv, per_class={"trainval": 10, "test": 2})
    write_flowers102(tv, per_class={"train": 2, "val": 2, "test": 2})
    write_cifar10c(tv, ("contrast", "gaussian_noise", "motion_blur", "snow", "speckle_noise"), n=300)
    for domain in ("clipart", "sketch"):
        write_domainnet(tv, domain, per_class=20)
    (data / "weights").symlink_to(weights_dir(), target_is_directory=True)


@pytest.mark.slow
def test_paper1_config_runs_end_to_end_on_fixtures(tmp_path) -> None:
    from probekit.models import embedded

    embedded.ensure_weights()
    data = tmp_path / "data"
    _fixture_data(data)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    config = load_config(CONFIG)
    tiny = SuiteConfig(
        path=config.path,
        runs=config.runs,
        defaults={
            **config.defaults,
            "model": "dinov2_vits14",
            "image_size": 28,
            "images_per_class": 2,
            "sites": ["ln2", "act", "resid_post", "norm"],
        },
        env={
            "PROBEKIT_DATA": str(data),
            "PROBEKIT_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        timeout=3600,
    )
    for run in tiny.runs:
        if run.name == "shift":
            run.parameters = {
                **run.parameters,
                "images_per_class": 3,
                "reference_images": 20,
                "n_boot": 2,
                "dial_severities": [5],
            }
    out = tmp_path / "out"
    results = run_suite(tiny, out)
    status = {r.name: (r.status, r.error) for r in results}
    assert all(s == "ok" for s, _ in status.values()), status
    probed = [
        t for t in (pd.read_csv(p) for p in out.rglob("*.csv")) if {"dataset", "protocol"} <= set(t.columns)
    ]
    assert probed, "no probe table was written"
    assert set(pd.concat(probed)["dataset"]) == PAPER1_DATASETS
    assert set(pd.concat(probed)["protocol"]) == {"paper1"}
