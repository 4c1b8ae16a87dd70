"""One fine-tuning run (one learning rate, one seed): paper 1's loop, resumable from its checkpoint.

The backbone (a copy of the frozen :class:`~probekit.models.Backbone`'s timm model, all
parameters trainable) feeds its usual output (timm's pre-logits: the final-norm CLS token for a
ViT) to a linear head: a new one (the paper), or the frozen linear probe's solution (LP-FT, the CPU
recipe's choice; :func:`probe_head`). Before the first step the validation accuracy is measured
(step 0: the frozen model with its starting head) and counts as a candidate best. Each step: cross-entropy, backward, gradient-norm clipping, SGD with
momentum at the scheduled learning rate. Every ``eval_period`` steps (and at the last) the
validation accuracy is measured and the best step's backbone and head are kept, as in the
paper's ``train.py``. The training loss, learning rate and gradient norm are recorded at every
step, the validation accuracy at every validation pass.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from . import batches
from . import checkpoint as ckpt
from .recipe import Recipe, lr_factor


@dataclass
class RunResult:
    """A finished run: where its checkpoint is and how it trained."""

    path: Path
    lr: float
    seed: int
    best_val_accuracy: float
    best_step: int
    history: list[dict] = field(
        default_factory=list
    )  # {step, loss, lr, grad_norm[, val_accuracy]}; step 0: val only
    seconds: float = 0.0  # training time of this process (0 when reused)
    reused: bool = False
    resumed_from: int = 0  # the step a resumed run started from (0: from scratch)

    @property
    def backbone_weights(self) -> Path:
        return self.path / ckpt.BACKBONE

    @property
    def head_weights(self) -> Path:
        return self.path / ckpt.HEAD


class Classifier(nn.Module):
    """The backbone's usual output followed by a linear head."""

    def __init__(self, backbone: nn.Module, n_classes: int, frozen: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.num_features), n_classes)
        self.frozen = frozen  # the frozen control keeps the backbone in eval mode (no dropout, drop-path)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@torch.no_grad()
def accuracy(net: nn.Module, loader, device: torch.device) -> float:
    was = net.training
    net.eval()
    right = total = 0
    for x, y in loader:
        pred = net(x.to(device)).argmax(1).cpu()
        right += int((pred == y).sum())
        total += len(y)
    net.train(was)
    return right / max(1, total)


@torch.no_grad()
def probe_head(
    net: Classifier, images: list, labels: np.ndarray, eval_transform, device: torch.device, C: float = 1.0
) -> None:
    """Set ``net.head`` to the frozen linear probe: multinomial logistic regression (scikit-learn,
    L2 at ``C``, unweighted as the fine-tuning loss) on the backbone's output for the training
    images through the eval transform. A 2-class probe's one weight row ``w`` becomes ``(-w/2, w/2)``,
    which gives the same probabilities under the softmax."""
    from sklearn.linear_model import LogisticRegression

    was = net.training
    net.eval()
    loader = batches.eval_batches(images, labels, eval_transform, batch_size=64)
    feats = torch.cat([net.backbone(x.to(device)).float().cpu() for x, _ in loader]).numpy()
    net.train(was)
    fit = LogisticRegression(C=C, max_iter=5000).fit(feats, labels)
    coef = torch.as_tensor(fit.coef_, dtype=torch.float64)
    bias = torch.as_tensor(fit.intercept_, dtype=torch.float64)
    if coef.shape[0] == 1:
        coef, bias = torch.cat([-coef / 2, coef / 2]), torch.cat([-bias / 2, bias / 2])
    n_classes = net.head.out_features
    weight = torch.zeros(n_classes, coef.shape[1], dtype=torch.float64)
    b = torch.zeros(n_classes, dtype=torch.float64)
    present = torch.as_tensor(fit.classes_, dtype=torch.long)
    weight[present], b[present] = coef, bias
    if len(present) < n_classes:  # a class absent from training can never win
        b[[c for c in range(n_classes) if c not in set(fit.classes_.tolist())]] = -1e4
    net.head.weight.copy_(weight.to(net.head.weight))
    net.head.bias.copy_(b.to(net.head.bias))


def _build(model: nn.Module, n_classes: int, recipe: Recipe, seed: int, device: torch.device) -> Classifier:
    backbone = copy.deepcopy(model).to(device)
    backbone.requires_grad_(not recipe.freeze_backbone)
    torch.manual_seed(seed)
    net = Classifier(backbone, n_classes, frozen=recipe.freeze_backbone).to(device)
    return net.train()


def train_run(
    model: nn.Module,
    train: tuple[list, np.ndarray],
    val: tuple[list, np.ndarray],
    n_classes: int,
    data_config: dict,
    eval_transform,
    recipe: Recipe,
    lr: float,
    seed: int,
    path: Path,
    inputs: dict,
    *,
    checkpoint_every: int = 10,
    progress: bool = True,
    workers: int = 0,
    stop_after: int | None = None,
) -> RunResult:
    """Train (or resume, or reuse) the run stored at ``path``.

    ``stop_after`` ends the process's work after that many steps without finishing the run (the
    state is saved): for tests and for spreading a long run over several jobs.
    """
    path.mkdir(parents=True, exist_ok=True)
    with ckpt.store_lock(path):
        done = ckpt.read_json(path / ckpt.RUN)
        if done and done.get("finished") and (path / ckpt.BACKBONE).exists():
            return RunResult(
                path, lr, seed, done["best_val_accuracy"], done["best_step"], done["history"], reused=True
            )
        ckpt.write_json(path / ckpt.RUN, {"inputs": inputs, "finished": False})
        device = next(model.parameters()).device
        net = _build(model, n_classes, recipe, seed, device)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
        state = ckpt.load_state(path / ckpt.STATE)
        step, history, best = 0, [], {"acc": -1.0, "step": 0}
        if state is not None:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            step, history, best = state["step"], state["history"], state["best"]
        resumed_from = step
        images, labels = train

        def save_state() -> None:
            ckpt.save_atomic(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "history": history,
                    "best": best,
                },
                path / ckpt.STATE,
            )

        def save_best() -> None:
            meta = {"lr": f"{lr:g}", "seed": str(seed), "step": str(step)}
            ckpt.save_tensors_atomic(net.backbone.state_dict(), path / ckpt.BACKBONE, meta)
            ckpt.save_tensors_atomic(net.head.state_dict(), path / ckpt.HEAD, meta)

        # without augmentation training images go through the eval transform the head was fitted on
        transform = batches.train_transform(data_config) if recipe.augment else eval_transform
        stop = recipe.steps if stop_after is None else min(recipe.steps, step + stop_after)
        loader = batches.train_batches(
            images,
            labels,
            transform,
            batch_size=recipe.batch_size,
            seed=seed,
            start=step,
            stop=stop,
            workers=workers,
        )
        val_loader = batches.eval_batches(
            *val, eval_transform, batch_size=min(512, recipe.batch_size * 2), workers=workers
        )
        start = time.perf_counter()
        if state is None:
            if recipe.head_init == "probe":
                probe_head(net, images, labels, eval_transform, device)
            best = {"acc": accuracy(net, val_loader, device), "step": 0}
            history.append({"step": 0, "val_accuracy": best["acc"]})
            save_best()
        bar = progress_bar(
            total=recipe.steps, initial=step, enabled=progress, desc=f"fine-tune lr={lr:g} seed={seed}"
        )
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, recipe.warmup, recipe.steps)
            loss = nn.functional.cross_entropy(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            opt.step()
            step += 1
            row = {
                "step": step,
                "loss": loss.item(),
                "lr": opt.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
            }
            if step % recipe.eval_period == 0 or step == recipe.steps:
                row["val_accuracy"] = accuracy(net, val_loader, device)
                if row["val_accuracy"] > best["acc"]:
                    best = {"acc": row["val_accuracy"], "step": step}
                    save_best()
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{best['acc']:.3f}")
            if step % checkpoint_every == 0 or step == recipe.steps:
                save_state()
        bar.close()
        seconds = time.perf_counter() - start
        result = RunResult(
            path, lr, seed, best["acc"], best["step"], history, seconds, resumed_from=resumed_from
        )
        if step >= recipe.steps:
            ckpt.write_json(
                path / ckpt.RUN,
                {
                    "inputs": inputs,
                    "finished": True,
                    "best_val_accuracy": best["acc"],
                    "best_step": best["step"],
                    "history": history,
                },
            )
            (path / ckpt.STATE).unlink(
                missing_ok=True
            )  # the optimizer state is twice the model: drop it when done
        return result
