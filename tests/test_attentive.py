"""The attentive fusion probe: head arithmetic, attention as a distribution, permutation invariance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probekit.errors import ProbekitError
from probekit.probes.attentive import AttentiveProbe, ProbeShapeError, head_dim_for


@pytest.mark.parametrize(
    ("dim", "tokens", "head_dim", "inner"),
    [
        (384, 24, 32, 768),  # ViT-S: 12 layers x {CLS, AP}
        (768, 24, 64, 1536),  # ViT-B: papers.md §2.5 "24 heads x 64 = 1536"
        (1024, 48, 42, 2016),  # ViT-L: 24 layers x {CLS, AP}
    ],
)
def test_head_arithmetic_and_shapes_for_s_b_l(dim: int, tokens: int, head_dim: int, inner: int) -> None:
    probe = AttentiveProbe(dim, num_classes=7, num_tokens=tokens).eval()
    assert probe.num_heads == tokens
    assert probe.head_dim == head_dim == head_dim_for(dim, tokens)
    assert probe.inner_dim == inner
    assert probe.q.weight.shape == probe.k.weight.shape == probe.v.weight.shape == (inner, dim)
    assert probe.q.bias is None and probe.k.bias is None and probe.v.bias is None
    assert probe.proj.weight.shape == (dim, inner)
    x = torch.randn(3, tokens, dim)
    assert probe(x).shape == (3, 7)
    assert probe.last_attention.shape == (3, tokens, 1, tokens)


def test_aat_baseline_uses_eight_heads_over_many_tokens() -> None:
    probe = AttentiveProbe(384, num_classes=3, num_tokens=65, num_heads=8).eval()
    assert (probe.num_heads, probe.head_dim) == (8, 96)
    probe(torch.randn(2, 65, 384))
    assert probe.last_attention.shape == (2, 8, 1, 65)


def test_attention_weights_are_a_distribution_over_tokens() -> None:
    torch.manual_seed(0)
    probe = AttentiveProbe(64, num_classes=4, num_tokens=10, attn_drop=0.3)
    probe.train()  # recorded before dropout, so still a distribution while training
    probe(torch.randn(16, 10, 64) * 3)
    attn = probe.last_attention
    assert torch.all(attn >= 0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(16, 10, 1))


def test_query_init_and_no_layer_embedding_by_default() -> None:
    torch.manual_seed(0)
    probe = AttentiveProbe(768, num_classes=5, num_tokens=24)
    assert probe.layer_embedding is None
    assert 0.015 < probe.query.std().item() < 0.025  # N(0, 0.02)
    names = {n for n, _ in probe.named_parameters()}
    assert {"norm_q.weight", "norm_k.weight", "norm_v.weight", "bn.weight", "classifier.weight"} <= names


def test_token_permutation_leaves_output_unchanged() -> None:
    torch.manual_seed(1)
    probe = AttentiveProbe(48, num_classes=6, num_tokens=12).eval()
    x = torch.randn(5, 12, 48)
    perm = torch.randperm(12)
    out, attn = probe(x), probe.last_attention
    out_p, attn_p = probe(x[:, perm]), probe.last_attention
    torch.testing.assert_close(out, out_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn[..., perm], attn_p)  # the weights move with their tokens


def test_layer_embedding_ablation_breaks_permutation_invariance() -> None:
    torch.manual_seed(1)
    probe = AttentiveProbe(48, num_classes=6, num_tokens=12, layer_embedding=True).eval()
    with torch.no_grad():
        probe.layer_embedding.mul_(50)  # make the slot identity matter
    x = torch.randn(5, 12, 48)
    perm = torch.flip(torch.arange(12), [0])
    assert not torch.allclose(probe(x), probe(x[:, perm]), atol=1e-4)


def test_bad_shapes_raise_probekit_errors() -> None:
    with pytest.raises(ProbekitError, match="fewer heads"):
        AttentiveProbe(16, num_classes=3, num_tokens=24)
    probe = AttentiveProbe(32, num_classes=3, num_tokens=4)
    with pytest.raises(ProbeShapeError, match=r"\(B, 4, 32\)"):
        probe(torch.randn(2, 5, 32))


def _literal_forward(probe: AttentiveProbe, x: torch.Tensor) -> torch.Tensor:
    """The paper's CrossAttention written out: project every token, softmax(q k^T * scale) v."""
    b, t, _ = x.shape
    h, hd = probe.num_heads, probe.head_dim
    q = probe.q(probe.norm_q(probe.query.expand(b, -1, -1))).reshape(b, 1, h, hd).transpose(1, 2)
    keys_in = x if probe.layer_embedding is None else x + probe.layer_embedding
    k = probe.k(probe.norm_k(keys_in)).reshape(b, t, h, hd).transpose(1, 2)
    v = probe.v(probe.norm_v(x)).reshape(b, t, h, hd).transpose(1, 2)
    attn = ((q * probe.scale) @ k.transpose(-2, -1)).softmax(-1)
    out = probe.proj((attn @ v).transpose(1, 2).reshape(b, -1))
    return probe.classifier(probe.bn(out))


@pytest.mark.parametrize("layer_embedding", [False, True])
def test_reassociated_forward_matches_the_literal_cross_attention(layer_embedding: bool) -> None:
    torch.manual_seed(2)
    probe = AttentiveProbe(96, num_classes=5, num_tokens=12, layer_embedding=layer_embedding).double()
    x = torch.randn(8, 12, 96, dtype=torch.float64)
    y = torch.randint(0, 5, (8,))
    for mode in ("train", "eval"):
        getattr(probe, mode)()
        fast, slow = probe(x), _literal_forward(probe, x)
        torch.testing.assert_close(fast, slow)
    probe.train()
    g_fast = torch.autograd.grad(nn.functional.cross_entropy(probe(x), y), list(probe.parameters()))
    g_slow = torch.autograd.grad(
        nn.functional.cross_entropy(_literal_forward(probe, x), y), list(probe.parameters())
    )
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b)
