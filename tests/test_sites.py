"""Sites and hooks: every site and pool agrees with an independent recomputation from the weights."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from probekit.errors import NotAViTError
from probekit.keys import BLOCK_SITES, parse_key
from probekit.sites import SiteError, capture, derived_input, forward_key_dims, key_dims, resolve_sites

torch.set_num_threads(1)


def tiny(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kw).eval()
    # random init leaves biases and LayerNorm affines at 0/1; perturb so every term is exercised
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


PLAIN = {"name": "vit_tiny_patch16_224", "img_size": 32, "depth": 2, "embed_dim": 48, "num_heads": 3}
LAYERSCALE = {
    "name": "vit_small_patch14_dinov2",
    "img_size": 28,
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "init_values": 0.1,
}
REGISTERS = {
    "name": "vit_small_patch14_reg4_dinov2",
    "img_size": 28,
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
}
MODELS = {"plain": PLAIN, "layerscale": LAYERSCALE, "registers": REGISTERS}


def make(spec: dict) -> nn.Module:
    spec = dict(spec)
    return tiny(spec.pop("name"), **spec)


# ---- independent reference: the block equations over the modules' parameters -----------------


def _ln(x: torch.Tensor, m: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], m.weight, m.bias, m.eps)


def _gamma(m: nn.Module) -> torch.Tensor | float:
    return m.gamma if hasattr(m, "gamma") else 1.0


def reference_sites(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token tensors at every site path, computed from weights without hooks or module calls."""
    out = {}
    pe = model.patch_embed.proj
    t = F.conv2d(x, pe.weight, pe.bias, stride=pe.stride).flatten(2).transpose(1, 2)
    b = t.shape[0]
    prefix = []
    if model.cls_token is not None:
        prefix.append(model.cls_token.expand(b, -1, -1))
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    pos = model.pos_embed
    if model.no_embed_class:
        t = torch.cat([*prefix, t + pos], dim=1)
    else:
        t = torch.cat([*prefix, t], dim=1) + pos
    out["embed"] = t
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        h = _ln(t, blk.norm1)
        out[f"{p}.ln1"] = h
        a = blk.attn
        assert isinstance(a.q_norm, nn.Identity) and isinstance(a.k_norm, nn.Identity)
        heads, hd = a.num_heads, a.head_dim
        q, k, v = F.linear(h, a.qkv.weight, a.qkv.bias).reshape(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        o = F.linear((att @ v).transpose(1, 2).reshape(b, -1, heads * hd), a.proj.weight, a.proj.bias)
        out[f"{p}.attn"] = o
        t = t + _gamma(blk.ls1) * o
        out[f"{p}.resid_mid"] = t
        h = _ln(t, blk.norm2)
        out[f"{p}.ln2"] = h
        f1 = F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)
        out[f"{p}.fc1"] = f1
        act = F.gelu(f1)
        out[f"{p}.act"] = act
        f2 = F.linear(act, blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        out[f"{p}.fc2"] = f2
        t = t + _gamma(blk.ls2) * f2
        out[f"{p}.resid_post"] = t
    out["norm"] = _ln(t, model.norm)
    return out


def reference_pool(tokens: torch.Tensor, pool: str, num_prefix: int) -> torch.Tensor:
    if pool == "cls":
        return tokens[:, 0]
    if pool == "ap":
        return tokens[:, num_prefix:].mean(1)
    if pool == "mean":
        return tokens.mean(1)
    return tokens


def assert_sites_match(model: nn.Module, x: torch.Tensor, keys: list[str]) -> None:
    with torch.no_grad():
        ref = reference_sites(model, x)
        with capture(model, keys) as cap:
            final = model.forward_features(x)
            got = cap.take()
    torch.testing.assert_close(final, ref["norm"], rtol=1e-4, atol=1e-4)
    assert list(got) == keys
    for key in keys:
        fk = parse_key(key)
        want = reference_pool(ref[fk.path], fk.pool, model.num_prefix_tokens)
        scale = want.abs().max().item()
        torch.testing.assert_close(got[key], want, rtol=1e-4, atol=1e-5 * max(scale, 1.0), msg=key)


def images(size: int, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g)


# ---- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_site_and_pool_matches_the_block_equations(kind: str) -> None:
    model = make(MODELS[kind])
    keys = resolve_sites(model, pools=("cls", "ap", "mean"), token_sites=["blocks.1.act", "embed", "norm"])
    assert len([k for k in keys if not k.endswith("/tokens")]) == (8 * 2 + 2) * 3
    assert_sites_match(model, images(model.patch_embed.img_size[0]), keys)


@pytest.mark.parametrize("kind", list(MODELS))
def test_key_dims_read_from_modules_match_a_forward(kind: str) -> None:
    model = make(MODELS[kind])
    keys = resolve_sites(model, token_sites=["embed", "blocks.1.fc1"])
    size = model.patch_embed.img_size[0]
    dims = key_dims(model, keys, size)
    assert dims == forward_key_dims(model, keys, size)
    assert dims["blocks.0.act/cls"] == (4 * model.embed_dim,)


@pytest.mark.slow
def test_embedded_dinov2_sites_match_the_block_equations(embedded_backbone) -> None:
    model = embedded_backbone.model
    keys = resolve_sites(model, token_sites=["blocks.11.resid_post"])
    assert_sites_match(model, images(embedded_backbone.image_size, n=2), keys)


def test_register_model_ap_excludes_registers() -> None:
    model = make(REGISTERS)
    assert model.num_prefix_tokens == 5
    x = images(28, n=2)
    with torch.no_grad(), capture(model, ["norm/ap", "norm/mean", "norm/tokens"]) as cap:
        model.forward_features(x)
        got = cap.take()
    tokens = got["norm/tokens"]
    assert tokens.shape == (2, 5 + 4, 64)
    torch.testing.assert_close(got["norm/ap"], tokens[:, 5:].mean(1))
    assert not torch.allclose(got["norm/ap"], tokens[:, 1:].mean(1), atol=1e-3)


def test_resolve_sites_order_layers_and_errors() -> None:
    model = make(PLAIN)
    keys = resolve_sites(model)
    assert keys[:3] == ["embed/cls", "embed/ap", "embed/mean"] and keys[-1] == "norm/mean"
    assert [parse_key(k).site for k in keys[3:27:3]] == list(BLOCK_SITES)
    assert resolve_sites(model, sites=["act"], pools=["cls"], layers=[-1]) == ["blocks.1.act/cls"]
    assert resolve_sites(model, sites=["blocks.0.ln2", "norm"], pools=["ap"]) == [
        "blocks.0.ln2/ap",
        "norm/ap",
    ]
    with pytest.raises(SiteError, match="unknown site"):
        resolve_sites(model, sites=["mlp"])
    with pytest.raises(SiteError, match="token_sites"):
        resolve_sites(model, pools=["tokens"])
    with pytest.raises(SiteError, match="out of range"):
        resolve_sites(model, layers=[5])
    no_cls = tiny("vit_tiny_patch16_224", img_size=32, depth=1, class_token=False, global_pool="avg")
    with pytest.raises(SiteError, match="no class token"):
        resolve_sites(no_cls, pools=["cls"])
    assert resolve_sites(no_cls, sites=["norm"], pools=["ap", "mean"]) == ["norm/ap", "norm/mean"]
    with pytest.raises(NotAViTError):
        resolve_sites(nn.Sequential(nn.Linear(2, 2)))


def test_hooks_are_removed_even_on_error() -> None:
    model = make(PLAIN)
    with pytest.raises(AssertionError, match="doesn't match"), capture(model, resolve_sites(model)):
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) > 0
        model.forward_features(torch.zeros(1, 3, 31, 31))  # wrong size: timm raises
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_identity_norm_is_pooled_once_and_shared() -> None:
    # global_pool="avg" makes model.norm an Identity: norm and the last resid_post are one tensor
    model = tiny("vit_tiny_patch16_224", img_size=32, depth=2, embed_dim=48, num_heads=3, global_pool="avg")
    assert isinstance(model.norm, nn.Identity)
    with torch.no_grad(), capture(model, ["blocks.1.resid_post/cls", "norm/cls"]) as cap:
        model.forward_features(images(32))
        got = cap.take()
    assert got["norm/cls"] is got["blocks.1.resid_post/cls"]


def test_inplace_layerscale_and_inference_mode_give_the_same_features() -> None:
    model = make(LAYERSCALE)
    x = images(28)
    keys = resolve_sites(model, sites=["attn", "fc2", "resid_post"])
    with torch.no_grad(), capture(model, keys) as cap:
        model.forward_features(x)
        want = cap.take()
    for blk in model.blocks:
        blk.ls1.inplace = blk.ls2.inplace = True  # x.mul_(gamma) right after the hooked output
    with torch.inference_mode(), capture(model, keys) as cap:
        model.forward_features(x)
        got = cap.take()
    for key in keys:
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_bfloat16_autocast_pools_in_float32() -> None:
    model = make(PLAIN)
    keys = resolve_sites(model, sites=["fc1", "norm"])
    x = images(32)
    with torch.no_grad(), capture(model, keys) as cap:
        model.forward_features(x)
        want = cap.take()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.forward_features(x)
        got = cap.take()
    for key in keys:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], want[key], rtol=0.1, atol=0.1, msg=key)


def test_pooled_fc1_and_fc2_derived_from_their_inputs_equal_the_hooked_outputs() -> None:
    model = make(LAYERSCALE)
    keys = resolve_sites(model, token_sites=["blocks.1.fc1"])
    assert derived_input(model, "blocks.0.fc1/cls") is not None
    assert derived_input(model, "blocks.1.fc2/mean") is not None
    assert derived_input(model, "blocks.1.fc1/tokens") is None  # tokens are always hooked
    assert derived_input(model, "blocks.1.act/mean") is None
    x = images(28)
    got = {}
    for derive in (True, False):
        with torch.no_grad(), capture(model, keys, derive=derive) as cap:
            model.forward_features(x)
            got[derive] = cap.take()
    assert list(got[True]) == keys
    for key in keys:
        torch.testing.assert_close(got[True][key], got[False][key], rtol=1e-5, atol=1e-6, msg=key)
    model.train()  # dropout after fc2 may be live: hooked, not derived
    assert derived_input(model, "blocks.0.fc2/cls") is None
