"""Every ViT family users probe, random-initialised at a tiny size, checked site by site.

Each family is loaded through ``load_model(..., pretrained=False)`` (the user's path), its
parameters perturbed so no LayerNorm affine, bias or layer scale is trivial, and run in float64.
Every site of every block must equal a recomputation from the block's own submodules, written
from the pre-norm block equations (``x + ls1(attn(norm1(x)))``, ``x + ls2(fc2(norm(act(fc1(.)))))``)
and not through probekit's hooks; ``ap`` must exclude exactly the family's prefix tokens (counted
here from its class and register token parameters, not from ``num_prefix_tokens``). The README's
"Model families" table lists the same families.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from probekit import sites as sites_module
from probekit.errors import NotAViTError
from probekit.keys import BLOCK_SITES, parse_key
from probekit.models import load_model
from probekit.sites import SiteError, capture, fit_pools, key_dims, resolve_sites

torch.set_num_threads(1)


@dataclass(frozen=True)
class Family:
    """One family: the timm name users load and the smallest settings that keep its structure."""

    name: str
    image_size: int
    kwargs: dict = field(default_factory=dict)
    class_token: bool = True
    registers: int = 0
    fc1: bool = True  # False: SwiGLU has fc1_g / fc1_x, no single fc1
    final_norm: bool = True  # False: model.norm is an Identity (fc_norm after pooling)


SMALL = {"depth": 2, "embed_dim": 64, "num_heads": 2}
FAMILIES = {
    "vit_augreg": Family("vit_small_patch16_224.augreg_in21k", 32, SMALL),
    "deit3_layerscale": Family("deit3_small_patch16_224", 32, SMALL),
    "dinov2": Family("vit_small_patch14_dinov2", 28, SMALL),
    "dinov2_registers": Family("vit_small_patch14_reg4_dinov2", 28, SMALL, registers=4),
    "clip_quickgelu": Family("vit_base_patch16_clip_quickgelu_224", 32, SMALL),
    "siglip": Family("vit_base_patch16_siglip_224", 32, SMALL, class_token=False),
    "mae": Family("vit_base_patch16_224.mae", 32, SMALL),
    "eva02_glu": Family("eva02_tiny_patch14_224", 28, {"depth": 2}, final_norm=False),
    "eva02_swiglu_subln": Family("eva02_base_patch14_224", 28, SMALL, fc1=False, final_norm=False),
    "beit_relpos": Family("beit_base_patch16_224", 32, SMALL, final_norm=False),
    "vit_gap_no_cls": Family("vit_medium_patch16_gap_256", 32, SMALL, class_token=False),
}


def build(family: Family) -> nn.Module:
    backbone = load_model(
        family.name, pretrained=False, image_size=family.image_size, device="cpu", **family.kwargs
    )
    model = backbone.model
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ---- the reference: each block recomputed from its own submodules -----------------------------


def _block_kwargs(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """The keyword arguments each block is called with (RoPE tables, relative position bias)."""
    seen: list[dict] = []
    handles = [
        b.register_forward_pre_hook(lambda m, a, kw: seen.append(dict(kw)), with_kwargs=True)
        for b in model.blocks
    ]
    try:
        model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = model.patch_embed(x)
    b = t.shape[0]
    if type(model).__name__ == "Eva":
        t, _ = model._pos_embed(t)
        return model.norm_pre(t)
    prefix = [model.cls_token.expand(b, -1, -1)] if getattr(model, "cls_token", None) is not None else []
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    pos = getattr(model, "pos_embed", None)
    if pos is None:
        t = torch.cat([*prefix, t], dim=1)
    elif getattr(model, "no_embed_class", False):
        t = torch.cat([*prefix, t + pos], dim=1)
    else:
        t = torch.cat([*prefix, t], dim=1) + pos
    norm_pre = getattr(model, "norm_pre", None)
    return norm_pre(t) if norm_pre is not None else t


def _scale(block: nn.Module, which: int, x: torch.Tensor) -> torch.Tensor:
    ls = getattr(block, f"ls{which}", None)
    if ls is not None:
        return ls(x)
    gamma = getattr(block, f"gamma_{which}", None)
    return x if gamma is None else gamma * x


def _mlp(mlp: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(fc1, act, fc2) of one MLP: plain, fused gated (GluMlp) or SwiGLU with a sub-norm."""
    if hasattr(mlp, "fc1_g"):
        fc1 = None
        act = mlp.act(mlp.fc1_g(h)) * mlp.fc1_x(h)
    elif hasattr(mlp, "chunk_dim"):
        fc1 = mlp.fc1(h)
        x1, x2 = fc1.chunk(2, dim=mlp.chunk_dim)
        act = x1 * mlp.act(x2) if mlp.gate_last else mlp.act(x1) * x2
    else:
        fc1 = mlp.fc1(h)
        act = mlp.act(fc1)
    return fc1, act, mlp.fc2(mlp.norm(act))


def reference_sites(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"embed": _embed(model, x)}
    t = out["embed"]
    for i, (blk, kw) in enumerate(zip(model.blocks, _block_kwargs(model, x), strict=True)):
        p = f"blocks.{i}"
        accepted = inspect.signature(blk.attn.forward).parameters
        h = out[f"{p}.ln1"] = blk.norm1(t)
        a = out[f"{p}.attn"] = blk.attn(h, **{k: v for k, v in kw.items() if k in accepted})
        t = out[f"{p}.resid_mid"] = t + _scale(blk, 1, a)
        h = out[f"{p}.ln2"] = blk.norm2(t)
        fc1, out[f"{p}.act"], f2 = _mlp(blk.mlp, h)
        if fc1 is not None:
            out[f"{p}.fc1"] = fc1
        out[f"{p}.fc2"] = f2
        t = out[f"{p}.resid_post"] = t + _scale(blk, 2, f2)
    out["norm"] = model.norm(t)
    return out


def reference_pool(tokens: torch.Tensor, pool: str, n_prefix: int) -> torch.Tensor:
    if pool == "cls":
        return tokens[:, 0]
    if pool == "ap":
        return tokens[:, n_prefix:].mean(1)
    if pool == "mean":
        return tokens.mean(1)
    return tokens


# ---- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_every_site_of_every_block_matches_the_recomputation(kind: str) -> None:
    family = FAMILIES[kind]
    model = build(family)
    n_prefix = int(family.class_token) + family.registers
    assert model.num_prefix_tokens == n_prefix
    depth = len(model.blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-class-token note; its own test checks it
        keys = resolve_sites(model, token_sites=["blocks.1.resid_post"])
    pools = ("cls", "ap", "mean") if family.class_token else ("ap", "mean")
    per_block = len(BLOCK_SITES) - (0 if family.fc1 else 1)
    assert len([k for k in keys if not k.endswith("/tokens")]) == (per_block * depth + 2) * len(pools)
    x = images(family.image_size)
    with torch.no_grad():
        ref = reference_sites(model, x)
        with capture(model, keys) as cap:
            final = model.forward_features(x)
            got = cap.take()
    torch.testing.assert_close(final, ref["norm"], rtol=1e-10, atol=1e-10)
    if not family.final_norm:
        assert isinstance(model.norm, nn.Identity)  # norm = the last block's output, as documented
        torch.testing.assert_close(ref["norm"], ref[f"blocks.{depth - 1}.resid_post"])
    for key in keys:
        fk = parse_key(key)
        want = reference_pool(ref[fk.path], fk.pool, n_prefix)
        assert got[key].dtype == torch.float32
        scale = max(want.abs().max().item(), 1.0)
        torch.testing.assert_close(got[key].double(), want, rtol=1e-5, atol=1e-6 * scale, msg=key)
    # the static shapes (used to allocate stores) agree with what the hooks produced
    dims = key_dims(model, keys, family.image_size)
    assert dims == {k: tuple(v.shape[1:]) for k, v in got.items()}


@pytest.mark.parametrize("kind", [k for k, f in FAMILIES.items() if not f.class_token])
def test_models_without_a_class_token_get_fitting_default_pools_and_refuse_cls(kind: str) -> None:
    model = build(FAMILIES[kind])
    sites_module._TOLD_NO_CLS.discard(type(model).__name__)
    with pytest.warns(UserWarning, match="no class token: pool 'cls' dropped"):
        assert fit_pools(model, ("cls", "ap", "mean")) == ("ap", "mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the second request is quiet
        keys = resolve_sites(model)
    assert keys and not any(k.endswith("/cls") for k in keys)
    with pytest.raises(SiteError, match="has no class token.*pools=\\('ap', 'mean'\\)"):
        resolve_sites(model, pools=["cls"])
    with pytest.raises(SiteError, match="no class token"), capture(model, ["norm/cls"]):
        pass


def test_models_with_a_class_token_keep_cls() -> None:
    model = build(FAMILIES["beit_relpos"])  # Beit has no has_class_token attribute: read from cls_token
    assert fit_pools(model, ("cls", "ap", "mean")) == ("cls", "ap", "mean")


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("vit_base_patch16_rpn_224", "ResPostBlock blocks.*post-norm"),
        ("vit_relpos_medium_patch16_rpn_224", "ResPostRelPosBlock blocks.*post-norm"),
        ("vit_small_patch16_18x2_224", "ParallelThingsBlock blocks.*parallel"),
    ],
)
def test_families_that_cannot_be_supported_are_refused_naming_what_is_missing(
    name: str, missing: str
) -> None:
    with pytest.raises(NotAViTError, match=missing):
        load_model(name, pretrained=False, image_size=32, device="cpu", depth=1, embed_dim=64, num_heads=2)


def test_a_model_without_blocks_is_refused_naming_its_modules() -> None:
    with pytest.raises(NotAViTError, match="no `blocks`"):
        load_model("resnet18", pretrained=False, device="cpu")


def test_catalog_lists_beit_and_marks_the_refused_families() -> None:
    from probekit.models.catalog import list_models

    rows = {r["name"]: r for r in list_models()}
    assert "beit_base_patch16_224.in22k_ft_in22k_in1k" in rows
    assert rows["vit_base_patch16_rpn_224.sw_in1k"]["notes"].startswith("refused: post-norm")
    assert rows["vit_relpos_medium_patch16_rpn_224.sw_in1k"]["notes"].startswith("refused: post-norm")
    assert rows["vit_small_patch14_reg4_dinov2.lvd142m"]["notes"] == ""
