"""The solver's dense-block preconditioner: its algebra, its blocks, and that it changes the path, not the optimum."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from probekit.probes.softmax import BLOCK_FROM, _Memory, _Objective, block_columns, fit_softmax
from probekit.probes.standardize import prepare


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    (xs,) = prepare(torch.tensor(x[:900])[None])
    return xs, torch.tensor(y[:900])


def _centred(v: torch.Tensor, K: int) -> torch.Tensor:
    w = v.view(v.shape[0], K, -1)
    return (w - w.mean(1, keepdim=True)).view(v.shape)


def test_memory_with_a_block_is_lbfgs_with_that_initial_matrix() -> None:
    # the compact form with H0 = gamma * Pi (blocks, class-centring) must give the two-loop recursion's
    # direction with the same H0, also after a re-fit that rescales the variables and changes Pi
    gen = torch.Generator().manual_seed(0)
    N, m, K, D1, t = 3, 4, 4, 7, 3
    P, f64 = K * D1, torch.float64
    a = torch.randn(N, P, P, generator=gen, dtype=f64)
    hess = a @ a.transpose(1, 2) + torch.eye(P, dtype=f64)
    mem = _Memory(N, m, P, f64, torch.device("cpu"))
    idx = torch.stack(
        [torch.stack([torch.randperm(D1, generator=gen)[:t] for _ in range(K)]) for _ in range(N)]
    )
    b = torch.randn(N, K, t, t, generator=gen, dtype=f64)
    inv = b @ b.transpose(2, 3) + torch.eye(t, dtype=f64)
    pre = torch.rand(N, P, generator=gen, dtype=f64) + 0.5

    def pi(r: torch.Tensor) -> torch.Tensor:  # the same H0, written out column by column
        u = (pre * _centred(r / pre, K)).view(N, K, D1).clone()
        for i in range(N):
            for k in range(K):
                u[i, k, idx[i, k]] = inv[i, k] @ u[i, k, idx[i, k]].clone()
        return _centred(u.view(N, P) * pre, K) / pre

    x = torch.randn(N, P, generator=gen, dtype=f64)
    g = (hess @ x[:, :, None])[:, :, 0]
    S, Y = [], []
    for it in range(7):
        if it == 3:  # re-fit: new variables (x / ratio) and the blocks switched on
            ratio = torch.rand(N, P, generator=gen, dtype=f64) + 0.5
            S, Y, g, x = [s / ratio for s in S], [y * ratio for y in Y], g * ratio, x / ratio
            hess = hess * ratio[:, :, None] * ratio[:, None, :]
            mem.idx, mem.inv, mem.pre = idx, inv, pre
            mem.rescale(ratio, g)
        s = 0.1 * torch.randn(N, P, generator=gen, dtype=f64)
        g_new = (hess @ (x + s)[:, :, None])[:, :, 0]
        mem.push(s, g_new - g, g_new)
        S, Y, x, g = (S + [s])[-m:], (Y + [g_new - g])[-m:], x + s, g_new
    gamma = (S[-1] * Y[-1]).sum(1) / (Y[-1] * pi(Y[-1])).sum(1)
    q, alphas = g.clone(), []
    for s, y in reversed(list(zip(S, Y))):
        alphas.append((s * q).sum(1) / (s * y).sum(1))
        q = q - alphas[-1][:, None] * y
    r = gamma[:, None] * pi(q)
    for (s, y), alpha in zip(zip(S, Y), reversed(alphas)):
        r = r + (alpha - (y * r).sum(1) / (s * y).sum(1))[:, None] * s
    torch.testing.assert_close(mem.gamma, gamma)
    torch.testing.assert_close(mem.hg(g, torch.ones(N, dtype=f64)), r, rtol=1e-10, atol=1e-12)


def test_blocks_are_the_hessian_on_the_chosen_columns(digits) -> None:
    xs, y = digits
    n, D, K, C = xs.shape[1], xs.shape[2], 10, 100.0
    start = fit_softmax(xs, y, torch.tensor([C]), K, dtype=torch.float64, max_iter=15, block=0)
    theta = torch.cat([start.coef.transpose(2, 3), start.intercept[..., None]], 3)  # (1, 1, K, D + 1)
    obj = _Objective(xs, y, torch.tensor([C]), K, torch.float64)
    pre, idx, inv = obj.scale_block(theta, 12, 300)
    # by hand: the curvature of every row, the Hessian block of class k over its 300 rows of largest
    # curvature on the chosen columns, its diagonal replaced by the whole Hessian's diagonal
    xt = torch.cat([xs[0], torch.ones(n, 1, dtype=xs.dtype)], 1)
    prob = torch.softmax(xt @ theta[0, 0].T, 1)
    curv = prob * (1 - prob) / n
    penalty = torch.full((D + 1,), 1 / (C * n), dtype=xs.dtype)
    penalty[D] = 0
    for k in range(K):
        full_diag = curv[:, k] @ xt.square() + penalty
        torch.testing.assert_close(pre[0, 0, k], full_diag.rsqrt())
        cols = idx[0, k]
        assert int(cols[0]) == D  # the intercept's column first
        assert set(cols[1:].tolist()) == set(full_diag[:D].topk(11).indices.tolist())
        rows = curv[:, k].topk(300).indices
        block = (xt[rows][:, cols] * curv[rows, k, None]).T @ xt[rows][:, cols]
        block.diagonal().copy_(full_diag[cols])
        # inv is the block's inverse in v = theta / pre
        expect = torch.linalg.inv(block * pre[0, 0, k, cols, None] * pre[0, 0, k, None, cols])
        torch.testing.assert_close(inv[0, k], expect, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("C", [1.0, 100.0])
def test_blocks_change_the_path_not_the_optimum(digits, C: float) -> None:
    xs, y = digits
    kw = {"tol": 1e-8, "dtype": torch.float64, "max_iter": 5000}
    diagonal = fit_softmax(xs, y, torch.tensor([C]), 10, block=0, **kw)
    blocks = fit_softmax(xs, y, torch.tensor([C]), 10, **kw)
    assert bool(diagonal.converged.all() and blocks.converged.all())
    torch.testing.assert_close(
        blocks.coef, diagonal.coef, rtol=0, atol=1e-3 * float(diagonal.coef.abs().max())
    )
    # on these 900 rows: 118 -> 74 iterations at C = 1, 209 -> 123 at C = 100 (the blocks start at
    # iteration BLOCK_FROM)
    assert int(diagonal.n_iter) > BLOCK_FROM
    assert int(blocks.n_iter) < 0.75 * int(diagonal.n_iter)


def test_block_columns_follow_the_cost_rule() -> None:
    # a re-fit (2 r t^2 flops a class) costs about two evaluations (4 d n), within [32, 128]
    assert block_columns(200, 200) == 32
    assert block_columns(2000, 385) == 38
    assert block_columns(2000, 1537) == 77
    assert block_columns(10000, 1537) == 128
