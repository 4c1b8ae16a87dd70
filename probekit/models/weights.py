"""Local weights files: read a checkpoint in any common layout and load it strictly into a timm ViT.

Accepted: ``.safetensors``; torch pickles (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) holding a state
dict, either at the top level or nested under ``state_dict``, ``model``, ``model_state_dict``,
``module``, ``teacher`` or ``ema``; keys may carry a ``module.`` (DataParallel/DDP) or
``_orig_mod.`` (``torch.compile``) prefix. The state dict then goes through the architecture's own
timm checkpoint filter (position embeddings resampled to the image size, original-layout keys
renamed) and is loaded strictly: every tensor the model has must be in the file and every tensor in
the file must be in the model, except the classifier head (probekit builds models without one).
Anything else is refused, naming the tensors that are missing or unexpected.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsFileError, WeightsMismatchError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
FORMATS = (
    "a .safetensors file, or a torch .pth/.pt/.bin/.ckpt file, holding a timm-layout state dict "
    "(top level, or nested under 'state_dict' or 'model'; 'module.' prefixes are removed)"
)
NESTED = ("state_dict", "model", "model_state_dict", "module", "teacher", "ema", "model_ema")
PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped to a flat ``name -> tensor`` dict (CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file {path} does not exist; --weights takes {FORMATS}")
    raw = _read_safetensors(path) if _is_safetensors(path) else _read_torch(path)
    return _strip_prefixes(_unwrap(raw, path))


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in TORCH_SUFFIXES:
        return False
    with open(
        path, "rb"
    ) as f:  # unknown suffix: safetensors starts with a little-endian header size, then '{'
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean "not readable"
        raise WeightsFileError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:160]}); "
            f"it is truncated or not safetensors at all. --weights takes {FORMATS}."
        ) from None


def _read_torch(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError: all unreadable
        text = str(exc).splitlines()[0][:160] if str(exc) else ""
        hint = (
            " It pickles Python objects other than tensors (a whole model, an optimizer?): save "
            "model.state_dict() instead."
            if "weights_only" in str(exc) or "Unsupported global" in str(exc)
            else ""
        )
        raise WeightsFileError(
            f"{path} could not be read as a torch checkpoint ({type(exc).__name__}: {text}).{hint} "
            f"--weights takes {FORMATS}."
        ) from None


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if _is_tensor_dict(obj):
        return dict(obj)  # type: ignore[arg-type]
    if isinstance(obj, Mapping):
        for key in NESTED:
            if key in obj and _is_tensor_dict(obj[key]):
                return dict(obj[key])
        found = ", ".join(f"{k!r} ({type(v).__name__})" for k, v in list(obj.items())[:8]) or "nothing"
        raise WeightsFileError(
            f"{path} holds a dict without a state dict of tensors at its top level or under "
            f"{', '.join(repr(k) for k in NESTED[:3])}; found: {found}. --weights takes {FORMATS}."
        )
    raise WeightsFileError(
        f"{path} holds a {type(obj).__name__}, not a state dict. --weights takes {FORMATS}."
    )


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Name prefixes of the classifier head(s), which a weights file may have or lack."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") or "head"
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{n}." for n in {*names, "head", "head_dist"})


def _filter(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The architecture's own timm checkpoint filter (resamples position embeddings, renames keys)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return sd
    try:
        return filter_fn(sd, model)
    except Exception:  # noqa: BLE001 - a foreign layout the filter cannot parse: the strict check names it
        return sd


def _examples(names: list[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_weights_file(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load ``path`` into ``model`` strictly (only the classifier head may be absent or extra)."""
    path = Path(path)
    sd = _filter(read_state_dict(path), model)
    heads = head_prefixes(model)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(heads)]
    unexpected = [k for k in sd if k not in own and not k.startswith(heads)]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of the model's {len(own)} tensors are missing from the file ({_examples(missing)})"
            )
        if unexpected:
            parts.append(
                f"{len(unexpected)} tensors in the file are not in the model ({_examples(unexpected)})"
            )
        if wrong:
            parts.append(f"{len(wrong)} tensors have other shapes, file vs model ({_examples(wrong, 3)})")
        foreign = len(missing) > len(own) // 2
        hint = (
            "The file was saved from a different architecture: pass the timm model name it was saved from "
            "as --model (`probekit models --all` lists them)"
            if foreign
            else f"Save the complete state dict of {arch} (model.state_dict(), timm layout) again"
        )
        raise WeightsMismatchError(
            f"the weights in {path} do not fit {arch}: {'; '.join(parts)}. {hint}; only the classifier "
            f"head ({', '.join(sorted(p.rstrip('.') for p in heads))}) may be absent."
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)  # checked above
