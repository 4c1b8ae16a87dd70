"""Exact float32 matrix products on the CPU through oneDNN's AVX-512 kernels, where that is safe.

torch runs float32 ``bmm``/``matmul`` on the CPU through MKL, which on AMD processors takes its
AVX2 path: ~90 GFLOP/s a core on the Zen 5 machine the benchmarks ran on, against ~200 for
oneDNN's AVX-512 ``brg_matmul`` kernels on the same products (``benchmarks/README.md``). torch
hands float32 products to oneDNN only when ``torch.backends.mkldnn.matmul.fp32_precision`` is
``"bf16"``, a permission to round the inputs to bfloat16. oneDNN uses that permission only with
AMX tiles (its "bf32" kernels); on a CPU without AMX its float32 kernels compute in float32.

:func:`onednn_products` grants the permission for the products inside it only where that holds,
checked once per process (:func:`onednn_exact`): oneDNN is built in, the CPU has no AMX, and
products of inputs that bfloat16 cannot represent come back to float32 accuracy (relative error
~1e-6; bfloat16 inputs would give ~6e-4). Anywhere else, or with ``PROBEKIT_ONEDNN=0``, it
changes nothing. The results are float32 products either way, summed in another order than
MKL's, so they differ from MKL's in the last bits, not in precision.

The setting is process-wide: it is on while any thread is inside :func:`onednn_products` and
restored when the last one leaves, so products other threads run meanwhile also go to oneDNN.
A product's route decides its last bits, so callers enter it once around all of their parallel
work (:func:`probekit.probes.softmax.fit_softmax`, :func:`probekit.probes.linear.fit_linear_probes`,
:func:`probekit.probes.linear.row_space`), not around single products: a product whose route
depended on what another thread was doing would make a probe's numbers vary from run to run.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV = "PROBEKIT_ONEDNN"  # "0": never route products to oneDNN
BF16_INPUT_ERROR = 1e-4  # relative error of the check's products above which oneDNN rounded the inputs

_lock = threading.Lock()
_inside = 0  # threads inside onednn_products
_saved: str | None = None  # the setting before the first of them entered


def _setting() -> object | None:
    """torch's float32 matmul precision switch for oneDNN, or ``None`` where this torch has none."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    matmul = getattr(mkldnn, "matmul", None)
    return matmul if matmul is not None and hasattr(matmul, "fp32_precision") else None


@functools.lru_cache(maxsize=1)
def onednn_exact() -> bool:
    """Whether float32 products may go to oneDNN here and stay float32 (module docstring); cached."""
    if os.environ.get(ENV, "1") == "0" or _setting() is None or not torch.backends.mkldnn.is_available():
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is None or amx():
        return False
    return _products_stay_float32()


def _products_stay_float32() -> bool:
    """Products of inputs bfloat16 cannot hold (1 + small steps), with oneDNN allowed, against float64."""
    gen = torch.Generator().manual_seed(0)
    matmul = _setting()
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "bf16"
        for b, m, k, n in ((2, 40, 200, 200), (2, 80, 385, 512), (1, 256, 1536, 64)):
            a = 1 + 1e-3 * torch.randn(b, m, k, generator=gen)
            c = 1 + 1e-3 * torch.randn(b, k, n, generator=gen)
            got = torch.bmm(a, c).double()
            want = torch.bmm(a.double(), c.double())
            if float(((got - want).abs().max() / want.abs().max())) > BF16_INPUT_ERROR:
                return False
    finally:
        matmul.fp32_precision = before
    return True


@contextmanager
def onednn_products(worth_it: bool = True) -> Iterator[None]:
    """Inside, float32 CPU products run through oneDNN where :func:`onednn_exact` and ``worth_it`` (the
    caller's judgement that its products are large enough to gain); elsewhere nothing changes."""
    global _inside, _saved
    if not worth_it or not onednn_exact():
        yield
        return
    matmul = _setting()
    with _lock:
        if _inside == 0:
            _saved = matmul.fp32_precision
            matmul.fp32_precision = "bf16"
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                matmul.fp32_precision = _saved
