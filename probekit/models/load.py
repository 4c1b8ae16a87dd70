"""Load any timm ViT-family model as a frozen :class:`Backbone`: hub weights, a local weights
file, random initialisation, or the embedded offline default.

Preprocessing always comes from the model's own data config (``resolve_model_data_config``);
the image size is a parameter, and position embeddings are resampled to it by timm.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import NotAViTError, ProbekitError, UnknownModelError, WeightsMismatchError
from . import embedded
from .backbone import Backbone

BLOCK_PARTS = ("norm1", "attn", "norm2", "mlp")
MLP_PARTS = ("fc2",)  # fc1 is absent from SwiGLU MLPs (fc1_g, fc1_x); the act site reads fc2's input


class HubUnavailableError(ProbekitError, OSError):
    """Pretrained weights could not be fetched from the hub (offline, or a network error)."""


def default_image_size(name: str, device: torch.device | str | None = None) -> int | None:
    """112 px on a CPU and 224 on a GPU for the embedded model; None (the model's own) otherwise."""
    if name != embedded.NAME:
        return None
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return 224 if kind == "cuda" else 112


def _known_names() -> list[str]:
    import timm

    return [embedded.NAME, *timm.list_models(), *timm.list_pretrained()]


def _check_known(name: str) -> str:
    import timm

    arch = name.split(".", 1)[0]
    if name == embedded.NAME or timm.is_model(arch):
        return arch
    close = difflib.get_close_matches(name, _known_names(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}: neither the embedded default ({embedded.NAME!r}) nor a timm "
        f"architecture.{hint} `probekit models` lists what can be loaded."
    )


def check_vit_structure(model: nn.Module, name: str) -> None:
    """Raise :class:`NotAViTError` naming what is missing when ``model`` lacks pre-norm ViT blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        children = ", ".join(n for n, _ in model.named_children()) or "none"
        raise NotAViTError(
            f"{name} is not a ViT that probekit can probe: it has no `blocks` sequence of transformer "
            f"blocks (its top-level modules are: {children}). probekit needs timm ViT-family models "
            "(vit_*, deit*, *_dinov2, ...)."
        )
    block = blocks[0]
    from ..sites import check_supported

    check_supported(model)  # post-norm and parallel blocks: refused naming why
    missing = [p for p in BLOCK_PARTS if not hasattr(block, p)]
    mlp = getattr(block, "mlp", None)
    missing += [f"mlp.{p}" for p in MLP_PARTS if mlp is not None and not hasattr(mlp, p)]
    for attr in ("num_prefix_tokens", "patch_embed", "norm"):
        if not hasattr(model, attr):
            missing.append(attr if attr != "norm" else "norm (final)")
    if missing:
        raise NotAViTError(
            f"{name} has `blocks`, but not the pre-norm ViT block structure the site taxonomy needs: "
            f"missing {', '.join(missing)} (block type {type(block).__name__}). Expected "
            "x = x + attn(norm1(x)); x = x + mlp(norm2(x)) with mlp.fc1/mlp.fc2."
        )


def state_digest(model: nn.Module) -> str:
    """Short sha256 over the parameters and buffers, in key order: names the weights exactly."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _go_offline_if_unreachable() -> None:
    """Without a network, use the local hub cache at once instead of retrying for a minute."""
    import huggingface_hub.constants as hub

    if not hub.HF_HUB_OFFLINE and not _hub_reachable():
        hub.HF_HUB_OFFLINE = True


def _create(arch_or_name: str, *, pretrained: bool, image_size: int | None, weights: Path | None, kwargs: dict):
    import timm

    from .weights import load_weights_file

    extra = dict(num_classes=0, **kwargs)
    if image_size is not None:
        extra["img_size"] = image_size
    if weights is not None:
        model = timm.create_model(arch_or_name, pretrained=False, **extra)
        load_weights_file(model, weights, arch_or_name)
        return model
    if pretrained:
        _go_offline_if_unreachable()
    try:
        return timm.create_model(arch_or_name, pretrained=pretrained, **extra)
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "Missing key" in str(exc) or "Unexpected key" in str(exc):
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:6]
            raise WeightsMismatchError(
                f"the hub weights do not fit {arch_or_name}: " + " | ".join(lines)
                + ". Check the model name and its pretrained tag (`probekit models --all`)."
            ) from exc
        raise
    except (OSError, ValueError) as exc:
        if pretrained:
            raise HubUnavailableError(
                f"could not fetch pretrained weights for {arch_or_name} from the hub ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). Offline? Give a local weights file saved from this "
                "architecture (.safetensors, or .pth/.bin with a state dict): `--weights PATH` on "
                "`probekit extract` and `probekit layers`, `weights: PATH` in a suite config's defaults or a "
                "notebook's parameters, load_model(..., weights=PATH) in Python; or use the embedded offline "
                f"default {embedded.NAME!r} (`--model {embedded.NAME}`), or `--random-init` for a control."
            ) from exc
        raise


def load_model(
    name: str = embedded.NAME,
    *,
    image_size: int | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    _skip_fingerprint: bool = False,
    **model_kwargs,
) -> Backbone:
    """Load a frozen ViT as a :class:`Backbone`.

    Args:
        name: ``"dinov2_vits14"`` (the embedded offline default), or any timm ViT-family name,
            ideally with its pretrained tag (``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``).
        image_size: input resolution; position embeddings are resampled to it. Default: 112 px
            on a CPU and 224 on a GPU for the embedded model, the model's own size otherwise.
        pretrained: load pretrained weights (hub, or ``weights``); False gives a random
            initialisation seeded by ``seed`` (for controls and tests).
        weights: a local weights file saved from this architecture (``.safetensors``, or a torch
            ``.pth``/``.bin`` state dict, possibly nested under ``model``/``state_dict``), loaded
            strictly: only the classifier head may be absent (:mod:`probekit.models.weights`).
        device: where to put the model (default: CUDA when available).
        model_kwargs: passed to ``timm.create_model`` (e.g. ``depth=2`` for tiny test models).
    """
    from timm.data import create_transform, resolve_model_data_config

    arch = _check_known(name)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    image_size = image_size or default_image_size(name, device)
    weights = Path(weights).expanduser() if weights else None  # "" (a notebook's default) means none

    if name == embedded.NAME:
        if weights is None:
            weights = embedded.ensure_weights() if pretrained else None
        timm_name, display, source = f"{embedded.ARCH}.lvd142m", embedded.DISPLAY_NAME, embedded.SOURCE
        if not pretrained:
            display, source = f"{embedded.ARCH} (random init, seed {seed})", "random initialisation"
    else:
        timm_name = name
        display = name if pretrained or weights else f"{name} (random init, seed {seed})"
        source = str(weights) if weights else ("timm hub" if pretrained else "random initialisation")

    torch.manual_seed(seed)
    model = _create(timm_name, pretrained=pretrained, image_size=image_size, weights=weights, kwargs=model_kwargs)
    check_vit_structure(model, name)
    model.eval().requires_grad_(False).to(device)

    data_config = dict(resolve_model_data_config(model))
    size = image_size or int(data_config["input_size"][-1])
    data_config["input_size"] = (3, size, size)
    transform = create_transform(**data_config, is_training=False)
    backbone = Backbone(
        model=model,
        name=name,
        architecture=arch if name != embedded.NAME else embedded.ARCH,
        display_name=display,
        source=source,
        image_size=size,
        data_config=data_config,
        transform=transform,
        weights_digest=state_digest(model),
    )
    return backbone
