"""Batched multinomial logistic regression: many L2-regularised softmax probes solved at once.

Solves, for every feature set ``f`` and regularisation value ``C``, exactly scikit-learn's
``LogisticRegression(C=C)`` objective (multinomial, L2 penalty, unpenalised intercept)::

    mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C n)

so a probe here and scikit-learn's at the same ``C`` are the same model. The solver is L-BFGS,
batched over probes: every probe keeps its own curvature history, step length (Armijo
backtracking) and stopping test, but all probes share each matrix product.

Stopping test: ``||grad||_2 <= tol`` in the original variables. It implies scikit-learn's
``max |grad| <= tol`` (its ``gtol``) in every orthonormal basis, so the exact rotation of
:func:`probekit.probes.linear.row_space` cannot loosen it. With fewer rows than dimensions and a
large ``C`` the optimum is flat (the penalty's curvature is ``1/(C n)``), and stopping at
scikit-learn's default ``tol=1e-4`` lands at a point whose test accuracy can differ from the
optimum's by several points; in float64, ``tol=1e-6`` reaches the optimum's predictions.

Preconditioning: a diagonal change of variables ``w = p * v`` (the objective is unchanged),
``p_j = (sum_i c_i x_ij^2 / n + 1/(C n))^(-1/2)`` with ``c_i`` the softmax curvature of row ``i``
at the starting point. In the orthogonal-column basis of ``row_space`` this is close to the inverse
Hessian's diagonal; with a warm start along the regularisation path (``init``,
:func:`probekit.probes.linear.fit_path`) ``c_i`` already reflects the rows the probe separates. Feature sets of equal width are stacked as ``X: (F, n, D)``;
the ``C`` values of one feature set share its features, so one ``bmm`` of ``(F, n, D)`` by
``(F, D, C*K)`` evaluates all ``F * C`` probes. Runs on any torch device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SoftmaxFit:
    """Fitted probes: ``coef (F, C, D, K)``, ``intercept (F, C, K)``, iterations and convergence ``(F, C)``."""

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices ``(F, C, m)`` for features ``x: (F, m, D)`` (already preprocessed)."""
        F, C, D, K = self.coef.shape
        w = self.coef.permute(0, 2, 1, 3).reshape(F, D, C * K)
        logits = torch.bmm(x.to(w.dtype), w).view(F, -1, C, K) + self.intercept[:, None]
        return logits.argmax(-1).permute(0, 2, 1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-probe inner product of two ``(F, D+1, C, K)`` tensors -> ``(F, C)``."""
    return (a * b).sum((1, 3))


def _bc(v: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-probe ``(F, C)`` tensor against ``(F, D+1, C, K)``."""
    return v[:, None, :, None]


def fit_softmax(
    x: torch.Tensor,
    y: torch.Tensor,
    Cs: torch.Tensor,
    n_classes: int,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 10,
    init: SoftmaxFit | None = None,
) -> SoftmaxFit:
    """Fit ``F * C`` L2-regularised multinomial logistic probes by batched L-BFGS.

    ``x``: ``(F, n, D)`` preprocessed features (solved in float64); ``y``: ``(n,)`` int64 labels in ``[0, n_classes)``;
    ``Cs``: ``(C,)`` shared by all feature sets or ``(F, C)`` per feature set. ``init``: a fit of
    the same shapes to start from (warm start along a regularisation path).

    Feature sets whose probes have all stopped are dropped from the batch as the solve goes on,
    so the last, slowest probes do not pay for the finished ones.
    """
    x = x.double()  # float32 cannot resolve gradients of 1e-6 on flat (large-C) objectives
    F, n, D = x.shape
    K = n_classes
    dev, dt = x.device, x.dtype
    Cs = torch.as_tensor(Cs, dtype=dt, device=dev)
    Cs = Cs.expand(F, -1) if Cs.ndim == 1 else Cs
    C = Cs.shape[1]
    mu = 1.0 / (Cs * n)
    onehot = torch.nn.functional.one_hot(y.to(dev), K).to(dt)[None, :, None, :]
    xt = x.transpose(1, 2)
    theta0 = torch.zeros(F, D + 1, C, K, dtype=dt, device=dev)
    if init is not None:
        theta0[:, :D] = init.coef.permute(0, 2, 1, 3).to(dt)
        theta0[:, D] = init.intercept.to(dt)
    # diagonal preconditioner (module docstring): per-row softmax curvature at the start, (F, n, C)
    logits0 = torch.baddbmm(theta0[:, D].reshape(F, 1, C * K), x, theta0[:, :D].reshape(F, D, C * K))
    prob0 = torch.softmax(logits0.view(F, n, C, K), -1)
    curv_i = (prob0 * (1 - prob0)).mean(-1) * (K / max(K - 1, 1))
    pre = torch.empty(F, D + 1, C, 1, dtype=dt, device=dev)
    pre[:, :D] = (torch.bmm(xt.square(), curv_i) / n + mu[:, None, :]).rsqrt()[..., None]
    pre[:, D] = curv_i.mean(1).clamp_min(1e-12).rsqrt()[..., None]

    def fg(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = v * pre
        w = theta[:, :D]
        logits = torch.baddbmm(theta[:, D].reshape(F, 1, C * K), x, w.reshape(F, D, C * K)).view(F, n, C, K)
        lse = torch.logsumexp(logits, -1)
        f = (lse - (logits * onehot).sum(-1)).mean(1) + 0.5 * mu * w.square().sum((1, 3))
        r = (torch.exp(logits - lse[..., None]) - onehot) / n
        g = torch.empty_like(theta)
        g[:, :D] = torch.bmm(xt, r.view(F, n, C * K)).view(F, D, C, K) + _bc(mu) * w
        g[:, D] = r.sum(1)
        return f, g * pre

    def gnorm(g: torch.Tensor) -> torch.Tensor:
        """L2 norm of the gradient in the original variables (bounds max |grad| in any orthonormal basis)."""
        return (g / pre).square().sum((1, 3)).sqrt()

    theta = theta0 / pre
    f, g = fg(theta)
    active = gnorm(g) > tol
    n_iter = torch.zeros(F, C, dtype=torch.int64, device=dev)
    gamma = 1.0 / g.square().sum((1, 3)).sqrt().clamp_min(1e-12)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    rows = torch.arange(F, device=dev)  # which original feature sets are still in the batch
    theta_out, g_out, n_iter_out = theta.clone(), g.clone(), n_iter.clone()
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        live = active.any(1)
        if int(live.sum()) <= 0.75 * len(rows):  # drop feature sets whose probes have all stopped
            theta_out[rows], g_out[rows], n_iter_out[rows] = theta * pre, g / pre, n_iter
            keep = live.nonzero().squeeze(1)
            rows = rows[keep]
            F = len(rows)
            x, xt, mu, pre, theta, f, g = x[keep], xt[keep], mu[keep], pre[keep], theta[keep], f[keep], g[keep]
            active, n_iter, gamma = active[keep], n_iter[keep], gamma[keep]
            s_hist = [h[keep] for h in s_hist]
            y_hist = [h[keep] for h in y_hist]
            rho_hist = [h[keep] for h in rho_hist]
        # two-loop recursion, every probe with its own history
        q = -g
        alphas = []
        for s, yv, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho * _dot(s, q)
            q = q - _bc(a) * yv
            alphas.append(a)
        d = _bc(gamma) * q
        for s, yv, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
            bcoef = rho * _dot(yv, d)
            d = d + _bc(a - bcoef) * s
        gd = _dot(g, d)
        bad = gd >= 0  # not a descent direction: fall back to scaled steepest descent
        if bool(bad.any()):
            d = torch.where(_bc(bad), -_bc(gamma) * g, d)
            gd = _dot(g, d)
        d = d * _bc(active)
        # batched Armijo backtracking
        t = torch.ones(F, C, dtype=dt, device=dev)
        done = ~active
        new_theta, new_f, new_g = theta, f, g
        for _ls in range(40):
            trial = theta + _bc(t) * d
            ft, gt = fg(trial)
            ok = (ft <= f + 1e-4 * t * gd) & torch.isfinite(ft) & ~done
            if bool(ok.any()):
                m = _bc(ok)
                new_theta = torch.where(m, trial, new_theta)
                new_g = torch.where(m, gt, new_g)
                new_f = torch.where(ok, ft, new_f)
                done = done | ok
            if bool(done.all()):
                break
            t = torch.where(done, t, 0.5 * t)
        failed = ~done  # no decrease found: the probe is at float precision, stop it there
        s = new_theta - theta
        yv = new_g - g
        sy = _dot(s, yv)
        valid = sy > 1e-10 * _dot(yv, yv).clamp_min(1e-30)
        rho = torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0.0)
        gamma = torch.where(valid, sy / _dot(yv, yv).clamp_min(1e-30), gamma)
        s_hist.append(s)
        y_hist.append(yv)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        theta, f, g = new_theta, new_f, new_g
        n_iter += active.long()
        active = active & ~failed & (gnorm(g) > tol)
    theta_out[rows], g_out[rows], n_iter_out[rows] = theta * pre, g / pre, n_iter
    converged = g_out.square().sum((1, 3)).sqrt() <= tol
    coef = theta_out[:, :D].permute(0, 2, 1, 3).contiguous()
    return SoftmaxFit(coef, theta_out[:, D].contiguous(), n_iter_out, converged)
