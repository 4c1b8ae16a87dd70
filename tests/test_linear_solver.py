"""The batched softmax solver and its preprocessing against scikit-learn, on real digits pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from probekit.probes.linear import row_space
from probekit.probes.softmax import SoftmaxFit, _loss_residual, fit_softmax
from probekit.probes.standardize import l2_rows, prepare
from probekit.probes.table import bootstrap_balanced_accuracy


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x[:900], y[:900]


def test_prepare_matches_standard_scaler(digits) -> None:
    x, _ = digits
    xl = x / np.linalg.norm(x, axis=1, keepdims=True)
    sc = StandardScaler().fit(xl[:600])
    a, b = prepare(torch.tensor(x[:600])[None], torch.tensor(x[600:])[None])
    np.testing.assert_allclose(a[0].numpy(), sc.transform(xl[:600]), atol=1e-9)
    np.testing.assert_allclose(b[0].numpy(), sc.transform(xl[600:]), atol=1e-9)
    assert torch.allclose(l2_rows(torch.tensor(x)).norm(dim=1), torch.ones(len(x), dtype=torch.float64))


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_same_objective_same_solution_as_sklearn(digits, C: float) -> None:
    x, y = digits
    (xs,) = prepare(torch.tensor(x)[None])
    fit = fit_softmax(xs, torch.tensor(y), torch.tensor([C]), 10, tol=1e-6, max_iter=2000)
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(xs[0].numpy(), y)
    assert bool(fit.converged.all())
    # the intercept is unpenalised, so it is defined up to a constant across classes
    coef, b = fit.coef[0, 0].T.numpy(), fit.intercept[0, 0].numpy()
    np.testing.assert_allclose(coef, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(
        b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-3 * np.abs(ref.coef_).max()
    )


def test_weights_sum_to_zero_over_classes_from_any_start(digits) -> None:
    # adding one vector to every class's weights changes no prediction, only the penalty: the
    # optimum is class-centred, and a start that is not (a user's init) must still reach it
    x, y = digits
    (xs,) = prepare(torch.tensor(x)[None])
    f64 = {"tol": 1e-8, "dtype": torch.float64, "max_iter": 2000}
    fit = fit_softmax(xs, torch.tensor(y), torch.tensor([1.0]), 10, **f64)
    assert fit.coef.sum(-1).abs().max() < 1e-8 * fit.coef.abs().max()
    off = SoftmaxFit(
        fit.coef + torch.randn(1, 1, 64, 1, dtype=torch.float64), fit.intercept + 3.0, None, None
    )
    again = fit_softmax(xs, torch.tensor(y), torch.tensor([1.0]), 10, init=off, **f64)
    assert bool(again.converged.all()) and int(again.n_iter.max()) <= 2
    assert torch.allclose(again.coef, fit.coef, atol=1e-6 * fit.coef.abs().max())


def test_probes_in_a_batch_are_independent(digits) -> None:
    x, y = digits
    x1, x2 = (
        prepare(torch.tensor(x, dtype=torch.float32)[None])[0],
        prepare(torch.tensor(np.sqrt(x), dtype=torch.float32)[None])[0],
    )
    # each probe's trajectory depends on its batch only through rounding, so compare optima: tight tol
    f64 = {"tol": 1e-9, "dtype": torch.float64}
    both = fit_softmax(torch.cat([x1, x2]), torch.tensor(y), torch.tensor([0.1, 10.0]), 10, **f64)
    alone = fit_softmax(x2, torch.tensor(y), torch.tensor([10.0]), 10, **f64)
    assert torch.allclose(both.coef[1, 1], alone.coef[0, 0], atol=1e-4)
    assert both.n_iter.shape == (2, 2)


def test_balanced_accuracy_bootstrap_matches_a_plain_loop(digits) -> None:
    """The vectorised bootstrap against scikit-learn's balanced accuracy on each resample, one by one.

    Same draws (numpy's generator with the same seed), then the percentile interval by hand.
    """
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    _, y = digits
    y, n_boot, seed = y[:300], 200, 3
    pred = np.where(np.arange(len(y)) % 7 == 0, (y + 1) % 10, y)
    pred[y == 9] = 0  # a class with no hits at all
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resamples whose predictions hold a class their truth lacks
        stats = [balanced_accuracy_score(y[i], pred[i]) for i in idx]
    low, high = np.quantile(stats, [0.025, 0.975])
    value, ci_low, ci_high = bootstrap_balanced_accuracy(y, pred, n_boot=n_boot, seed=seed)
    assert value == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert (ci_low, ci_high) == pytest.approx((low, high), abs=1e-12)
    assert ci_low < value < ci_high


@pytest.mark.parametrize("n_train", [40, 300])  # fewer rows than the 64 pixels (Gram route), and more
def test_row_space_is_an_exact_rotation(digits, n_train: int) -> None:
    x, _ = digits
    tr, te = prepare(
        torch.tensor(x[:n_train], dtype=torch.float32)[None], torch.tensor(x[600:], dtype=torch.float32)[None]
    )
    ztr, zte = row_space(tr, te)
    assert ztr.shape[-1] == min(n_train, 64)
    # every inner product with a training row is kept, so a linear probe sees the same problem
    scale = float(tr.square().sum(-1).max())
    torch.testing.assert_close(ztr @ ztr.transpose(1, 2), tr @ tr.transpose(1, 2), atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(zte @ ztr.transpose(1, 2), te @ tr.transpose(1, 2), atol=1e-4 * scale, rtol=0)
    # the rotated columns are orthogonal (what the diagonal preconditioner relies on)
    gram = (ztr.transpose(1, 2) @ ztr)[0]
    assert float((gram - torch.diag(torch.diag(gram))).abs().max()) <= 1e-4 * scale


@pytest.mark.parametrize("n_train", [20, 300])  # fewer rows than the span's 33 directions, and more
def test_row_space_width_keeps_the_span_of_an_affine_image(digits, n_train: int) -> None:
    # pooled fc1 is an affine map of a narrower input: 64 digit pixels through a 32 -> 96 affine map
    # span 33 directions after the L2 norm and the standardising (probekit.probes.linear.solved_widths)
    x, _ = digits
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(32, 96)), rng.normal(size=96)
    wide = np.concatenate([x[:n_train], x[600:]])[:, :32] @ a + b
    tr, te = prepare(
        torch.tensor(wide[:n_train], dtype=torch.float32)[None],
        torch.tensor(wide[n_train:], dtype=torch.float32)[None],
    )
    width = min(33, n_train)
    ztr, zte = row_space(tr, te, width=width)
    assert ztr.shape[-1] == zte.shape[-1] == width
    # every inner product with a training row is kept: the same probe on 33 columns as on 96
    scale = float(tr.square().sum(-1).max())
    torch.testing.assert_close(ztr @ ztr.transpose(1, 2), tr @ tr.transpose(1, 2), atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(zte @ ztr.transpose(1, 2), te @ tr.transpose(1, 2), atol=1e-4 * scale, rtol=0)
    # and the leading directions are the full rotation's last columns (eigh's ascending order)
    full = row_space(tr, te)[0]
    torch.testing.assert_close(ztr.abs(), full[..., -width:].abs(), atol=1e-3 * scale**0.5, rtol=0)


def test_float32_solve_is_finished_in_float64(digits) -> None:
    x, y = digits
    (xs,) = prepare(torch.tensor(x[:700], dtype=torch.float32)[None])
    # 1e-8 is below where a float32 solve stops (FLOAT32_RESOLUTION): those probes are finished in float64
    fit = fit_softmax(xs, torch.tensor(y[:700]), torch.tensor([0.01, 100.0]), 10, tol=1e-8)
    ref = fit_softmax(
        xs, torch.tensor(y[:700]), torch.tensor([0.01, 100.0]), 10, tol=1e-8, dtype=torch.float64
    )
    assert bool(fit.converged.all()) and fit.coef.dtype == torch.float32
    torch.testing.assert_close(fit.coef, ref.coef.float(), atol=1e-3 * float(ref.coef.abs().max()), rtol=0)


def test_relative_stopping_test_pins_flat_optima(digits) -> None:
    # 120 separable rows at large C: the optimum is flat, and ||grad|| <= tol alone stops far from
    # it; asking ||grad|| <= rtol ||W|| / (C n) puts the weights within about rtol of it
    x, y = digits
    (xs,) = prepare(torch.tensor(x[:120], dtype=torch.float32)[None])
    Cs = torch.tensor([1000.0, 1e4])
    opt = fit_softmax(
        xs, torch.tensor(y[:120]), Cs, 10, tol=1e-10, rtol=None, dtype=torch.float64, max_iter=20000
    )
    assert bool(opt.converged.all())

    def rel_err(fit):
        return (fit.coef.double() - opt.coef).flatten(2).norm(dim=2) / opt.coef.flatten(2).norm(dim=2)

    assert float(rel_err(fit_softmax(xs, torch.tensor(y[:120]), Cs, 10)).max()) <= 0.03
    assert float(rel_err(fit_softmax(xs, torch.tensor(y[:120]), Cs, 10, rtol=None))[0, 1]) > 0.1


def test_float64_finish_keeps_the_iteration_budget(digits) -> None:
    # the float64 finish continues each probe's count: no probe reports more than max_iter
    # (tol=1e-8 puts the targets below where float32 stops, so every probe is finished in float64)
    x, y = digits
    (xs,) = row_space(*prepare(torch.tensor(np.stack([x[:60], np.sqrt(x[:60])]), dtype=torch.float32)))
    for max_iter in (20, 28, 29):
        fit = fit_softmax(xs, torch.tensor(y[:60]), torch.tensor([1e2, 1e4]), 10, max_iter=max_iter, tol=1e-8)
        assert int(fit.n_iter.max()) <= max_iter
        assert bool(
            (fit.converged | (fit.n_iter == max_iter)).all()
        )  # short of the target only by the budget
    fit = fit_softmax(xs, torch.tensor(y[:60]), torch.tensor([1e2, 1e4]), 10, max_iter=1000, tol=1e-8)
    assert bool(fit.converged.all())
    with pytest.raises(ValueError, match="refit"):
        fit_softmax(xs, torch.tensor(y[:60]), torch.tensor([1.0]), 10, refit=0)


@pytest.mark.parametrize("masked_last", [False, True])
def test_memory_rescaled_equals_memory_of_rescaled_pairs(masked_last: bool) -> None:
    # a preconditioner re-fit divides the variables by `ratio`: the carried-over L-BFGS memory must
    # act exactly like one built from the pairs expressed in the new variables, also when the newest
    # pair has no curvature (masked) and the scale comes from an older one
    from probekit.probes.softmax import _Memory

    gen = torch.Generator().manual_seed(0)
    N, P, m = 3, 12, 4
    a = torch.randn(N, P, P, generator=gen, dtype=torch.float64)
    hess = a @ a.transpose(1, 2) + torch.eye(P, dtype=torch.float64)  # positive definite
    ratio = torch.rand(N, P, generator=gen, dtype=torch.float64) + 0.5
    steps = [
        torch.randn(N, P, generator=gen, dtype=torch.float64) for _ in range(6)
    ]  # more pairs than m: the ring wraps
    g = torch.randn(N, P, generator=gen, dtype=torch.float64)
    carried, fresh = (_Memory(N, m, P, torch.float64, torch.device("cpu")) for _ in range(2))
    for i, s in enumerate(steps):
        y = (hess @ s[:, :, None])[:, :, 0]
        if masked_last and i == len(steps) - 1:
            y = -y  # s . y < 0: stored but masked
        carried.push(s, y, g)
        fresh.push(s / ratio, y * ratio, g * ratio)
    carried.rescale(ratio, g * ratio)
    on = torch.ones(N, dtype=torch.float64)
    assert torch.allclose(carried.hg(g * ratio, on), fresh.hg(g * ratio, on), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("C", [0.1, 1.0])
def test_two_classes_mean_the_same_c_as_sklearn(digits, C: float) -> None:
    # scikit-learn fits two classes with the binomial loss; the same C must give the same model
    x, y = digits
    pick = np.isin(y, [3, 8])
    (xs,) = prepare(torch.tensor(x[pick])[None])
    yb = (y[pick] == 8).astype(np.int64)
    fit = fit_softmax(xs, torch.tensor(yb), torch.tensor([C]), 2, tol=1e-9, dtype=torch.float64)
    ref = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(xs[0].numpy(), yb)
    w = (fit.coef[0, 0, :, 1] - fit.coef[0, 0, :, 0]).numpy()
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(
        fit.decision_function(xs)[0, 0].numpy(),
        ref.decision_function(xs[0].numpy()),
        atol=1e-5 * np.abs(ref.decision_function(xs[0].numpy())).max(),
    )


@pytest.mark.parametrize("n_classes", [2, 10])
def test_balanced_class_weight_is_sklearns(digits, n_classes: int) -> None:
    # an imbalanced subset (class k keeps 10 + 12 k rows): inverse-frequency weights change the optimum
    x, y = digits
    keep = np.concatenate([np.flatnonzero(y == k)[: 10 + 12 * k] for k in range(10)])
    xk, yk = x[keep], y[keep]
    if n_classes == 2:
        two = np.isin(yk, [1, 9])  # 22 and 88 rows
        xk, yk = xk[two], (yk[two] == 9).astype(np.int64)
    (xs,) = prepare(torch.tensor(xk)[None])
    kw = {"tol": 1e-9, "dtype": torch.float64, "max_iter": 5000}
    fit = fit_softmax(xs, torch.tensor(yk), torch.tensor([1.0]), n_classes, class_weight="balanced", **kw)
    plain = fit_softmax(xs, torch.tensor(yk), torch.tensor([1.0]), n_classes, **kw)
    ref = LogisticRegression(C=1.0, max_iter=10000, tol=1e-10, class_weight="balanced").fit(xs[0].numpy(), yk)
    coef = fit.coef[0, 0].T.numpy()
    coef = coef[1:] - coef[:1] if n_classes == 2 else coef
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-5 * scale)
    assert np.abs(plain.coef - fit.coef).max() > 0.01 * scale  # the weights matter here
    with pytest.raises(ValueError, match="class_weight"):
        fit_softmax(xs, torch.tensor(yk), torch.tensor([1.0]), n_classes, class_weight="inverse")


def test_batches_side_by_side_on_cpu_threads_give_the_serial_fit(digits) -> None:
    # with 2 torch threads the batches run on 2 threads, one torch thread each (probekit.parallel);
    # each batch then computes exactly what it computes alone on one thread
    x, y = digits
    xs = torch.stack(
        [prepare(torch.tensor(x[:300] ** p, dtype=torch.float32)[None])[0][0] for p in (1, 2, 3)]
    )
    threads = torch.get_num_threads()
    try:
        fits = {}
        for n_threads in (2, 1):
            torch.set_num_threads(n_threads)
            fits[n_threads] = fit_softmax(xs, torch.tensor(y[:300]), torch.tensor([0.1, 10.0]), 10, batch=1)
            assert torch.get_num_threads() == n_threads  # restored after the side-by-side solve
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fits[2].coef, fits[1].coef) and torch.equal(fits[2].n_iter, fits[1].n_iter)


def test_loss_and_residual_keep_their_precision_at_large_margins() -> None:
    # rows classified with margins up to 60: the textbook -log p_y and p_y - 1 round to 0 in float32
    # beyond a margin of ~17, which was the floor of a float32 solve at large C
    gen = torch.Generator().manual_seed(0)
    margin = torch.linspace(0.0, 60.0, 200, dtype=torch.float64)
    z = torch.randn(1, 1, 10, 200, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (200,), generator=gen).view(1, 1, 1, 200)
    z = z.scatter_add(2, y, margin.view(1, 1, 1, 200) + z.amax(2, keepdim=True) - z.gather(2, y))
    e = (z - z.gather(2, y)).exp()  # the other classes, relative to the true one (exact in float64)
    other = e.scatter(2, y, 0.0).sum(2, keepdim=True)
    want_loss = torch.log1p(other)
    want_res = (e / (1 + other)).scatter(2, y, -other / (1 + other))
    loss, res = _loss_residual(z.float(), y)
    assert float((loss.double() / want_loss - 1).abs().max()) < 1e-5
    nonzero = want_res.abs() > 1e-30  # float32's range ends near 1e-38
    assert float((res.double()[nonzero] / want_res[nonzero] - 1).abs().max()) < 1e-4
    old = -torch.log_softmax(z.float(), 2).gather(2, y)
    assert float(old[..., -1]) == 0.0 < float(loss[..., -1])  # what the textbook form loses
