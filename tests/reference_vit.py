"""An independent plain-torch DINOv2/ViT forward over timm-keyed weights, for checking conversions.

Written from the block equations (pre-norm, LayerScale, GELU MLP), not from timm's modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x: torch.Tensor, sd: dict, key: str, eps: float = 1e-6) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{key}.weight"], sd[f"{key}.bias"], eps)


def resample_pos(pos: torch.Tensor, grid: int, antialias: bool) -> torch.Tensor:
    """Bicubic resampling of the patch position grid; the class position is kept."""
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    old = math.isqrt(patch_pos.shape[1])
    if old == grid:
        return pos
    g = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=(grid, grid), mode="bicubic", align_corners=False, antialias=antialias)
    return torch.cat([cls_pos, g.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def vit_forward(
    sd: dict, x: torch.Tensor, *, num_heads: int, patch: int = 14, antialias: bool = True
) -> torch.Tensor:
    """Tokens after the final norm, (B, 1 + N, D)."""
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    b, d, gh, gw = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([sd["cls_token"].expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + resample_pos(sd["pos_embed"], gh, antialias)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    head_dim = d // num_heads
    for i in range(depth):
        p = f"blocks.{i}"
        h = _ln(tokens, sd, f"{p}.norm1")
        qkv = F.linear(h, sd[f"{p}.attn.qkv.weight"], sd[f"{p}.attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(head_dim), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        out = F.linear(out, sd[f"{p}.attn.proj.weight"], sd[f"{p}.attn.proj.bias"])
        tokens = tokens + sd[f"{p}.ls1.gamma"] * out
        h = _ln(tokens, sd, f"{p}.norm2")
        h = F.gelu(F.linear(h, sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"]))
        h = F.linear(h, sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
        tokens = tokens + sd[f"{p}.ls2.gamma"] * h
    return _ln(tokens, sd, "norm")
