"""``configs/paper2.yaml``: paper 2's nine backbones as one sweep, valid as written and offline.

``--check`` validates every parameter of every run without loading a model or a dataset, so it needs
no network; the model names are checked against timm's list of pretrained tags (shipped with timm),
and the datasets against probekit's registry.
"""

from __future__ import annotations

from pathlib import Path

import timm
import yaml

from probekit.cli import main
from probekit.data.registry import is_known_base, parse_id

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "paper2.yaml"
PAPER2_MODELS = [  # papers.md §2.2: paper 2's model config, as timm tags
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "vit_large_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch14_dinov2.lvd142m",
    "vit_base_patch14_dinov2.lvd142m",
    "vit_large_patch14_dinov2.lvd142m",
    "vit_base_patch32_clip_224.openai",
    "vit_base_patch16_clip_224.openai",
    "vit_large_patch14_clip_224.openai",
]
MISSING = [
    "caltech101",
    "voc2007",
    "imagenet1k",
    "stanford_cars",
    "fgvc_aircraft",
    "resisc45",
    "diabetic_retinopathy",
    "dmlab",
]


def test_paper2_config_checks_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["suite", str(CONFIG), "--check", "--out", str(tmp_path)]) == 0
    assert "19 runs (9 models x 3 notebooks)" in capsys.readouterr().out


def test_paper2_config_names_the_papers_models_datasets_and_protocol():
    raw = yaml.safe_load(CONFIG.read_text())
    defaults = raw["defaults"]
    assert defaults["models"] == PAPER2_MODELS
    assert set(PAPER2_MODELS) <= set(timm.list_pretrained())
    assert defaults["image_size"] == 224 and len(defaults["datasets"]) == 12
    assert all(is_known_base(parse_id(d)[0]) for d in defaults["datasets"])
    fusion = next(r for r in raw["runs"] if r["name"] == "fusion")["parameters"]
    assert fusion["grid"] == "published" and fusion["token_sites"] == ["ln2"] and fusion["extra_sites"] == []
    text = CONFIG.read_text()
    assert all(name in text for name in MISSING)  # the datasets it cannot run are named
    assert "+5.99" in text  # the authors' number for ViT-B/16
