"""The attentive multi-layer fusion probe of paper 2 (Ciernik et al., arXiv 2601.09322).

One learned query cross-attends over a set of feature tokens (CLS and AP of every layer), then
BatchNorm and a linear classifier. Copied in behaviour, not in code, from
``lciernik/attentive-layer-fusion: src/tasks/attentive_probe.py`` (``AttentiveProbeModel``,
``AttentiveBlock``, ``CrossAttention``, itself adapted from CAE):

- query token ``(1, 1, D)`` initialised N(0, 0.02);
- separate LayerNorms on query, keys and values (``norm_q``, ``norm_k``, ``norm_v``);
- q/k/v linear maps without bias (``qkv_bias=False``);
- ``num_heads`` defaults to the number of input tokens, ``head_dim = 2 * (D // num_heads)``
  ("doubled after ablation"), scale ``head_dim ** -0.5``;
- softmax over tokens, attention dropout, output projection ``inner -> D`` (with bias);
- no residual, no MLP; ``BatchNorm1d(D, affine=True)`` then ``Linear(D, C)``.

The published probe has no position/layer embedding (``pos_q = pos_k = 0``), so its output does
not depend on the order of the input tokens. ``layer_embedding=True`` is our ablation: a learned
vector per token slot added to the keys only, where CAE adds ``pos_k`` (values stay unembedded).

The forward pass is the paper's computation reassociated (the key and value maps are applied to
the query and to the attention-pooled values instead of to every token); a test checks it against
the literal ``softmax(q k^T / sqrt(d)) v`` form.

The softmax weights of the last forward pass are kept in ``last_attention`` ``(B, heads, 1, T)``,
recorded before dropout as the paper's ``record_attention`` does; heatmaps average them.
"""

from __future__ import annotations

import torch
from torch import nn

from probekit.errors import ProbekitError


class ProbeShapeError(ProbekitError, ValueError):
    """Probe dimensions that do not fit together (too many heads for the width, wrong input)."""


def head_dim_for(dim: int, num_heads: int) -> int:
    """Per-head width of the paper's cross-attention: ``2 * (dim // num_heads)``."""
    if num_heads < 1:
        raise ProbeShapeError(f"num_heads must be at least 1, got {num_heads}")
    if dim // num_heads == 0:
        raise ProbeShapeError(
            f"feature width {dim} is smaller than num_heads={num_heads}: head_dim = 2 * (dim // heads) "
            "would be 0. Pass fewer heads (num_heads=...) or wider features."
        )
    return 2 * (dim // num_heads)


class AttentiveProbe(nn.Module):
    """One learned query attending over ``num_tokens`` feature tokens of width ``dim``.

    ``forward(x)`` takes ``(B, T, D)`` tokens and returns ``(B, num_classes)`` logits.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_tokens: int,
        num_heads: int | None = None,
        attn_drop: float = 0.0,
        layer_embedding: bool = False,
    ) -> None:
        super().__init__()
        if num_tokens < 1 or num_classes < 2:
            raise ProbeShapeError(
                f"need num_tokens >= 1 and num_classes >= 2, got {num_tokens}, {num_classes}"
            )
        # heads = number of input tokens for the multi-layer probe (paper 2, §2.5 in papers.md)
        self.num_heads = num_tokens if num_heads is None else num_heads
        self.head_dim = head_dim_for(dim, self.num_heads)
        self.inner_dim = self.head_dim * self.num_heads
        self.dim, self.num_tokens, self.num_classes = dim, num_tokens, num_classes
        self.scale = self.head_dim**-0.5

        self.query = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)  # attentive_probe.py: nn.init.normal_(query_token, std=0.02)
        self.layer_embedding = None
        if layer_embedding:  # ablation only; the published probe has none
            self.layer_embedding = nn.Parameter(torch.empty(1, num_tokens, dim))
            nn.init.normal_(self.layer_embedding, std=0.02)
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, self.inner_dim, bias=False)
        self.k = nn.Linear(dim, self.inner_dim, bias=False)
        self.v = nn.Linear(dim, self.inner_dim, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.inner_dim, dim)
        self.bn = nn.BatchNorm1d(dim, affine=True)  # affine=True "after ablation" in the paper's code
        self.classifier = nn.Linear(dim, num_classes)
        self.last_attention: torch.Tensor | None = None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The attention-pooled representation ``(B, D)`` before BatchNorm and the classifier."""
        if x.ndim != 3 or x.shape[1] != self.num_tokens or x.shape[2] != self.dim:
            raise ProbeShapeError(
                f"AttentiveProbe expects tokens of shape (B, {self.num_tokens}, {self.dim}), got {tuple(x.shape)}"
            )
        b, t, _ = x.shape
        h, hd = self.num_heads, self.head_dim
        keys_in = x if self.layer_embedding is None else x + self.layer_embedding
        # Same maths as the paper's q @ k^T and attn @ v, reassociated so no (B, T, inner) tensor is
        # formed: q_h . (W_k,h LN(x_t)) = (W_k,h^T q_h) . LN(x_t) and
        # sum_t a_ht W_v,h LN(x_t) = W_v,h (sum_t a_ht LN(x_t)). Cost drops by about T times.
        q = self.q(self.norm_q(self.query)).reshape(h, hd) * self.scale  # one query, shared by the batch
        wk = torch.einsum("hj,hjd->hd", q, self.k.weight.reshape(h, hd, self.dim))  # (h, D)
        logits = (self.norm_k(keys_in).reshape(b * t, self.dim) @ wk.T).reshape(b, t, h)
        attn = logits.transpose(1, 2).softmax(dim=-1)  # (B, h, T)
        self.last_attention = attn.detach().unsqueeze(2)  # (B, h, 1, T), before dropout as in the paper
        pooled = torch.bmm(self.attn_drop(attn), self.norm_v(x))  # (B, h, D)
        wv = self.v.weight.reshape(h, hd, self.dim).transpose(1, 2)  # (h, D, hd)
        out = torch.bmm(pooled.transpose(0, 1), wv).transpose(0, 1).reshape(b, self.inner_dim)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(self.pooled(x)))
