"""The shared paper-2 training loop: schedule, weights, jitter, seeding, grid selection and refit."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from probekit.errors import ProbekitError
from probekit.train import (
    GRIDS,
    Grid,
    TrainConfig,
    adjust_batch_size,
    class_weights,
    cosine_lr,
    jitter,
    loss_converged,
    plan_schedule,
    resolve_grid,
    select_and_fit,
    train,
    validation_inputs,
)
from probekit.validation_split import stratified_split


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (real, offline), L2-normalised pixels, stratified 70/30."""
    x, y = load_digits(return_X_y=True)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    tr, te = stratified_split(y, 0.3, seed=0)
    return x[tr], y[tr], x[te], y[te]


@pytest.mark.parametrize("n", [12, 50, 100, 1257, 5000, 45000, 262144])
def test_adjusted_batches_give_at_least_five_batches_and_a_full_enough_last_one(n: int) -> None:
    b = adjust_batch_size(2048, n)
    assert 1 <= b <= 2048
    assert n // b >= 5
    if n >= 85:  # the paper's search range; below it the fallback may leave a short last batch
        assert n % b == 0 or n % b >= b / 2


def test_batch_size_kept_when_already_fine() -> None:
    assert adjust_batch_size(2048, 45000) == 2048  # 21 full batches, last has 2,040
    assert adjust_batch_size(256, 1280) == 256  # exactly 5 batches


def test_schedule_reaches_1000_steps_unless_capped() -> None:
    bs, per_epoch, epochs = plan_schedule(1257, TrainConfig())
    assert per_epoch == math.ceil(1257 / bs) and per_epoch * epochs >= 1000
    assert epochs == math.ceil(1000 / per_epoch)
    assert plan_schedule(100_000, TrainConfig())[2] == 40  # 49 batches x 40 epochs already > 1000
    _, per_epoch, epochs = plan_schedule(1257, TrainConfig(max_steps=120))
    assert per_epoch * epochs <= 120 and epochs >= 1


def test_cosine_runs_from_lr_to_min_lr_without_warmup() -> None:
    lrs = [cosine_lr(s, 100, 1e-2) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-6)
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert lrs[50] == pytest.approx((1e-2 + 1e-6) / 2)


def test_class_weights_are_inverse_frequency() -> None:
    y = np.array([0] * 6 + [1] * 3 + [3] * 1)
    w = class_weights(y, 4).numpy()
    np.testing.assert_allclose(w, [10 / (4 * 6), 10 / (4 * 3), 0.0, 10 / 4], rtol=1e-6)
    assert np.sum(w[y]) == pytest.approx(len(y) * 3 / 4)  # each present class carries the same total


def test_jitter_moves_whole_samples_with_probability_p() -> None:
    x = torch.zeros(4000, 3, 5)
    g = torch.Generator().manual_seed(0)
    out = jitter(x, 0.05, 0.5, g)
    moved = (out != 0).reshape(4000, -1)
    assert torch.all(moved.all(1) | ~moved.any(1))  # all of a sample or none of it
    assert 0.45 < moved.all(1).float().mean().item() < 0.55
    assert out[moved.all(1)].std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(jitter(x, 0.05, 0.0, g), x) and torch.equal(x, torch.zeros_like(x))


def test_training_is_seeded_and_learns_digits(digits) -> None:
    x_tr, y_tr, x_te, y_te = digits
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    cfg = TrainConfig(lr=1e-2, weight_decay=1e-4, max_steps=150, max_cycles=1, seed=3)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = nn.Linear(64, 10)
        log = train(m, xt, yt, cfg, num_classes=10)
        models.append(m)
    assert log.steps <= 150 and log.batch_size == adjust_batch_size(2048, len(y_tr))
    assert torch.equal(models[0].weight, models[1].weight)
    acc = (models[0](torch.as_tensor(x_te)).argmax(1).numpy() == y_te).mean()
    assert acc > 0.85  # chance is 0.1


def test_published_grid_is_3_by_7_by_3() -> None:
    g = GRIDS["published"]
    assert len(g.points(attentive=True)) == 63 and len(g.points(attentive=False)) == 21
    np.testing.assert_allclose(g.weight_decays, np.logspace(-6, 0, 7))
    assert resolve_grid("tiny") is GRIDS["tiny"]
    with pytest.raises(ProbekitError, match="unknown grid"):
        resolve_grid("huge")


def test_grid_search_selects_on_validation_and_refits(digits) -> None:
    x_tr, y_tr, x_te, y_te = digits
    grid = Grid(lrs=(1e-1, 1e-4), weight_decays=(1e-4, 1.0), attn_drops=(0.0, 0.3))
    fit = select_and_fit(
        lambda p: nn.Linear(64, 10),
        x_tr,
        y_tr,
        x_te,
        y_te,
        grid=grid,
        attentive=False,
        config=TrainConfig(max_steps=60),
        n_boot=200,
    )
    assert len(fit.search) == 4  # dropout only applies to attentive probes
    best = fit.search.iloc[fit.search["val_balanced_accuracy"].to_numpy().argmax()]
    assert (fit.params["lr"], fit.params["weight_decay"]) == (best["lr"], best["weight_decay"])
    assert fit.val_score == best["val_balanced_accuracy"]
    assert fit.params["lr"] == 1e-1  # 1e-4 barely moves a probe in 60 steps
    assert fit.ci_low <= fit.value <= fit.ci_high and fit.value > 0.8
    assert fit.log.batch_size == adjust_batch_size(2048, len(y_tr))  # refit on all training data


def test_jitter_on_cpu_matches_the_masked_form_in_distribution() -> None:
    x = torch.ones(2000, 4)
    out = jitter(x, 0.05, 1.0, torch.Generator().manual_seed(1))
    assert (out != 1).all() and abs((out - 1).std().item() - 0.05) < 0.005


def test_training_runs_cycles_until_the_loss_converges(digits) -> None:
    """A fit converges when one more cosine cycle moves the full training loss by less than the tolerance."""
    x_tr, y_tr, _, _ = digits
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    cfg = TrainConfig(lr=1e-1, weight_decay=1e-4, max_steps=60, max_cycles=8, seed=0)
    torch.manual_seed(0)
    log = train(nn.Linear(64, 10), xt, yt, cfg, num_classes=10)
    assert log.converged and 2 <= log.cycles <= 8 and len(log.cycle_losses) == log.cycles
    a, b = log.cycle_losses[-2:]
    assert abs(a - b) <= cfg.loss_tol + cfg.loss_rtol * a and log.train_loss == b
    assert log.steps == log.cycles * log.batches_per_epoch * (log.epochs // log.cycles)
    assert log.cycle_losses[0] > log.train_loss  # the restarts did keep training


def test_a_fit_that_runs_out_of_cycles_says_so(digits) -> None:
    x_tr, y_tr, _, _ = digits
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    # cycles far too short: the loss is still falling fast when they run out
    cfg = TrainConfig(lr=1e-2, weight_decay=0.0, max_steps=12, max_cycles=2, seed=0)
    torch.manual_seed(0)
    log = train(nn.Linear(64, 10), xt, yt, cfg, num_classes=10)
    assert not log.converged and log.cycles == 2
    one = train(nn.Linear(64, 10), xt, yt, replace(cfg, max_cycles=1), num_classes=10)
    assert not one.converged and one.cycles == 1  # nothing to compare with: not called converged
    assert loss_converged(1.0, 0.985, TrainConfig()) and not loss_converged(1.0, 0.95, TrainConfig())


def test_a_one_point_grid_skips_the_search_fit(digits) -> None:
    x_tr, y_tr, x_te, y_te = digits
    fit = select_and_fit(
        lambda p: nn.Linear(64, 10),
        x_tr,
        y_tr,
        x_te,
        y_te,
        grid="tiny",
        attentive=False,
        config=TrainConfig(max_steps=60),
        n_boot=50,
    )
    assert fit.search.empty and np.isnan(fit.val_score) and fit.params["lr"] == GRIDS["tiny"].lrs[0]
    assert fit.value > 0.8 and fit.log.cycles >= 2


def test_validation_is_jittered_as_in_the_paper() -> None:
    x = torch.zeros(400, 3)
    cfg = TrainConfig(seed=0)
    moved = (validation_inputs(x, cfg) != 0).all(1).float().mean().item()
    assert 0.4 < moved < 0.6 and torch.equal(validation_inputs(x, cfg), validation_inputs(x, cfg))
    assert torch.equal(validation_inputs(x, replace(cfg, jitter_validation=False)), x)
