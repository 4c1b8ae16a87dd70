"""Batched multinomial logistic regression: many L2-regularised softmax probes solved at once.

Solves, for every feature set ``f`` and regularisation value ``C``, exactly scikit-learn's
``LogisticRegression(C=C)`` objective (multinomial, L2 penalty, unpenalised intercept)::

    mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C n)

so a probe here and scikit-learn's at the same ``C`` are the same model. With ``class_weight``
(``"balanced"``: inverse class frequencies) each row's loss is weighted and the loss and the
penalty are divided by the sum of the weights, scikit-learn's weighting. For two classes
scikit-learn fits the binomial model, which is the two-class softmax at ``C / 2``
(:func:`fit_softmax`), so ``C`` means the same there too. The solver is L-BFGS,
batched over probes: every probe keeps its own curvature history, step length (Armijo
backtracking) and stopping test, but all probes share each matrix product. Feature sets of
equal width are stacked as ``X: (F, n, D)``; all ``C`` values of one feature set are solved
together, so one ``bmm`` of the ``(F, C*K, D)`` weights by ``(F, D, n)`` evaluates all ``F * C``
probes and each feature matrix is read once per evaluation, not once per ``C``.

The L-BFGS memory is kept in compact form (Byrd, Nocedal & Schnabel 1994): ``-H g`` is one
batched product of the stored pairs with a ``2m``-vector of coefficients from ``m x m`` algebra,
and each new pair's inner products with the memory come from one more product, instead of the
two-loop recursion's ``~4m`` elementwise passes per iteration. A
probe that needs backtracking is re-evaluated alone (with the other ``C`` values of its feature
set), not with the whole batch.

Stopping test, in the original variables: ``||grad||_2 <= min(tol, rtol * ||W|| / (C n))``, and
never below ``tol / 1000``. The first bound implies scikit-learn's ``max |grad| <= tol`` (its
``gtol``) in every orthonormal basis, so the exact rotation of
:func:`probekit.probes.linear.row_space` cannot loosen it. The second tightens it at large ``C``:
with fewer rows than dimensions the optimum is flat there (the penalty's curvature is
``1/(C n)``, so a probe may sit ``||grad|| C n`` from the optimum along its flattest direction),
and a fixed tolerance leaves test accuracy unresolved. Asking the gradient to be a small
fraction of the penalty's own pull ``||W|| / (C n)`` bounds that distance by ``rtol ||W||``
(measurements in ``benchmarks/README.md``, "Solver measurements"). That bound holds at every
``C``, so ``tol`` only tightens further where ``rtol`` is loose (small ``C``); its default ``1e-4``
is scikit-learn's own default ``tol``. (``1e-5`` cost 15-30% more iterations and moved no probe
nearer the optimum: every probe of the 288 feature sets of digits at n = 200, and 16 at n = 2000,
stayed within 1 point of test accuracy of a float64 ``tol=1e-7`` solve either way.)

``dtype=float32`` (the default, about twice as fast) resolves gradients well below the default
targets' floor ``tol / 1000 = 1e-7``: ``||grad||`` evaluated in float32 at float64 optima (2000
rows, 384 wide) is ``4e-8 - 9e-8`` at ``C = 1`` and ``5e-10 - 4e-9`` at ``C = 1000``, where the
smallest targets are. The loss and its residual come from the other classes' probabilities
(:func:`_loss_residual`; the textbook ``p_y - 1`` left ``2e-8`` at ``C = 1000``), and the line search
accepts a step by Armijo's test or, where the objective cannot resolve the decrease, by its
derivative form (Hager & Zhang's approximate Wolfe test, from the trial's gradient, computed
anyway). So a float32 solve stops a probe at ``1e-7`` at the latest and, with the default ``tol``,
solves every probe itself (float64 finishes took ~40% of a solve when float32 stopped at ``1e-6``);
smaller targets (a smaller ``tol``) are finished in float64 from where float32 stopped. In
float32 a probe also stops early when no step is accepted any more or ``||grad||`` has not halved
its best value in 200 iterations; float64 finishes those too. A float64 probe stops short only
when no step is accepted (its precision is spent) and is returned unconverged with ``n_iter < max_iter``.

Preconditioning: a diagonal change of variables ``w = p * v`` (the objective is unchanged),
``p_kj = (sum_i p_ik (1 - p_ik) x_ij^2 / n + 1/(C n))^(-1/2)`` for class ``k`` and column ``j``,
with ``p_ik`` the probabilities where ``p`` was fitted: ``p^-2`` is the Hessian's diagonal there,
and in the orthogonal-column basis of ``row_space`` the diagonal is most of the Hessian. Adding
one vector to every class's weights leaves the softmax unchanged and only adds penalty, so the
optimum's weights sum to zero over classes; a class-dependent ``p`` would let steps drift along
that flat direction, so every step is projected onto the class-centred subspace (the gradient
lies in it, so the projection keeps descent). Every ``refit`` iterations ``p`` is re-fitted to
the current point (at large C the rows a probe separates stop contributing curvature) and the
L-BFGS memory is carried over into the new variables (its pairs rescaled, their inner products
recomputed), not cleared (what that saves: ``benchmarks/README.md``).

The diagonal misses what slows large-``C`` probes most: as a probe separates the training rows, its
curvature concentrates on the few rows near its class boundaries, whose curvature-weighted mean
is far from zero, so the intercept is coupled to every weight, and whose features are not
aligned with the principal basis. So from iteration ``BLOCK_FROM`` on (the small-``C`` probes have
mostly stopped) the preconditioner also holds, per probe and class, the exact Hessian on a few
columns (:meth:`_Objective.scale_block`): the intercept's and the weight columns of largest
curvature (:func:`block_columns`), summed over the ``BLOCK_ROWS`` rows of largest curvature, with
the whole Hessian's diagonal; both are re-fitted every ``BLOCK_REFIT`` iterations. L-BFGS then
starts each direction from that block-diagonal inverse instead of a multiple of the identity
(``H0 = gamma Pi`` in Byrd, Nocedal & Schnabel's compact form, whose products with the memory's
``y`` pairs are kept through ``Pi``). On 16 feature sets of fashion_mnist at n = 2000 it cut the
iterations at C = 1000 from 343 to 118-141 on average and the solve 2.6-3x; the intercept's
column carries most of it (without it, 343 -> 261). Runs on any torch device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from probekit.parallel import cpu_workers, side_by_side
from probekit.products import onednn_products

FLOAT32_RESOLUTION = 1e-7  # the smallest ||grad|| a float32 solve is asked to reach (module docstring)
FLOAT32_STALL = 200  # float32 iterations without ||grad|| halving before float64 takes over
BLOCK_ROWS = 512  # the rows of largest curvature the preconditioner's dense blocks are computed from
BLOCK_FROM = 20  # the iteration the blocks start at (most small-C probes have stopped by then)
BLOCK_REFIT = 20  # iterations between re-fits of the blocks (and, from BLOCK_FROM on, of the diagonal)
SHORT_HISTORY_ROWS = 1000  # fewer training rows than this: a shorter L-BFGS memory (lbfgs_history)
CPU_BATCH = 16  # most feature sets in one batch on a CPU (cpu_batch)
# training rows from which the products go through oneDNN (probekit.products): at 2000 rows they
# dominate a solve and run 2.2x faster there (a solve 25-30% faster); at 130-200 rows oneDNN's
# per-product costs cancel that (n = 200: 6.27 against 6.16 s; the demo's notebooks 02-03 ~8% slower)
ONEDNN_ROWS = 1000
BATCHES_PER_WORKER = 4  # batches each CPU worker gets at least, given feature sets enough (cpu_batch)


@dataclass
class SoftmaxFit:
    """Fitted probes: ``coef (F, C, D, K)``, ``intercept (F, C, K)``, iterations and convergence ``(F, C)``."""

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(F, C, m, K)`` for features ``x: (F, m, D)`` (already preprocessed)."""
        F, C, D, K = self.coef.shape
        w = self.coef.permute(0, 2, 1, 3).reshape(F, D, C * K)
        logits = torch.bmm(x.to(w.dtype), w).view(F, -1, C, K) + self.intercept[:, None]
        return logits.permute(0, 2, 1, 3)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices ``(F, C, m)`` for features ``x: (F, m, D)`` (already preprocessed)."""
        return self.logits(x).argmax(-1)

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``decision_function``: ``(F, C, m)`` for two classes (the second class's logit
        minus the first's, the binomial model's score), else the class-centred logits ``(F, C, m, K)``."""
        z = self.logits(x)
        return z[..., 1] - z[..., 0] if z.shape[-1] == 2 else z - z.mean(-1, keepdim=True)


class _Objective:
    """scikit-learn's objective for ``B`` feature sets x ``C`` values; parameters ``theta: (B, C, K, D+1)``.

    ``theta[..., :D]`` are the weights, ``theta[..., D]`` the intercepts: probe-major, so every
    probe's parameters are one contiguous vector for the L-BFGS algebra, and class-major within a
    probe, so logits come out as ``(B, C, K, n)`` with the rows innermost, where the softmax over
    the ``K`` classes is a fast strided reduction (a softmax over an innermost axis of 10 is not).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        Cs: torch.Tensor,
        n_classes: int,
        dtype: torch.dtype,
        weights: torch.Tensor | None = None,
    ):
        self.x = x.to(dtype).contiguous()
        # the rows again, column-major: the logits' product reads them ~20% faster than a transposed view
        self.xt = self.x.transpose(1, 2).contiguous()
        B, n, D = self.x.shape
        self.n, self.D, self.K = n, D, n_classes
        # row weights s_i: loss sum_i s_i CE_i / S, penalty ||W||^2 / (2 C S), S = sum_i s_i (scikit-learn's)
        total = float(n) if weights is None else float(weights.double().sum())
        self.rw = None if weights is None else (weights.to(self.x.device, torch.float64) / total).to(dtype)
        # the gradient's 1/n (or s_i / S) folded into its product
        self.x_n = self.x / n if self.rw is None else self.x * self.rw[:, None]
        self.mu = (1.0 / (Cs.to(self.x.device, torch.float64) * total)).to(dtype).expand(B, -1).contiguous()
        self.C = self.mu.shape[1]
        self.y = y.to(self.x.device).view(1, 1, 1, n).expand(B, self.C, 1, n)

    def keep(self, sets: torch.Tensor, cs: torch.Tensor) -> None:
        """Drop every feature set but ``sets`` and every regularisation value but ``cs``."""
        self.x, self.xt, self.x_n, self.mu, self.y = (
            self.x[sets],
            self.xt[sets],
            self.x_n[sets],
            self.mu[sets][:, cs],
            self.y[sets][:, cs],
        )
        self.C = len(cs)

    def logits(self, theta: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """``(B, C, K, n)`` logits of the probes ``theta`` on the rows of ``xt: (B, D, n)`` (column-major)."""
        B, C, K, D = theta.shape[0], theta.shape[1], self.K, self.D
        flat = theta.view(B, C * K, D + 1)
        return torch.baddbmm(flat[:, :, D:], flat[:, :, :D], xt).view(B, C, K, xt.shape[2])

    def value_grad(
        self, theta: torch.Tensor, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``(B, C)`` and gradient (shape of ``theta``); ``idx``: the feature sets ``theta`` belongs to."""
        xt, x_n, mu = (
            (self.xt, self.x_n, self.mu) if idx is None else (self.xt[idx], self.x_n[idx], self.mu[idx])
        )
        B, C, K, D, n = theta.shape[0], self.C, self.K, self.D, self.n
        y = self.y[:B]
        w = theta[..., :D]
        loss, res = _loss_residual(self.logits(theta, xt), y)
        loss = loss.sum((2, 3)).div_(n) if self.rw is None else (loss * self.rw).sum((2, 3))
        f = loss + 0.5 * mu * w.square().sum((2, 3))
        g = torch.empty_like(theta)
        gw = torch.bmm(res.view(B, C * K, n), x_n).view(B, C, K, D)
        torch.addcmul(gw, mu[:, :, None, None], w, out=g[..., :D])
        if self.rw is None:
            torch.sum(res, 3, out=g[..., D]).div_(n)
        else:
            g[..., D] = (res * self.rw).sum(3)
        return f, g

    def _diagonal(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hessian's diagonal at ``theta`` (shape of ``theta``) and each row's curvature weight
        ``p_ik (1 - p_ik) s_i / S`` (``(B, C, K, n)``; ``s_i / S = 1 / n`` without row weights)."""
        B, C, K, D, n = theta.shape[0], self.C, self.K, self.D, self.n
        prob = torch.softmax(self.logits(theta, self.xt), 2)
        curv = prob * (1 - prob)  # (B, C, K, n)
        diag = torch.empty(B, C, K, D + 1, dtype=theta.dtype, device=theta.device)
        mu = self.mu.repeat_interleave(K, 1)[:, :, None]
        diag[..., :D] = torch.baddbmm(mu, curv.view(B, C * K, n), self.x_n * self.x).view(B, C, K, D)
        wcurv = curv / n if self.rw is None else curv * self.rw
        diag[..., D] = wcurv.sum(3).clamp_min(1e-12)
        return diag, wcurv

    def scale(self, theta: torch.Tensor) -> torch.Tensor:
        """The diagonal preconditioner ``p`` at ``theta`` (module docstring), shape of ``theta``."""
        return self._diagonal(theta)[0].rsqrt()

    def scale_block(
        self, theta: torch.Tensor, cols: int, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The diagonal preconditioner ``p`` and, per probe and class, a dense block of the Hessian on
        ``cols`` columns: ``(p, idx, inv)``, ``idx: (B * C, K, cols)`` the columns (the intercept's
        first), ``inv: (B * C, K, cols, cols)`` the block's inverse in the variables ``v = theta / p``.

        The columns: the intercept's (the curvature-weighted mean of the features couples it to every
        weight) and the ``cols - 1`` weight columns of largest curvature. The block is
        ``sum_i w_i x_i x_i^T`` on those columns over the ``rows`` rows of largest curvature weight
        ``w_i`` (where a large-``C`` probe's curvature concentrates), with its diagonal replaced by
        the Hessian's whole diagonal (every row and the penalty), so it is positive definite. In
        ``v`` its diagonal is 1; a block that float64's Cholesky factorisation rejects is left as
        the identity (the diagonal preconditioner alone).
        """
        B, C, K, D, n = theta.shape[0], self.C, self.K, self.D, self.n
        diag, wcurv = self._diagonal(theta)
        pre = diag.rsqrt()
        t, r = min(cols, D + 1), min(rows, n)
        # the intercept's column first (the curvature-weighted mean of the features couples it to every
        # weight), then the t - 1 weight columns of largest curvature
        cols_w = diag[..., :D].topk(t - 1, dim=3).indices  # (B, C, K, t - 1)
        idx = torch.cat([torch.full_like(cols_w[..., :1], D), cols_w], 3)
        every_row = r == n  # then no row is selected: whole columns come from the column-major copy
        top, sel = (wcurv, None) if every_row else wcurv.topk(r, dim=3)  # (B, C, K, r)
        inv = torch.empty(B, C, K, t, t, dtype=theta.dtype, device=theta.device)
        sets = torch.arange(B, device=theta.device)
        first = (sets * n)[:, None, None]
        eye = torch.eye(t, dtype=torch.float64, device=theta.device)
        flat = self.x.view(-1)
        for c in range(C):  # one C value at a time: the gathered features are (B, K, t, r)
            xs = torch.ones(B, K, t, r, dtype=theta.dtype, device=theta.device)
            if every_row:
                xs[:, :, 1:] = self.xt[sets[:, None], cols_w[:, c].reshape(B, -1)].view(B, K, t - 1, r)
            else:
                at = ((sel[:, c] + first) * D)[..., None, :] + cols_w[:, c, :, :, None]
                xs[:, :, 1:] = flat.take(at)
            block = torch.matmul(xs * top[:, c, :, None, :], xs.transpose(2, 3))
            s = pre[:, c].gather(2, idx[:, c])  # (B, K, t)
            block = (block * s[..., :, None] * s[..., None, :]).double()
            block.diagonal(dim1=2, dim2=3).fill_(1.0)
            chol, info = torch.linalg.cholesky_ex(block)
            inv[:, c] = torch.where((info == 0)[..., None, None], torch.cholesky_inverse(chol), eye).to(inv)
        return pre, idx.view(B * C, K, t), inv.view(B * C, K, t, t)


def _loss_residual(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy ``(B, C, 1, n)`` and residual ``softmax(z) - onehot(y)`` of logits ``z: (B, C, K, n)``,
    both to the relative precision of their own size.

    The textbook ``p_y - 1`` and ``-log p_y`` round to zero once a row is classified with a margin
    beyond ``-log(eps)`` (16.6 in float32), as most training rows are at large ``C``, so the
    gradient kept only ``eps`` of absolute precision a row. Here both come from the sum of the
    other classes' probabilities: ``p_y - 1 = -other`` and, where ``p_y >= 1/2``,
    ``-log p_y = log1p(other / p_y)``.
    """
    logp = torch.log_softmax(z, 2)
    logp_y = logp.gather(2, y)
    p = logp.exp_()
    p_y = p.gather(2, y)
    res = p.scatter_add_(2, y, -p_y)  # p_y - p_y: the true class's entry is exactly 0
    other = res.sum(2, keepdim=True)
    loss = torch.where(p_y >= 0.5, _log1p(other / p_y), -logp_y)
    return loss, res.scatter_add_(2, y, -other)


def _log1p(u: torch.Tensor) -> torch.Tensor:
    """``log(1 + u)`` to a few ulps for ``u >= 0`` (Kahan's formula: ``log(w) u / (w - 1)``, ``w = 1 + u``).

    torch's own ``log1p`` is not vectorised on the CPU: 12x slower than ``log`` here, and it was
    about 5% of a solve at 200 rows.
    """
    w = 1 + u
    return torch.where(w == 1, u, torch.log(w) * (u / (w - 1)))


class _Memory:
    """L-BFGS memory of ``m`` pairs for ``N`` probes in compact form (Byrd, Nocedal & Schnabel 1994).

    ``pairs: (N, 2m, P)`` holds ``s_1..s_m, y_1..y_m`` in a ring; ``sy[i, j] = s_i . y_j``,
    ``yy[i, j] = y_i . y_j`` and ``ab = (S^T g, Y^T g)`` are kept up to date by one batched
    product per new pair. Pairs with too little curvature (``s . y <= 0``) are stored but masked.
    """

    def __init__(self, N: int, m: int, P: int, dtype: torch.dtype, device: torch.device):
        z = lambda *shape, dt=dtype: torch.zeros(*shape, dtype=dt, device=device)  # noqa: E731
        self.m, self.count = m, 0
        self.pairs, self.sy, self.yy, self.ab = z(N, 2 * m, P), z(N, m, m), z(N, m, m), z(N, 2 * m)
        self.valid, self.new = z(N, m, dt=torch.bool), z(N, 3, P)
        self.gamma = torch.ones(N, dtype=dtype, device=device)
        # H0 = gamma * Pi: Pi the identity, or on each class's columns `idx` a dense block `inv`
        self.idx: torch.Tensor | None = None
        self.inv: torch.Tensor | None = None
        self.pre: torch.Tensor | None = None  # the diagonal scaling the blocks were fitted with

    def keep(self, idx: torch.Tensor) -> None:
        blocks = ("idx", "inv", "pre") if self.idx is not None else ()
        for name in ("pairs", "sy", "yy", "ab", "valid", "gamma", "new") + blocks:
            setattr(self, name, getattr(self, name)[idx])

    def project(self, r: torch.Tensor) -> torch.Tensor:
        """``Pi r`` for ``r: (N, j, P)``: each class's block applied to its columns, the rest as it is,
        between projections onto class-centred weights (in the original variables ``theta = v * pre``)."""
        if self.idx is None:
            return r
        N, K, t = self.idx.shape
        j, D1 = r.shape[1], r.shape[2] // K
        pre = self.pre.view(N, 1, K, D1)
        out = _class_centred(r.view(N, j, K, D1) / pre) * pre  # (N, j, K, D + 1)
        at = self.idx[:, None].expand(N, j, K, t)
        part = out.gather(3, at).permute(0, 2, 3, 1).reshape(N * K, t, j)  # each class's columns
        part = torch.bmm(self.inv.view(N * K, t, t), part).view(N, K, t, j).permute(0, 3, 1, 2)
        out = out.scatter_(3, at, part) * pre
        return (_class_centred(out) / pre).view(r.shape)

    def _slots(self, device: torch.device) -> torch.Tensor:
        """Ring slots of the stored pairs, oldest first."""
        j = min(self.count, self.m)
        return torch.tensor([(self.count - j + i) % self.m for i in range(j)], device=device)

    def hg(self, g: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """``H g`` for ``g: (N, P)``; zero for probes with ``on`` false."""
        gamma = self.gamma * on
        j = min(self.count, self.m)
        if j == 0:
            return self.project(g[:, None])[:, 0] * gamma[:, None]
        o = self._slots(g.device)
        val = self.valid[:, o]
        both = val[:, :, None] & val[:, None, :]
        sy = self.sy[:, o][:, :, o]
        r = torch.where(both, torch.triu(sy), 0) + torch.diag_embed((~val).to(g.dtype))
        a = (self.ab[:, o] * val)[:, :, None]
        b = (self.ab[:, self.m + o] * val)[:, :, None]
        yy = torch.where(both, self.yy[:, o][:, :, o], 0)
        p = torch.linalg.solve_triangular(r, a, upper=True)
        dg = (torch.diagonal(sy, dim1=1, dim2=2) * val)[:, :, None]
        q = torch.linalg.solve_triangular(
            r.transpose(1, 2), dg * p + gamma[:, None, None] * (yy @ p - b), upper=False
        )
        coef = torch.zeros_like(self.ab)
        coef[:, o] = q[:, :, 0] * on[:, None]
        if self.idx is None:
            coef[:, self.m + o] = -(gamma[:, None] * p[:, :, 0])
            return torch.baddbmm((g * gamma[:, None])[:, None], coef[:, None], self.pairs).squeeze(1)
        # H0 = gamma Pi: H g = H0 (g - Y p) + S q (Byrd, Nocedal & Schnabel's form for any H0)
        coef[:, self.m + o] = -p[:, :, 0]
        u = torch.baddbmm(g[:, None], coef[:, None, self.m :], self.pairs[:, self.m :])
        return torch.baddbmm(
            self.project(u) * gamma[:, None, None], coef[:, None, : self.m], self.pairs[:, : self.m]
        ).squeeze(1)

    def rescale(self, ratio: torch.Tensor, g: torch.Tensor) -> None:
        """Re-express the pairs after the variables were divided by ``ratio`` (``(N, P)``); ``g``: the gradient now."""
        m = self.m
        if self.count == 0:
            return
        self.pairs[:, :m].div_(ratio[:, None])
        self.pairs[:, m:].mul_(ratio[:, None])
        gram = torch.bmm(self.pairs, self.pairs.transpose(1, 2))
        self.sy = gram[:, :m, m:].contiguous()
        self.ab = torch.bmm(self.pairs, g[:, :, None])[:, :, 0]
        if self.idx is None:
            self.yy = gram[:, m:, m:].contiguous()
        else:  # the y-products through H0's block: Y^T Pi Y and Y^T Pi g
            py = self.project(torch.cat([self.pairs[:, m:], g[:, None]], 1))
            prods = torch.bmm(self.pairs[:, m:], py.transpose(1, 2))
            self.yy, self.ab[:, m:] = prods[:, :, :m].contiguous(), prods[:, :, m]
        # gamma = s.y / y.y of the newest valid pair, now in the new variables (unchanged where none is valid)
        o = self._slots(g.device).flip(0)  # newest first
        val = self.valid[:, o]
        newest = o[val.to(torch.int8).argmax(1)]
        rows = torch.arange(len(newest), device=g.device)
        sy, yy = self.sy[rows, newest, newest], self.yy[rows, newest, newest]
        self.gamma = torch.where(val.any(1), sy / yy.clamp_min(1e-30), self.gamma)

    def push(self, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> None:
        """Store the pair ``(s, y)`` (each ``(N, P)``) and the inner products with the new gradient ``g``."""
        m, slot = self.m, self.count % self.m
        self.pairs[:, slot] = s
        self.pairs[:, m + slot] = y
        if self.idx is None:
            self.new[:, 0], self.new[:, 1], self.new[:, 2] = s, y, g
            new, py, pg = self.new, 1, 2
        else:  # y and g also through H0's block, for the y-products
            new = torch.cat([torch.stack([s, y, g], 1), self.project(torch.stack([y, g], 1))], 1)
            py, pg = 3, 4
        prods = torch.bmm(new, self.pairs.transpose(1, 2)).transpose(1, 2)  # (N, 2m, 3 or 5); ~30% faster
        self.sy[:, :, slot] = prods[:, :m, 1]
        self.sy[:, slot, :] = prods[:, m:, 0]
        self.yy[:, :, slot] = prods[:, m:, py]
        self.yy[:, slot, :] = prods[:, m:, py]
        self.ab = torch.cat([prods[:, :m, 2], prods[:, m:, pg]], 1)
        sy, yy = prods[:, m + slot, 0], prods[:, m + slot, py]
        ok = sy > 1e-10 * yy.clamp_min(1e-30)
        self.valid[:, slot] = ok
        self.gamma = torch.where(ok, sy / yy.clamp_min(1e-30), self.gamma)
        self.count += 1


def block_columns(n: int, d: int) -> int:
    """Columns per class in the preconditioner's dense blocks for ``n`` rows of ``d`` features:
    ``sqrt(d n / r)`` (``r = min(BLOCK_ROWS, n)``) within ``[32, 128]``.

    A re-fit of the blocks costs ``2 r t^2`` flops a class, an evaluation of the objective ``4 d n``,
    so with this ``t`` a re-fit (every ``BLOCK_REFIT`` iterations) costs about two evaluations.
    """
    return int(min(128, max(32, (d * n / min(BLOCK_ROWS, n)) ** 0.5)))


def cpu_batch(n_sets: int, workers: int) -> int:
    """Feature sets per batch on a CPU for ``n_sets`` sets and ``workers`` threads: at most ``CPU_BATCH``
    (at 200 rows a batch's working set then stays in cache, and larger batches were slower), and
    few enough that each worker gets ``BATCHES_PER_WORKER`` batches.

    A batch runs until its slowest probe stops, and the workers take batches in turn, so with one
    batch per worker a worker whose batch stops early idles until the other's does: 55 narrow keys
    of fashion_mnist at n = 2000 in four batches (16, 16, 16, 7) kept the two cores 80% busy and
    took 14.2 s; in eight batches of 7, 11.9 s (``benchmarks/README.md``).
    """
    return max(1, min(CPU_BATCH, -(-n_sets // (BATCHES_PER_WORKER * workers))))


def lbfgs_history(n: int) -> int:
    """L-BFGS pairs kept for ``n`` training rows: 4 below ``SHORT_HISTORY_ROWS``, else 5.

    Each iteration reads the memory's ``2 m`` parameter-sized pairs twice (memory-bound), and
    evaluates the objective in ``~4 n`` flops a parameter (compute-bound), so the memory's share of
    an iteration falls as ``1 / n``. With 200 rows it is large: 4 pairs solved the 2304 probes of
    digits about 8% faster than 5 (3 pairs: 10%, but two probes then ended 1.5 points of test
    accuracy from the optimum, against at most 1.0 with 4 or 5); with 2000 rows 3 pairs cost 4%
    more iterations and 3% more time than 5 (``benchmarks/README.md``).
    """
    return 4 if n < SHORT_HISTORY_ROWS else 5


def _class_centred(theta: torch.Tensor) -> torch.Tensor:
    """``theta`` (class axis 2) minus its mean over classes: the same softmax, the least penalty."""
    return theta - theta.mean(2, keepdim=True)


def row_weights(
    y: torch.Tensor, n_classes: int, class_weight: str | Sequence[float] | torch.Tensor | None
) -> torch.Tensor | None:
    """Per-row loss weights ``(n,)`` float64 for ``class_weight``, scikit-learn's meaning; ``None`` for none.

    ``"balanced"``: ``n / (k * n_c)`` for a row of class ``c``, with ``k`` the number of classes
    present in ``y`` (``compute_class_weight``); the weights then sum to ``n``. A sequence: one
    weight per class index. The objective divides the weighted loss and the penalty by the sum of
    the weights, as scikit-learn does.
    """
    if class_weight is None:
        return None
    y = torch.as_tensor(y).long().cpu()
    counts = torch.bincount(y, minlength=n_classes).double()
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be None, 'balanced' or one weight per class, got {class_weight!r}"
            )
        per_class = len(y) / ((counts > 0).sum() * counts.clamp_min(1))
    else:
        per_class = torch.as_tensor(class_weight, dtype=torch.float64).cpu()
        if per_class.shape != (n_classes,) or not bool((torch.isfinite(per_class) & (per_class >= 0)).all()):
            raise ValueError(
                f"class_weight must hold {n_classes} finite, non-negative weights (one per class), "
                f"got {class_weight!r}"
            )
        if not bool((per_class[y] > 0).any()):
            raise ValueError(
                "class_weight gives every training row weight 0; give some class a positive weight"
            )
    return per_class[y]


def fit_softmax(
    x: torch.Tensor,
    y: torch.Tensor,
    Cs: torch.Tensor,
    n_classes: int,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    rtol: float | None = 0.03,
    history: int | None = None,
    refit: int = 5,
    dtype: torch.dtype = torch.float32,
    init: SoftmaxFit | None = None,
    batch: int | None = None,
    class_weight: str | Sequence[float] | torch.Tensor | None = None,
    block: int | None = None,
) -> SoftmaxFit:
    """Fit ``F * C`` L2-regularised multinomial logistic probes by batched L-BFGS.

    ``x``: ``(F, n, D)`` preprocessed features; ``y``: ``(n,)`` int64 labels in ``[0, n_classes)``;
    ``Cs``: ``(C,)`` shared by all feature sets or ``(F, C)`` per feature set. ``tol``, ``rtol``:
    the stopping test (module docstring; ``rtol=None``: the plain ``||grad|| <= tol``).
    ``dtype``: the precision of the solve (see the module docstring for what ``float32`` can
    resolve). ``history``: L-BFGS pairs kept (default :func:`lbfgs_history`). ``refit``: iterations
    between re-fits of the preconditioner.
    ``init``: a fit of the same shapes to start from. ``batch``: feature sets solved together
    (default: :func:`cpu_batch` on a CPU; all on a GPU).
    ``class_weight``: ``None``, ``"balanced"`` or ``n_classes`` weights, as in scikit-learn
    (:func:`row_weights`). ``block``: columns per class in the preconditioner's dense blocks from
    iteration ``BLOCK_FROM`` on (0: the diagonal alone; default :func:`block_columns`). The
    preconditioner changes the path to the optimum, not the optimum.

    ``C`` means what it means in scikit-learn for every number of classes. For two classes
    scikit-learn fits the binomial model (one weight vector ``w``, penalty ``||w||^2 / (2 C n)``);
    the two-class softmax with class-centred weights ``(-w/2, w/2)`` is the same model with
    penalty ``||w||^2 / (4 C n)``, so it is solved at ``C / 2``. ``coef[..., 1] - coef[..., 0]``
    is then scikit-learn's ``coef_`` (and :meth:`SoftmaxFit.decision_function` its decision function).

    Feature sets whose probes have all stopped, and ``C`` values that have stopped in every
    feature set, are dropped from the batch as the solve goes on, so the last, slowest probes
    (large ``C``) do not pay for the finished ones.
    """
    if history is None:
        history = lbfgs_history(x.shape[1])
    if refit < 1 or history < 1:
        raise ValueError(f"refit and history must be at least 1, got refit={refit}, history={history}")
    Cs = torch.as_tensor(Cs, dtype=torch.float64)
    if n_classes == 2:  # scikit-learn's binomial parametrisation (docstring)
        Cs = Cs / 2
    weights = row_weights(y, n_classes, class_weight)
    workers = cpu_workers(x.device, len(x))
    batch = batch or (cpu_batch(len(x), workers) if x.device.type == "cpu" else len(x))
    if block is None:
        block = block_columns(x.shape[1], x.shape[2])
    kw = {
        "block": block,
        "max_iter": max_iter,
        "tol": tol,
        "rtol": rtol,
        "history": history,
        "refit": refit,
        "dtype": dtype,
        "weights": weights,
    }

    def solve_part(i: int) -> SoftmaxFit:
        part = slice(i, i + batch)
        start = None if init is None else (init.coef[part], init.intercept[part])
        cs = Cs[part] if Cs.ndim == 2 else Cs
        fit = _solve(x[part], y, cs, n_classes, start, **kw)
        # stopped short of the target with iterations left (float32's resolution, a stall, no decrease)
        short = (~fit.converged & (fit.n_iter < max_iter)).any(1).nonzero().squeeze(1)
        if dtype != torch.float64 and len(short):  # finish what float32 could not, in float64
            again = _solve(
                x[part][short],
                y,
                cs[short] if cs.ndim == 2 else cs,
                n_classes,
                (fit.coef[short], fit.intercept[short]),
                **(kw | {"dtype": torch.float64}),
                n_done=fit.n_iter[short],
            )
            fit.coef[short], fit.intercept[short] = again.coef.to(fit.coef), again.intercept.to(fit.intercept)
            fit.n_iter[short] = again.n_iter
            fit.converged[short] = again.converged
        return fit

    # CPU: batches on separate threads; every product of the solve through oneDNN where exact (all of
    # them, so that no product's route depends on what the other thread is doing)
    with onednn_products(x.shape[1] >= ONEDNN_ROWS):
        fits = side_by_side(solve_part, range(0, len(x), batch), workers)
    if len(fits) == 1:
        return fits[0]
    return SoftmaxFit(
        *(torch.cat([getattr(f, a) for f in fits]) for a in ("coef", "intercept", "n_iter", "converged"))
    )


def _solve(
    x: torch.Tensor,
    y: torch.Tensor,
    Cs: torch.Tensor,
    n_classes: int,
    init: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    max_iter: int,
    tol: float,
    rtol: float | None,
    history: int,
    refit: int,
    dtype: torch.dtype,
    weights: torch.Tensor | None = None,
    n_done: torch.Tensor | None = None,
    block: int = 0,
) -> SoftmaxFit:
    """One batch of :func:`fit_softmax`; ``n_done``: ``(F, C)`` iterations already spent (each probe
    stops at ``max_iter`` in all, and ``n_iter`` counts them)."""
    F, _, D = x.shape
    K, dev = n_classes, x.device
    obj = _Objective(x, y, Cs, K, dtype, weights)
    C, P = obj.C, (D + 1) * K
    theta = torch.zeros(F, C, K, D + 1, dtype=dtype, device=dev)
    if init is not None:
        theta[..., :D] = init[0].transpose(2, 3).to(theta)
        theta[..., D] = init[1].to(theta)
        theta = _class_centred(theta)  # the same probes, with less penalty
    rows = torch.arange(F, device=dev)  # which original feature sets are still in the batch
    cols = torch.arange(C, device=dev)  # and which regularisation values
    theta_out, conv_out = theta.clone(), torch.zeros(F, C, dtype=torch.bool, device=dev)
    n_iter = (
        torch.zeros(F, C, dtype=torch.int64, device=dev)
        if n_done is None
        else n_done.to(dev, torch.int64).clone()
    )
    n_iter_out = n_iter.clone()
    stalled = torch.zeros(F, C, dtype=torch.int64, device=dev)  # iterations since ||grad|| last halved
    slack = 8 * torch.finfo(dtype).eps  # relative noise of f in this precision

    def targets(theta: torch.Tensor) -> torch.Tensor:
        """Each probe's ||grad|| target (module docstring): ``rtol`` of the penalty's gradient, within ``[tol/1000, tol]``."""
        if rtol is None:
            return torch.full(theta.shape[:2], tol, dtype=torch.float64, device=dev)
        w_norm = torch.linalg.vector_norm(theta[..., :D], dim=(2, 3)).double()
        return (rtol * obj.mu.double() * w_norm).clamp(tol / 1000, tol)

    def stop_at(target: torch.Tensor) -> torch.Tensor:  # float32 hands probes with smaller targets to float64
        return target if dtype == torch.float64 else target.clamp_min(FLOAT32_RESOLUTION)

    f, g = obj.value_grad(theta)
    gnorm = torch.linalg.vector_norm(g, dim=(2, 3)).double()
    target = targets(theta)
    conv, active = gnorm <= target, (gnorm > stop_at(target)) & (n_iter < max_iter)
    best = gnorm.clone()
    stall_limit = max_iter + 1 if dtype == torch.float64 else FLOAT32_STALL  # the stall rule is float32's
    pre = obj.scale(theta)  # preconditioner fitted at the start point
    v, gv = theta / pre, g * pre
    mem = _Memory(F * C, history, P, dtype, dev)
    for it in range(max_iter):
        if not bool(active.any()):
            break
        # re-fit the preconditioner to the current curvature, keep the memory: the diagonal every
        # `refit` iterations, then from BLOCK_FROM on the diagonal and the blocks every BLOCK_REFIT
        late = block > 0 and it >= BLOCK_FROM
        new = None
        if late and (it - BLOCK_FROM) % BLOCK_REFIT == 0:
            new, mem.idx, mem.inv = obj.scale_block(theta, block, BLOCK_ROWS)
            mem.pre = new.view(len(rows) * C, P)
        elif it and it % refit == 0 and not late:
            new = obj.scale(theta)
        if new is not None:
            mem.rescale((new / pre).view(len(rows) * C, P), (g * new).view(len(rows) * C, P))
            pre, v, gv = new, theta / new, g * new
        live, live_c = active.any(1), active.any(0)
        if int(live.sum()) <= 0.75 * len(rows) or int(live_c.sum()) <= 0.75 * len(cols):
            # drop feature sets whose probes have all stopped, and C values stopped in every set
            theta_out[rows[:, None], cols], conv_out[rows[:, None], cols] = theta, conv
            n_iter_out[rows[:, None], cols] = n_iter
            kr, kc = live.nonzero().squeeze(1), live_c.nonzero().squeeze(1)
            rows, cols = rows[kr], cols[kc]
            obj.keep(kr, kc)
            mem.keep((kr[:, None] * C + kc).reshape(-1))
            C = len(cols)
            sub = lambda t: t[kr][:, kc]  # noqa: E731, B023 - used at once, in this iteration
            theta, f, g, v, gv, pre, gnorm, conv, active, n_iter, stalled, best = map(
                sub, (theta, f, g, v, gv, pre, gnorm, conv, active, n_iter, stalled, best)
            )
        B = len(rows)
        d = -mem.hg(gv.view(B * C, P), active.view(-1).to(dtype)).view(B, C, K, D + 1)
        gd = (gv * d).sum((2, 3))
        bad = (gd >= 0) & active  # not a descent direction: fall back to scaled steepest descent (a
        # stopped probe has d = 0 and needs none)
        fallback = bool(bad.any())
        if fallback:
            d = torch.where(bad[:, :, None, None], -gv * mem.gamma.view(B, C, 1, 1), d)
        if fallback or mem.idx is None:  # with the blocks, Pi and the steps already centre d
            d = _class_centred(d * pre) / pre  # no step along the class-common direction
            gd = (gv * d).sum((2, 3))
        # batched Armijo backtracking; after the first trial only feature sets with a rejected step are re-evaluated
        t = torch.ones(B, C, dtype=dtype, device=dev)
        accepted = ~active
        v_new, f_new, g_new = v, f, g  # replaced, not written into, by the first (full-batch) trial
        idx = None
        for _ls in range(40):
            sel = (lambda a: a) if idx is None else (lambda a: a[idx])  # noqa: B023 - used in this iteration
            ts = sel(t)
            trial = sel(v) + ts[:, :, None, None] * sel(d)
            ft, gt = obj.value_grad(trial * sel(pre), idx)
            # Armijo, or where f cannot resolve the decrease, its derivative form (Hager & Zhang's
            # approximate Wolfe test: the slope at the trial point has not overshot)
            f0, gd0 = sel(f), sel(gd)
            slope = (gt * sel(pre) * sel(d)).sum((2, 3))
            ok = (
                (
                    (ft <= f0 + 1e-4 * ts * gd0)
                    | ((ft <= f0 + slack * f0.abs()) & (slope <= -(1 - 2e-4) * gd0))
                )
                & torch.isfinite(ft)
                & ~sel(accepted)
            )
            okb = ok[:, :, None, None]
            if idx is None:
                v_new, g_new, f_new = (
                    torch.where(okb, trial, v_new),
                    torch.where(okb, gt, g_new),
                    torch.where(ok, ft, f_new),
                )
            else:
                v_new[idx] = torch.where(okb, trial, v_new[idx])
                g_new[idx] = torch.where(okb, gt, g_new[idx])
                f_new[idx] = torch.where(ok, ft, f_new[idx])
            accepted = accepted | (ok if idx is None else torch.zeros_like(accepted).index_put_((idx,), ok))
            need = ~accepted
            if not bool(need.any()):
                break
            t = torch.where(need, 0.5 * t, t)
            idx = need.any(1).nonzero().squeeze(1)
        failed = ~accepted  # no decrease found: the probe is at float precision, stop it there
        gv_new = g_new * pre
        mem.push((v_new - v).view(B * C, P), (gv_new - gv).view(B * C, P), gv_new.view(B * C, P))
        v, f, g, gv = v_new, f_new, g_new, gv_new
        theta = v * pre
        gnorm = torch.linalg.vector_norm(g, dim=(2, 3)).double()
        n_iter += active.long()
        # in float32 also: ||grad|| has not halved its best value in FLOAT32_STALL iterations (a probe
        # at float32's precision); float64 then takes over
        better = gnorm < 0.5 * best
        best, stalled = torch.where(better, gnorm, best), torch.where(better, 0, stalled + 1)
        target = targets(theta)
        conv = gnorm <= target
        active = active & ~failed & (stalled < stall_limit) & (gnorm > stop_at(target)) & (n_iter < max_iter)
    theta_out[rows[:, None], cols], conv_out[rows[:, None], cols], n_iter_out[rows[:, None], cols] = (
        theta,
        conv,
        n_iter,
    )
    coef = theta_out[..., :D].transpose(2, 3).contiguous()
    return SoftmaxFit(coef, theta_out[..., D].contiguous(), n_iter_out, conv_out)
