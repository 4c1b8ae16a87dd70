"""The shared torch training loop of paper 2's probes: train, select on a grid, refit, test.

Both the paper-2 linear baselines (one ``nn.Linear`` on concatenated L2-normalised features) and
the attentive fusion probe are trained the same way, as in
``lciernik/attentive-layer-fusion: src/tasks/linear_probe.py`` (``LinearProbe.train``):

- AdamW with default betas, weight decay as AdamW's own decoupled decay (``Regularizer``
  "weight_decay" adds no loss term);
- cosine schedule per step from ``lr`` down to ``min_lr = 1e-6``, no warm-up (``cosine_lr``);
- gradient-norm clipping at 5; class-weighted cross-entropy with weights ``N / (C * n_c)``;
- Gaussian feature jitter N(0, 0.05^2) added to a whole sample with p = 0.5
  (``src/data/data_utils.py: GaussianNoise``, applied per sample by the dataset transform);
- batch 2048 shrunk so an epoch has at least 5 batches (``src/data/data_loader.py:
  adjust_batch_size``) and 40 epochs raised so that training has at least 1,000 steps.

Grid search (``src/tasks/hyperparameter_tuner.py`` + ``regularization_tuner.py``): every point
is trained on a stratified 80/20 split of the training set (``probekit.validation_split``, seeded by the
run's seed, 0 by default as in the paper's scripts) and scored by balanced accuracy on the
held-out 20 %, jittered once per point as the paper's validation ``Subset`` of the jittered
training set is (``TrainConfig.jitter_validation``); the first strictly best point wins
(attention-dropout runs are separate in the paper and compared by their best validation score,
which is the same as one grid here); the winner is refit on all training data and scored on the
test set with a bootstrap interval. A grid of one point selects nothing, so its search fit is
skipped (the paper would train it and ignore the score).

Convergence (beyond the paper, which trains one schedule and does not check). Training runs in
cycles: the first is the paper's schedule (40 epochs, at least 1,000 steps: the floor on a GPU),
each further cycle a warm restart of the same cosine schedule from the trained weights and
optimiser state (SGDR, Loshchilov & Hutter 2017). After each cycle the full training loss
(class-weighted cross-entropy over every training sample, eval mode, no jitter or dropout) is
measured; the fit has converged when one more cycle changed it by at most
``loss_tol + loss_rtol * loss`` (default 0.01 nats + 2 %), and stops there. A fit that reaches
``max_cycles`` without that is returned as it is with ``converged=False``; callers report it.
Looking at the loss within one cycle would not do: the cosine schedule takes the learning rate
to ~0 at its end, so every run looks flat there, converged or not.
A loss that barely moves because the learning rate is far too small would also pass the test;
the grids' learning rates (1e-3 and up) move these probes by much more than the tolerance per
cycle while they are still learning.

CPU cap: 1,000 steps of the attentive probe over 24 tokens of width 384 take minutes per grid
point on two cores, so ``TrainConfig.max_steps`` caps the steps of one cycle (epochs are lowered,
never below one); the convergence check then decides how many cycles are needed. ``None`` (no
cap) uses the paper's schedule as the first cycle; ``cpu_default_max_steps()`` is the cap
``probekit`` uses when no GPU is present.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from probekit.device import resolve_device
from probekit.errors import ProbekitError
from probekit.metrics import SCORE_TIE, balanced_accuracy, bootstrap_ci
from probekit.validation_split import stratified_split


class TrainingError(ProbekitError, ValueError):
    """Training inputs that cannot work (too few samples, unknown grid, mismatched labels)."""


CPU_MAX_STEPS = 300  # our cap on one cycle on CPU; the paper's minimum is 1,000 (GPU)


def cpu_default_max_steps(device: torch.device | str | None) -> int | None:
    """The step cap for ``device``: ``CPU_MAX_STEPS`` on CPU, ``None`` (paper protocol) on a GPU."""
    return CPU_MAX_STEPS if resolve_device(device).type == "cpu" else None


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; defaults are paper 2's (``scripts/helper.py``, size "imagenet1k")."""

    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 40
    min_steps: int = 1000
    max_steps: int | None = None
    batch_size: int = 2048
    min_batches: int = 5
    grad_clip: float | None = 5.0
    jitter_std: float = 0.05
    jitter_p: float = 0.5
    min_lr: float = 1e-6
    class_weighted: bool = True
    seed: int = 0  # the paper's scripts use 0 (its training docstring says 42)
    max_cycles: int = 4  # schedules (warm restarts) at most; 1 trains the paper's single schedule, unchecked
    loss_tol: float = (
        0.01  # converged: one more cycle moved the training loss by <= loss_tol + loss_rtol * loss
    )
    loss_rtol: float = 0.02
    jitter_validation: bool = True  # the paper's validation subset is jittered like its training set


@dataclass(frozen=True)
class TrainLog:
    """What a run did: its schedule (per cycle), cycles and steps in all, losses, convergence, wall time.

    ``final_loss`` is the last mini-batch's loss (jittered, train mode); ``train_loss`` the full
    training loss after the last cycle (eval mode, no jitter), ``cycle_losses`` after each cycle.
    ``converged`` is False when ``max_cycles`` ran out first, or when only one cycle was run
    (nothing to compare with).
    """

    batch_size: int
    batches_per_epoch: int
    epochs: int
    steps: int
    final_loss: float
    seconds: float
    train_loss: float = float("nan")
    cycles: int = 1
    converged: bool = False
    cycle_losses: tuple[float, ...] = ()


def adjust_batch_size(batch_size: int, num_samples: int, min_batches: int = 5) -> int:
    """Largest batch size ``<= batch_size`` giving ``>= min_batches`` full batches and a last batch
    that is empty or at least half full (the paper's ``adjust_batch_size``).

    The paper searches down to 17 and falls back to 1; we search down to 2 and fall back to
    ``num_samples // min_batches``, so small datasets still get sensible batches.
    """
    if num_samples < 2:
        raise TrainingError(f"need at least 2 training samples, got {num_samples}")

    def ok(b: int) -> bool:
        r = num_samples % b
        return num_samples // b >= min_batches and (r == 0 or r >= 0.5 * b)

    if ok(batch_size):
        return batch_size
    need = max(min_batches, num_samples // batch_size)
    for b in range(min(batch_size, num_samples // need + 1), 1, -1):
        if ok(b):
            return b
    return max(1, num_samples // min_batches)


def plan_schedule(num_samples: int, config: TrainConfig) -> tuple[int, int, int]:
    """``(batch_size, batches_per_epoch, epochs)`` for ``num_samples`` training samples.

    Epochs are raised to reach ``min_steps`` (``linear_probe.py: min_learning_steps``), then
    lowered to respect ``max_steps`` if set (our CPU cap), never below one epoch.
    """
    bs = adjust_batch_size(config.batch_size, num_samples, config.min_batches)
    per_epoch = math.ceil(num_samples / bs)
    epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
    if config.max_steps is not None:
        epochs = max(1, min(epochs, config.max_steps // per_epoch))
    return bs, per_epoch, epochs


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * n_c)``, 0 for classes absent from ``y``."""
    counts = np.bincount(np.asarray(y), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)


def cosine_lr(step: int, total_steps: int, base_lr: float, min_lr: float = 1e-6) -> float:
    """Cosine decay from ``base_lr`` at step 0 towards ``min_lr`` at ``total_steps``; no warm-up."""
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * step / total_steps)) * (base_lr - min_lr)


def jitter(x: torch.Tensor, std: float, p: float, generator: torch.Generator) -> torch.Tensor:
    """Add N(0, std^2) noise to each whole sample of ``x`` with probability ``p``."""
    if std <= 0 or p <= 0:
        return x
    chosen = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    if x.device.type != "cpu":  # no host sync on a GPU: noise for every sample, masked
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * (chosen.to(x.dtype) * std).view(-1, *([1] * (x.ndim - 1)))
    idx = torch.nonzero(chosen).squeeze(1)  # on CPU draw noise only for the chosen samples
    noise = torch.randn((len(idx),) + tuple(x.shape[1:]), generator=generator, dtype=x.dtype)
    return x.index_add(0, idx, noise, alpha=std)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    num_classes: int,
) -> TrainLog:
    """Train ``model`` in place on features ``x`` (on the model's device) and labels ``y``, in cosine
    cycles until the training loss has converged or ``config.max_cycles`` ran out (module docstring)."""
    start = time.perf_counter()
    n = x.shape[0]
    bs, per_epoch, epochs = plan_schedule(n, config)
    total = per_epoch * epochs
    gen = torch.Generator(device=x.device).manual_seed(config.seed)
    weight = class_weights(y.cpu().numpy(), num_classes).to(x.device) if config.class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: AdamW's update in one kernel for all parameters (on a CPU torch's default is a Python loop
    # over the tensors: 28 of the 96 s the demo's attentive probes trained; fused, 7 s); the same update
    fused = x.device.type in ("cpu", "cuda") or None
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    step, loss = 0, torch.tensor(float("nan"))
    losses: list[float] = []
    converged = False
    for _cycle in range(max(1, config.max_cycles)):
        model.train()
        cycle_step = 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen, device=x.device)
            for i in range(per_epoch):
                idx = order[i * bs : (i + 1) * bs]
                if idx.numel() < 2:  # BatchNorm cannot train on one sample; only a fallback size leaves one
                    continue
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(cycle_step, total, config.lr, config.min_lr)
                xb = jitter(x[idx], config.jitter_std, config.jitter_p, gen)
                loss = criterion(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
                opt.step()
                step += 1
                cycle_step += 1
        losses.append(training_loss(model, x, y, criterion))
        if len(losses) >= 2 and loss_converged(losses[-2], losses[-1], config):
            converged = True
            break
    model.eval()
    return TrainLog(
        bs,
        per_epoch,
        epochs * len(losses),
        step,
        float(loss.detach()),
        time.perf_counter() - start,
        train_loss=losses[-1],
        cycles=len(losses),
        converged=converged,
        cycle_losses=tuple(losses),
    )


def loss_converged(previous: float, current: float, config: TrainConfig) -> bool:
    """One more cycle moved the training loss by at most ``loss_tol + loss_rtol * previous``."""
    return bool(abs(previous - current) <= config.loss_tol + config.loss_rtol * abs(previous))


@torch.no_grad()
def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> float:
    """``criterion`` over all of ``x`` in eval mode (no jitter, no dropout, BatchNorm's running statistics)."""
    return float(criterion(predict_logits(model, x), y))


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits of ``model`` in eval mode over ``x``, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@dataclass(frozen=True)
class Grid:
    """Hyper-parameter grid; attention dropout only applies to attentive probes."""

    lrs: tuple[float, ...]
    weight_decays: tuple[float, ...]
    attn_drops: tuple[float, ...] = (0.0,)

    def points(self, attentive: bool) -> list[dict[str, float]]:
        """Grid points in the paper's search order: dropout runs, then lr, then weight decay."""
        drops = self.attn_drops if attentive else (0.0,)
        return [
            {"lr": lr, "weight_decay": wd, "attn_drop": d}
            for d in drops
            for lr in self.lrs
            for wd in self.weight_decays
        ]


GRIDS: dict[str, Grid] = {
    # scripts/helper.py get_hyperparams(size="imagenet1k") + regularization_tuner logspace(-6, 0, 7)
    "published": Grid((1e-1, 1e-2, 1e-3), tuple(float(v) for v in np.logspace(-6, 0, 7)), (0.0, 0.1, 0.3)),
    "small": Grid((1e-2, 1e-3), (1e-4, 1e-2), (0.0,)),
    "tiny": Grid((1e-2,), (1e-4,), (0.0,)),
}


def resolve_grid(grid: str | Grid) -> Grid:
    """A named grid from ``GRIDS`` or a ``Grid`` as given."""
    if isinstance(grid, Grid):
        return grid
    if grid not in GRIDS:
        raise TrainingError(
            f"unknown grid {grid!r}; use one of {sorted(GRIDS)} or pass a probekit.train.Grid"
        )
    return GRIDS[grid]


@dataclass
class FitResult:
    """A selected, refit and tested probe."""

    model: nn.Module
    params: dict[str, float]
    val_score: float
    value: float
    ci_low: float
    ci_high: float
    test_pred: np.ndarray
    log: TrainLog
    search: pd.DataFrame = field(repr=False)


Builder = Callable[[dict[str, float]], nn.Module]


def _build(build: Builder, params: dict[str, float], seed: int, device: torch.device) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        return build(params).to(device)


def select_and_fit(
    build: Builder,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    grid: str | Grid = "small",
    attentive: bool,
    config: TrainConfig = TrainConfig(),
    val_fraction: float = 0.2,
    device: torch.device | str | None = None,
    n_boot: int = 1000,
) -> FitResult:
    """Grid-search ``build(params)`` on a stratified split, refit the best on all training data, test it.

    ``build`` gets ``dict(lr=..., weight_decay=..., attn_drop=...)`` and returns an untrained
    module mapping features to logits. Labels must be integers ``0..C-1``. A one-point grid is
    not searched: ``val_score`` is NaN and ``search`` empty. Every fit trains in cycles until its
    training loss converges (module docstring); ``log.converged`` says whether the refit did.
    """
    dev = resolve_device(device)
    y_train, y_test = np.asarray(y_train, dtype=np.int64), np.asarray(y_test, dtype=np.int64)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise TrainingError("features and labels differ in length")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32), device=dev)
    yt = torch.as_tensor(y_train, device=dev)
    fit_idx, val_idx = stratified_split(y_train, val_fraction, config.seed)
    fit_i, val_i = torch.as_tensor(fit_idx, device=dev), torch.as_tensor(val_idx, device=dev)

    points = resolve_grid(grid).points(attentive)
    rows, best, best_score = [], points[0], float("nan")
    for params in points if len(points) > 1 else ():  # one point: nothing to select, no search fit
        cfg = replace(config, lr=params["lr"], weight_decay=params["weight_decay"])
        model = _build(build, params, config.seed, dev)
        log = train(model, xt[fit_i], yt[fit_i], cfg, num_classes=num_classes)
        pred = predict_logits(model, validation_inputs(xt[val_i], config)).argmax(1).cpu().numpy()
        score = balanced_accuracy(y_train[val_idx], pred)
        rows.append(
            dict(
                params,
                val_balanced_accuracy=score,
                steps=log.steps,
                cycles=log.cycles,
                converged=log.converged,
                train_loss=log.train_loss,
                seconds=log.seconds,
            )
        )
        if not score <= best_score + SCORE_TIE:  # first strictly best wins (regularization_tuner.find_peak)
            best, best_score = params, score

    cfg = replace(config, lr=best["lr"], weight_decay=best["weight_decay"])
    model = _build(build, best, config.seed, dev)
    log = train(model, xt, yt, cfg, num_classes=num_classes)
    xs = torch.as_tensor(np.asarray(x_test, dtype=np.float32), device=dev)
    test_pred = predict_logits(model, xs).argmax(1).cpu().numpy()
    value, low, high = bootstrap_ci(y_test, test_pred, "balanced_accuracy", n_boot=n_boot, seed=config.seed)
    search = pd.DataFrame(
        rows,
        columns=list(points[0])
        + ["val_balanced_accuracy", "steps", "cycles", "converged", "train_loss", "seconds"],
    )
    return FitResult(model, dict(best), best_score, value, low, high, test_pred, log, search)


def validation_inputs(x_val: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The validation features as the paper scores them: jittered like training samples (one draw,
    seeded), or as they are when ``config.jitter_validation`` is off."""
    if not config.jitter_validation:
        return x_val
    gen = torch.Generator(device=x_val.device).manual_seed(config.seed + 1)
    return jitter(x_val, config.jitter_std, config.jitter_p, gen)
