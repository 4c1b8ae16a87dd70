"""The site taxonomy (where in a ViT features are read) and the hook context manager that reads them.

A *site* is a point in the residual computation of a pre-norm timm ViT. Every block ``i`` has the
eight points of paper 1 (``ln1``, ``attn``, ``resid_mid``, ``ln2``, ``fc1``, ``act``, ``fc2``,
``resid_post``); the model has ``embed`` (the stream entering block 0) and ``norm`` (the final
norm's output). A *pool* reduces the ``(B, T, D)`` token tensor of a site to what is stored:
``cls`` (token 0), ``ap`` (mean of patch tokens, prefix and register tokens excluded by
``model.num_prefix_tokens``), ``mean`` (all tokens, paper 1's recipe) or ``tokens`` (everything).

Families (README, "Model families"): timm ``VisionTransformer`` (plain/augreg, DeiT-3, DINOv2 with
and without registers, CLIP with ``norm_pre``, SigLIP, MAE, global-average-pool ViTs), ``Eva``
(EVA-02: RoPE, fused SwiGLU ``GluMlp`` or ``SwiGLU`` with a sub-LayerNorm) and ``Beit`` (relative
position bias, ``gamma_1``/``gamma_2`` layer scale) all have pre-norm blocks and mean the same at
every site. In a gated MLP ``fc1`` is the fused value+gate projection (absent from ``SwiGLU``, which
has two) and ``act`` the gated product, read *before* any MLP sub-norm (the input of ``mlp.norm``).
Post-norm (``ResPostBlock``) and parallel blocks are refused by :func:`check_supported`. Models
whose final ``norm`` is an ``Identity`` (``fc_norm`` after pooling: BEiT, EVA-02, ``global_pool="avg"``)
give ``norm`` = the last block's output. Models without a class token get ``ap``/``mean`` when the
default pools are asked for (:func:`fit_pools`); asking for ``cls`` alone is refused.

:func:`capture` registers one hook per distinct (module, input-or-output) point, pools inside the
hook in float32 on the device, and removes every hook when the ``with`` block ends::

    keys = resolve_sites(model, sites=None, pools=("cls", "ap", "mean"))
    with capture(model, keys) as cap:
        model.forward_features(x)
        feats = cap.take()          # {key: (B, D) float32 tensor}, in ``keys`` order
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from timm.layers import mlp as timm_mlp
from torch import nn

from .errors import NotAViTError, ProbekitError
from .keys import BLOCK_SITES, MODEL_SITES, make_key, model_order, parse_key
from .keys import POOLS as _ALL_POOLS

SITES: tuple[str, ...] = BLOCK_SITES + MODEL_SITES
POOLS: tuple[str, ...] = _ALL_POOLS
DEFAULT_POOLS: tuple[str, ...] = ("cls", "ap", "mean")

# site -> (submodule path relative to blocks[i] or to the model, "out" for a forward hook's
# output, "in" for a forward pre-hook's first argument)
_BLOCK_POINTS: dict[str, tuple[str, str]] = {
    "ln1": ("norm1", "out"),
    "attn": ("attn", "out"),
    "resid_mid": ("norm2", "in"),
    "ln2": ("norm2", "out"),
    "fc1": ("mlp.fc1", "out"),
    "act": ("mlp.norm", "in"),  # the activation before any MLP sub-norm; mlp.fc2 input without one
    "fc2": ("mlp", "out"),
    "resid_post": ("", "out"),
}
_MODEL_POINTS: dict[str, tuple[str, str]] = {"embed": ("blocks.0", "in"), "norm": ("norm", "out")}


class SiteError(ProbekitError, ValueError):
    """A site, layer or pool request that does not fit the model."""


@dataclass(frozen=True)
class Point:
    """One hookable point: a module and whether its input or output is read."""

    module: str  # dotted name in ``model.named_modules()``
    where: str  # "in" (pre-hook, first positional argument) or "out" (forward hook output)


def _blocks(model: nn.Module) -> Sequence[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        raise NotAViTError(
            f"{type(model).__name__} has no `blocks` sequence; the site taxonomy needs a timm "
            "VisionTransformer-style model (blocks[i].norm1/attn/norm2/mlp)."
        )
    return blocks


# block classes whose attributes look right but whose sites would not mean what the taxonomy says
_UNSUPPORTED_BLOCKS: dict[str, str] = {
    "ResPostBlock": "post-norm blocks (x + norm1(attn(x))): norm1/norm2 read the branch outputs, so "
    "ln1, ln2 and resid_mid would not be the pre-norm sites",
    "ResPostRelPosBlock": "post-norm blocks (x + norm1(attn(x))): norm1/norm2 read the branch outputs, so "
    "ln1, ln2 and resid_mid would not be the pre-norm sites",
    "ParallelScalingBlock": "parallel attention and MLP branches on one shared norm (no norm1/norm2, no "
    "resid_mid between them)",
    "DiffParallelScalingBlock": "parallel attention and MLP branches on one shared norm (no resid_mid)",
    "ParallelThingsBlock": "several parallel attention and MLP branches per block (no single attn/mlp site)",
}


def site_point(site: str, block: int | None, model: nn.Module | None = None) -> Point:
    """The module and hook kind that read ``site`` (of block ``block`` for block sites).

    ``act`` is the input of ``mlp.norm`` (the MLP's sub-norm, an Identity in most ViTs); with a
    ``model`` whose MLP has no ``norm`` it falls back to the input of ``mlp.fc2``.
    """
    if block is None:
        module, where = _MODEL_POINTS[site]
        return Point(module, where)
    sub, where = _BLOCK_POINTS[site]
    if site == "act" and model is not None and not hasattr(_blocks(model)[block].mlp, "norm"):
        sub = "mlp.fc2"
    return Point(f"blocks.{block}" + (f".{sub}" if sub else ""), where)


def available_sites(model: nn.Module) -> list[str]:
    """Sites this model has (``fc1`` needs ``mlp.fc1``: a ``SwiGLU`` MLP has ``fc1_g``/``fc1_x``)."""
    modules = dict(model.named_modules())
    block0 = _blocks(model)[0]
    inner = dict(block0.named_modules())
    out = []
    for site in BLOCK_SITES:
        sub = _BLOCK_POINTS[site][0]
        if sub == "" or sub in inner or (site == "act" and "mlp.fc2" in inner):
            out.append(site)
    out.append("embed")
    if "norm" in modules:
        out.append("norm")
    return out


def check_supported(model: nn.Module) -> None:
    """Raise :class:`NotAViTError` naming what is missing when the sites cannot mean what they say."""
    block = _blocks(model)[0]
    kind = type(block).__name__
    if kind in _UNSUPPORTED_BLOCKS:
        raise NotAViTError(
            f"{type(model).__name__} has {kind} blocks, which probekit cannot probe: "
            f"{_UNSUPPORTED_BLOCKS[kind]}. The site taxonomy needs pre-norm blocks "
            "(x + attn(norm1(x)), then x + mlp(norm2(x))), as in timm's Block, EvaBlock and Beit's Block."
        )
    missing = [n for n in ("norm1", "attn", "norm2", "mlp") if not hasattr(block, n)]
    mlp = getattr(block, "mlp", None)
    if mlp is not None and not hasattr(mlp, "fc2"):
        missing.append("mlp.fc2")
    if missing:
        raise NotAViTError(
            f"{type(model).__name__}.blocks[0] ({kind}) lacks {', '.join(missing)}; probekit's sites need "
            "the pre-norm timm Block (x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))) with an "
            "MLP ending in mlp.fc2)."
        )


def has_class_token(model: nn.Module) -> bool:
    """Whether token 0 is a class token (timm's ``has_class_token``, else a ``cls_token`` parameter)."""
    flag = getattr(model, "has_class_token", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "cls_token", None) is not None


_TOLD_NO_CLS: set[str] = set()


def fit_pools(model: nn.Module, pools: Iterable[str]) -> tuple[str, ...]:
    """The pools a request means on this model: the one rule for models without a class token.

    On a model without a class token (SigLIP, global-average-pool ViTs), a request that includes
    ``cls`` together with other pools (the default ``cls ap mean``) keeps the others and says so
    once per model class; ``cls`` alone is refused. Other models get the request unchanged.
    """
    pools = tuple(dict.fromkeys(pools))
    if "cls" not in pools or has_class_token(model):
        return pools
    rest = tuple(p for p in pools if p != "cls")
    name = type(model).__name__
    if not rest:
        raise SiteError(
            f"pool 'cls' requested but this {name} has no class token (its token 0 is a patch or "
            "register token); use pools=('ap', 'mean') (--pools ap mean)"
        )
    if name not in _TOLD_NO_CLS:
        _TOLD_NO_CLS.add(name)
        warnings.warn(f"this {name} has no class token: pool 'cls' dropped, using {list(rest)}", stacklevel=3)
    return rest


def _expand_site(spec: str, depth: int, layers: list[int]) -> list[tuple[str, int | None]]:
    """``act`` -> every requested layer; ``blocks.3.act`` -> that block; ``embed``/``norm``."""
    if spec in MODEL_SITES:
        return [(spec, None)]
    if spec in BLOCK_SITES:
        return [(spec, i) for i in layers]
    try:
        fk = parse_key(f"{spec}/mean")
    except ValueError:
        raise SiteError(
            f"unknown site {spec!r}: use one of {SITES} (all layers) or 'blocks.<i>.<site>'"
        ) from None
    if not 0 <= fk.block < depth:
        raise SiteError(f"site {spec!r}: block index out of range for a model with {depth} blocks")
    return [(fk.site, fk.block)]


def resolve_sites(
    model: nn.Module,
    sites: Iterable[str] | None = None,
    pools: Iterable[str] = DEFAULT_POOLS,
    token_sites: Iterable[str] = (),
    layers: Iterable[int] | None = None,
) -> list[str]:
    """Expand a request into the ordered list of feature keys (``blocks.7.act/cls``, ...).

    ``sites=None`` means every site the model has on every block plus ``embed`` and ``norm``.
    A bare block site (``act``) expands over ``layers`` (default: all blocks; negative indices
    count from the end); ``blocks.3.act`` names one block. ``token_sites`` adds the ``tokens``
    pool (all tokens, ~100x larger) for the named sites only. Keys come out model-order:
    ``embed``, then block by block in site order, then ``norm``.
    """
    check_supported(model)
    depth = len(_blocks(model))
    have = available_sites(model)
    if layers is None:
        layer_list = list(range(depth))
    else:
        layer_list = []
        for i in layers:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise SiteError(f"layer {i} out of range for a model with {depth} blocks")
            layer_list.append(j)
        layer_list = sorted(set(layer_list))
    pools = tuple(dict.fromkeys(pools))
    for p in pools:
        if p not in POOLS:
            raise SiteError(f"unknown pool {p!r}: use some of {POOLS}")
    if "tokens" in pools:
        raise SiteError("the 'tokens' pool is opt-in per site: pass token_sites=[...] instead")
    pools = fit_pools(model, pools)
    requested: dict[tuple[str, int | None], list[str]] = {}
    for spec in sites if sites is not None else have:
        for s, b in _expand_site(spec, depth, layer_list):
            if s not in have:
                raise SiteError(f"site {s!r} is not available on this model (it has {have})")
            requested.setdefault((s, b), []).extend(pools)
    for spec in token_sites:
        for s, b in _expand_site(spec, depth, layer_list):
            if s not in have:
                raise SiteError(f"site {s!r} is not available on this model (it has {have})")
            requested.setdefault((s, b), []).append("tokens")

    keys = []
    for s, b in sorted(requested, key=lambda item: model_order(*item)):
        for p in POOLS:  # canonical pool order
            if p in requested[(s, b)]:
                keys.append(make_key(s, b, p))
    if not keys:
        raise SiteError("no features requested: give at least one site and one pool")
    return keys


class _Pooler:
    """Pools one (B, T, D) tensor into every requested pool, float32, on its device."""

    def __init__(self, keys_by_pool: dict[str, str], num_prefix: int) -> None:
        self.keys_by_pool = keys_by_pool
        self.num_prefix = num_prefix

    def __call__(self, x: torch.Tensor, out: dict[str, torch.Tensor], done: dict[str, torch.Tensor]) -> None:
        """Pool ``x`` into ``out[key]``; ``done`` holds pools already computed for this tensor."""
        x = x.detach()
        npt = self.num_prefix
        n_tok = x.shape[1]
        for pool, key in self.keys_by_pool.items():
            if pool not in done:
                if pool == "cls":
                    # a copy, never a view: an in-place op after the hook (LayerScale with
                    # inplace=True) would otherwise change what was captured
                    done[pool] = x[:, 0].to(torch.float32, copy=True)
                elif pool in ("ap", "mean"):
                    # one pass over the patch tokens serves both ap and mean
                    if "_patch_sum" not in done:
                        done["_patch_sum"] = x[:, npt:].sum(1, dtype=torch.float32)
                    patch_sum = done["_patch_sum"]
                    if pool == "ap":
                        done[pool] = patch_sum / float(n_tok - npt)
                    else:
                        total = patch_sum + x[:, :npt].sum(1, dtype=torch.float32) if npt else patch_sum
                        done[pool] = total / float(n_tok)
                else:  # tokens: a float32 copy, so later in-place ops cannot change it
                    done[pool] = x.to(torch.float32, copy=True)
            out[key] = done[pool]


def _version(x: torch.Tensor) -> int:
    try:
        return x._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return -1


class Capture:
    """What :func:`capture` yields: pooled features of the most recent forward pass."""

    def __init__(self, keys: Sequence[str], derived: dict[str, tuple[str, nn.Linear]] | None = None) -> None:
        self.keys = list(keys)
        self.features: dict[str, torch.Tensor] = {}
        # key -> (key of its pooled input, the linear layer): pooled fc1/fc2 computed from their inputs
        self.derived = dict(derived or {})
        # id(tensor) -> (weakref, version, pools computed): a tensor that reaches two hooks (an
        # Identity module hands its input on unchanged) is pooled once, its results shared
        self._seen: dict[int, tuple[weakref.ref, int, dict[str, torch.Tensor]]] = {}

    def take(self) -> dict[str, torch.Tensor]:
        """The features of the last forward, in key order; clears them for the next forward."""
        for key, (pooled_in, linear) in self.derived.items():
            if pooled_in in self.features:
                self.features[key] = _linear_fp32(self.features.pop(pooled_in), linear)
        missing = [k for k in self.keys if k not in self.features]
        if missing:
            raise ProbekitError(
                f"{len(missing)} requested sites did not fire (first: {missing[0]}); was the forward "
                "run through forward_features/forward inside the `with capture(...)` block?"
            )
        feats = {k: self.features[k] for k in self.keys}
        self.features = {}
        self._seen.clear()
        return feats

    def take_flat(self) -> torch.Tensor:
        """All non-token features of the last forward as one (B, sum D) float32 tensor."""
        feats = self.take()
        return torch.cat([v for k, v in feats.items() if not k.endswith("/tokens")], dim=1)

    def _pool(self, pooler: _Pooler, x: torch.Tensor) -> None:
        seen = self._seen.get(id(x))
        version = _version(x)
        if seen is None or seen[0]() is not x or seen[1] != version:
            seen = (weakref.ref(x), version, {})
            self._seen[id(x)] = seen
        pooler(x, self.features, seen[2])


# timm MLPs whose forward ends ``fc2 -> drop2``, with ``fc1`` (where present) reading the MLP's input
_LINEAR_TAIL_MLPS: tuple[type, ...] = tuple(
    c for c in (getattr(timm_mlp, n, None) for n in ("Mlp", "GluMlp", "SwiGLU")) if isinstance(c, type)
)


def derived_input(model: nn.Module, key: str) -> tuple[Point, nn.Linear] | None:
    """The point whose pooled value, through a linear layer, gives the pooled ``key``; ``None`` if none.

    A pool (token 0, a mean of tokens) commutes with an affine map, so the pooled ``fc1`` of a
    block is ``mlp.fc1`` applied to the pooled input of ``mlp.fc1`` (the ``ln2`` tensor itself in
    every supported family) and the pooled ``fc2`` (the MLP's output) is ``mlp.fc2`` applied to
    the pooled input of ``mlp.fc2`` (the ``act`` tensor when the MLP has no sub-norm). Reading the
    narrow input instead of the 4x wide ``fc1`` tokens, and sharing the pool already computed for
    ``ln2``/``act``, removes the widest hook reads (``benchmarks/README.md``). Only for timm's
    ``Mlp``, ``GluMlp`` and ``SwiGLU`` in eval mode (``drop2`` then passes ``fc2``'s output on
    unchanged) and pooled keys; the ``tokens`` pool and any other MLP are hooked as they are.
    """
    fk = parse_key(key)
    if fk.site not in ("fc1", "fc2") or fk.pool == "tokens" or fk.block is None:
        return None
    mlp = getattr(_blocks(model)[fk.block], "mlp", None)
    if not isinstance(mlp, _LINEAR_TAIL_MLPS) or mlp.training:
        return None
    linear = getattr(mlp, fk.site, None)
    if type(linear) is not nn.Linear:
        return None
    return Point(f"blocks.{fk.block}.mlp.{fk.site}", "in"), linear


def _linear_fp32(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear(x)`` in float32 whatever autocast is active (the hooks pool in float32 too)."""
    with torch.autocast(x.device.type, enabled=False):
        bias = None if linear.bias is None else linear.bias.detach().float()
        return torch.nn.functional.linear(x.float(), linear.weight.detach().float(), bias)


@contextmanager
def capture(model: nn.Module, keys: Sequence[str], *, derive: bool = True) -> Iterator[Capture]:
    """Hook ``model`` so every forward inside the block records the pooled features ``keys``.

    One hook per distinct point (sites sharing a module and hook kind share a hook; ``ln2`` and
    ``resid_mid`` both live on ``norm2`` but one is its output, the other its input). Pooling runs
    inside the hook, in float32, on the tensor's device. Hooks are removed on exit, exceptions
    included. Register hooks before any ``torch.compile`` of the model. ``derive``: compute pooled
    ``fc1``/``fc2`` from their layers' pooled inputs where that is exact (:func:`derived_input`);
    ``False`` hooks their outputs.
    """
    modules = dict(model.named_modules())
    num_prefix = int(getattr(model, "num_prefix_tokens", 1))
    grouped: dict[Point, dict[str, str]] = {}
    inputs: dict[Point, dict[str, str]] = {}  # the derived keys' input points, hooked apart
    derived: dict[str, tuple[str, nn.Linear]] = {}
    for key in keys:
        fk = parse_key(key)
        if fk.pool == "cls" and not has_class_token(model):
            raise SiteError(f"key {key!r}: {type(model).__name__} has no class token; use 'ap' or 'mean'")
        found = derived_input(model, key) if derive else None
        if found is not None:
            point, linear = found
            inputs.setdefault(point, {})[fk.pool] = f"{key}<in"
            derived[key] = (f"{key}<in", linear)
            continue
        point = site_point(fk.site, fk.block, model)
        if point.module not in modules:
            raise SiteError(f"key {key!r}: model has no module {point.module!r}")
        grouped.setdefault(point, {})[fk.pool] = key
    cap = Capture(keys, derived)
    handles = []
    try:
        # the same tensor reaching two hooks is pooled once (Capture._seen): an input hooked for a
        # derived key shares the pools of the site it equals (ln2, act)
        for point, by_pool in [*grouped.items(), *inputs.items()]:
            pooler = _Pooler(by_pool, num_prefix)
            mod = modules[point.module]
            if point.where == "out":
                handles.append(mod.register_forward_hook(_out_hook(cap, pooler)))
            else:
                handles.append(mod.register_forward_pre_hook(_in_hook(cap, pooler)))
        yield cap
    finally:
        for h in handles:
            h.remove()


def _out_hook(cap: Capture, pooler: _Pooler) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        cap._pool(pooler, output[0] if isinstance(output, tuple) else output)

    return hook


def _in_hook(cap: Capture, pooler: _Pooler) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        cap._pool(pooler, args[0])

    return hook


def key_dims(model: nn.Module, keys: Sequence[str], image_size: int | tuple[int, int]) -> dict[str, tuple]:
    """Per-key feature shape (without the batch axis): read off the modules where they say it
    (``embed_dim``, ``mlp.fc1.out_features``, the patch grid), else from a forward of a zero image."""
    try:
        return _static_key_dims(model, keys)
    except (AttributeError, TypeError, ValueError):
        return forward_key_dims(model, keys, image_size)


def _static_key_dims(model: nn.Module, keys: Sequence[str]) -> dict[str, tuple]:
    if getattr(model.patch_embed, "dynamic_img_size", False):
        raise ValueError("token count depends on the input size")
    dim = int(model.embed_dim)
    tokens = int(model.num_prefix_tokens) + int(model.patch_embed.num_patches)
    out = {}
    for key in keys:
        fk = parse_key(key)
        if fk.site == "fc1":
            width = int(model.blocks[fk.block].mlp.fc1.out_features)
        elif fk.site == "act":
            width = int(model.blocks[fk.block].mlp.fc2.in_features)
        else:
            width = dim
        out[key] = (tokens, width) if fk.pool == "tokens" else (width,)
    return out


def forward_key_dims(
    model: nn.Module, keys: Sequence[str], image_size: int | tuple[int, int]
) -> dict[str, tuple]:
    """Per-key feature shape from one forward of a zero image (works for any model the hooks fit)."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    p = next(model.parameters())
    x = torch.zeros(1, 3, *image_size, device=p.device, dtype=p.dtype)
    with torch.no_grad(), capture(model, keys) as cap:
        model.forward_features(x)
        feats = cap.take()
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}
