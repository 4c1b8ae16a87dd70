"""oneDNN's float32 products (probekit.products): exact where used, the setting restored, the solve unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from probekit import products
from probekit.probes import linear, softmax
from probekit.probes.linear import fit_linear_probes
from probekit.probes.softmax import fit_softmax
from probekit.probes.standardize import prepare


def _fp32_setting() -> str | None:
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return getattr(matmul, "fp32_precision", None)


def test_products_inside_are_float32_accurate() -> None:
    # inputs bfloat16 cannot hold: rounded to bfloat16 they would give ~6e-4 here, float32 ~1e-6
    gen = torch.Generator().manual_seed(1)
    a = 1 + 1e-3 * torch.randn(3, 80, 385, generator=gen)
    b = 1 + 1e-3 * torch.randn(3, 385, 300, generator=gen)
    want = torch.bmm(a.double(), b.double())
    rounded = torch.bmm(a.bfloat16().double(), b.bfloat16().double())
    assert float((rounded - want).abs().max() / want.abs().max()) > 3 * products.BF16_INPUT_ERROR
    with products.onednn_products():
        if products.onednn_exact():
            assert _fp32_setting() == "bf16"  # the products below do go to oneDNN
        got = torch.bmm(a, b).double()
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def test_the_setting_is_restored_after_nesting_threads_and_errors() -> None:
    before = _fp32_setting()
    with pytest.raises(RuntimeError, match="inside"), products.onednn_products():
        with products.onednn_products():
            pass
        raise RuntimeError("inside")
    assert _fp32_setting() == before

    # two threads inside at once: the setting holds until the last one leaves
    inside, leave = threading.Barrier(2), threading.Event()
    seen = []

    def work(first: bool) -> None:
        with products.onednn_products():
            inside.wait()
            if first:
                return  # leaves while the other is still inside
            leave.wait()
            seen.append(_fp32_setting())

    t1, t2 = threading.Thread(target=work, args=(True,)), threading.Thread(target=work, args=(False,))
    t1.start(), t2.start()
    t1.join()
    leave.set()
    t2.join()
    assert seen == ["bf16" if products.onednn_exact() else before]
    assert _fp32_setting() == before


def test_switched_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(products.ENV, "0")
    products.onednn_exact.cache_clear()
    try:
        assert not products.onednn_exact()
        before = _fp32_setting()
        with products.onednn_products():
            assert _fp32_setting() == before
    finally:
        monkeypatch.delenv(products.ENV)
        products.onednn_exact.cache_clear()


@pytest.fixture
def onednn_at_any_size(monkeypatch) -> None:
    """oneDNN's products for these small tests too (by default only from ONEDNN_ROWS training rows)."""
    monkeypatch.setattr(softmax, "ONEDNN_ROWS", 0)
    monkeypatch.setattr(linear, "ONEDNN_ROWS", 0)


def test_the_solve_is_the_same_probe_with_either_product(monkeypatch, onednn_at_any_size) -> None:
    # the same probes to float32's rounding: oneDNN sums the products in another order than MKL
    x, y = load_digits(return_X_y=True)
    xs, xt = prepare(
        torch.tensor(x[:600], dtype=torch.float32)[None], torch.tensor(x[600:], dtype=torch.float32)[None]
    )
    cs = torch.tensor([0.01, 1.0, 100.0])
    fits = {}
    for name, exact in (("onednn", products.onednn_exact), ("mkl", lambda: False)):
        monkeypatch.setattr(products, "onednn_exact", exact)
        fits[name] = fit_softmax(xs, torch.tensor(y[:600]), cs, 10, tol=1e-6, max_iter=2000)
    a, b = fits["onednn"], fits["mkl"]
    assert bool(a.converged.all() and b.converged.all())
    np.testing.assert_allclose(a.coef.numpy(), b.coef.numpy(), atol=2e-3 * float(b.coef.abs().max()))
    # a test row on a class boundary may go either way: at most 2 of the 1197 per probe
    assert int((a.predict(xt) != b.predict(xt)).sum(-1).max()) <= 2


def test_probe_tables_are_the_same_run_to_run_and_with_one_thread(onednn_at_any_size) -> None:
    # every product of a table runs through one route whatever the other worker is doing, so two
    # runs on two threads and one run on one thread give the same table to the bit, in the same row
    # order (12 keys: pieces of 2 keys on two threads, of 3 on one)
    x, y = load_digits(return_X_y=True)
    feats = {f"blocks.{p}.act/mean": (x ** (1 + p / 4)).astype(np.float32) for p in range(12)}
    train = {k: v[:500] for k, v in feats.items()}
    test = {k: v[500:800] for k, v in feats.items()}
    kw = {"depth": 4, "Cs": (0.01, 1.0, 100.0), "val_fraction": 0.2, "n_boot": 50, "progress": False}
    threads = torch.get_num_threads()
    try:
        tables = []
        for n_threads in (2, 2, 1):
            torch.set_num_threads(n_threads)
            tables.append(fit_linear_probes(train, y[:500], test, y[500:800], **kw))
    finally:
        torch.set_num_threads(threads)
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other)
