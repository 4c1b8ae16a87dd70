"""Load any timm ViT-family model as a frozen :class:`Backbone`: hub weights, a local weights
file, random initialisation, or the embedded offline default.

A name ``random:<architecture>`` is a random-initialised control that needs no network and no weights
file: ``random:dinov2_vits14`` is the embedded DINOv2 ViT-S/14 architecture (timm
``vit_small_patch14_dinov2``, its preprocessing and default image size) with timm's own initialisation
under the fixed seed :data:`RANDOM_SEED`, so every process builds the same weights (its weights digest,
part of every feature-store key, keeps its features apart from the pretrained model's).
``random:<timm architecture>`` does the same for any timm ViT (``random:vit_small_patch14_dinov2`` is
accepted as the embedded architecture's timm spelling).

Preprocessing always comes from the model's own data config (``resolve_model_data_config``);
the image size is a parameter, and position embeddings are resampled to it by timm.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import ProbekitError, UnknownModelError, WeightsFileError, WeightsMismatchError
from . import embedded
from .backbone import Backbone
from .build import create_local, frozen_backbone, timm_kwargs


class HubUnavailableError(ProbekitError, OSError):
    """Pretrained weights could not be fetched from the hub (offline, or a network error)."""


RANDOM_PREFIX = "random:"
RANDOM_SEED = 0  # the random controls' initialisation seed: fixed, so the control is the same everywhere


def random_control_architecture(name: str) -> str | None:
    """The architecture a ``random:<architecture>`` name initialises (the embedded model's name maps to
    its timm architecture); None for any other name."""
    if not name.startswith(RANDOM_PREFIX):
        return None
    arch = name[len(RANDOM_PREFIX) :].split(".", 1)[0]
    return embedded.ARCH if arch == embedded.NAME else arch


def _is_embedded_architecture(name: str) -> bool:
    return name == embedded.NAME or random_control_architecture(name) == embedded.ARCH


def default_image_size(name: str, device: torch.device | str | None = None) -> int | None:
    """112 px on a CPU and 224 on a GPU for the embedded model and its random control; None (the
    model's own) otherwise."""
    if not _is_embedded_architecture(name):
        return None
    return 224 if resolve_device(device).type == "cuda" else 112


def _known_names() -> list[str]:
    import timm

    return [embedded.NAME, *timm.list_models(), *timm.list_pretrained()]


def _check_known(name: str) -> str:
    import timm

    control = random_control_architecture(name)
    if control is not None:
        if not control or not timm.is_model(control):
            raise UnknownModelError(
                f"unknown model {name!r}: a random-initialised control is spelled "
                f"{RANDOM_PREFIX}<architecture>, with {embedded.NAME!r} (the embedded architecture) or a timm "
                f"architecture name such as vit_small_patch14_dinov2; {control!r} is neither."
            )
        return control
    arch = name.split(".", 1)[0]
    if name == embedded.NAME or timm.is_model(arch):
        return arch
    close = difflib.get_close_matches(name, _known_names(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}: neither the embedded default ({embedded.NAME!r}) nor a timm "
        f"architecture.{hint} `probekit models` lists what can be loaded."
    )


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


def _create(
    arch_or_name: str, *, pretrained: bool, image_size: int | None, weights: Path | None, kwargs: dict
):
    import timm

    if weights is not None or not pretrained:
        return create_local(arch_or_name, image_size=image_size, weights=weights, kwargs=kwargs)
    extra = timm_kwargs(image_size, kwargs)
    _go_offline_if_unreachable()
    try:
        return timm.create_model(arch_or_name, pretrained=True, **extra)
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "Missing key" in str(exc) or "Unexpected key" in str(exc):
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:6]
            raise WeightsMismatchError(
                f"the hub weights do not fit {arch_or_name}: "
                + " | ".join(lines)
                + ". Check the model name and its pretrained tag (`probekit models --all`)."
            ) from exc
        raise
    except (OSError, ValueError) as exc:
        raise HubUnavailableError(
            f"could not fetch pretrained weights for {arch_or_name} from the hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Offline? Give a local weights file saved from this "
            "architecture (.safetensors, or .pth/.bin with a state dict): `--weights PATH` on "
            "`probekit extract` and `probekit layers`, `weights: PATH` in a suite config's defaults or a "
            "notebook's parameters, load_model(..., weights=PATH) in Python; or use the embedded offline "
            f"default {embedded.NAME!r} (`--model {embedded.NAME}`), or `--random-init` for a control."
        ) from exc


def load_model(
    name: str = embedded.NAME,
    *,
    image_size: int | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    **model_kwargs,
) -> Backbone:
    """Load a frozen ViT as a :class:`Backbone`.

    Args:
        name: ``"dinov2_vits14"`` (the embedded offline default), or any timm ViT-family name,
            ideally with its pretrained tag (``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``), or
            ``"random:dinov2_vits14"`` (``random:<architecture>``): a random-initialised control under
            the fixed seed :data:`RANDOM_SEED` (``pretrained`` and ``seed`` do not apply to it).
        image_size: input resolution; position embeddings are resampled to it. Default: 112 px
            on a CPU and 224 on a GPU for the embedded model, the model's own size otherwise.
        pretrained: load pretrained weights (hub, or ``weights``); False gives a random
            initialisation seeded by ``seed`` (for controls and tests).
        weights: a local weights file saved from this architecture (``.safetensors``, or a torch
            ``.pth``/``.bin`` state dict, possibly nested under ``model``/``state_dict``), loaded
            strictly: only the classifier head may be absent (:mod:`probekit.models.weights`).
        device: where to put the model (``None``: :func:`probekit.device.resolve_device`).
        model_kwargs: passed to ``timm.create_model`` (e.g. ``depth=2`` for tiny test models).
    """
    arch = _check_known(name)
    device = resolve_device(device)
    image_size = image_size or default_image_size(name, device)
    weights = Path(weights).expanduser() if weights else None  # "" (a notebook's default) means none

    if random_control_architecture(name) is not None:
        if weights is not None:
            raise WeightsFileError(
                f"{name} is a random-initialised control and loads no weights; drop weights={str(weights)!r} "
                f"or name the architecture without {RANDOM_PREFIX!r}"
            )
        pretrained, seed = False, RANDOM_SEED
        if arch == embedded.ARCH:
            timm_name = f"{embedded.ARCH}.lvd142m"  # the embedded model's preprocessing (data config)
            display = f"DINOv2 ViT-S/14 architecture, random init (seed {seed})"
        else:
            timm_name, display = arch, f"{arch} (random init, seed {seed})"
        source = f"random initialisation (timm's, seed {seed}): a control with no pretraining"
    elif name == embedded.NAME:
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
    model = _create(
        timm_name, pretrained=pretrained, image_size=image_size, weights=weights, kwargs=model_kwargs
    )
    return frozen_backbone(
        model,
        name=name,
        architecture=embedded.ARCH if name == embedded.NAME else arch,
        display_name=display,
        source=source,
        image_size=image_size,
        device=device,
    )
