"""The optimizer and its learning-rate schedule (CoOp/Dassl's recipe, which every paper's numbers use).

- SGD (momentum 0.9, weight decay 5e-4) or AdamW, from the method's config;
- the learning rate is set per epoch: `warmup_epochs` epochs at the constant `warmup_lr`, then
  cosine annealing from `lr` with `T_max = epochs` restarted at the end of warm-up. This is
  Dassl's `ConstantWarmupScheduler(CosineAnnealingLR(T_max=MAX_EPOCH))` with its default
  `WARMUP_RECOUNT=True` (see `lr_at_epoch`), so the last epoch never reaches lr 0;
- or, with `lr_schedule="step"`, set at every optimizer step: cosine annealing from `lr` to
  `min_lr` over all the training's steps (`lr_at_step`, torch's `CosineAnnealingLR(T_max=steps,
  eta_min=min_lr)` stepped once per iteration, as CLIP-LoRA does);
- the training lasts `epochs` epochs, or `iterations` optimizer steps when that is set
  (`planned_epochs`, `steps_in_epoch`: the last epoch stops part-way).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vlprompt.errors import RunError


def lr_at_epoch(
    epoch: int, *, lr: float, warmup_lr: float, warmup_epochs: int, epochs: int
) -> float:
    """Learning rate of 0-based `epoch` (Dassl's constant warm-up + CosineAnnealingLR).

    Epochs `0 .. warmup_epochs-1` use `warmup_lr`; epoch `e >= warmup_epochs` uses
    `lr * (1 + cos(pi * (e - warmup_epochs) / epochs)) / 2` (eta_min = 0, T_max = epochs).
    """
    if epoch < warmup_epochs:
        return warmup_lr
    t = epoch - warmup_epochs
    return 0.5 * lr * (1.0 + math.cos(math.pi * t / epochs))


def lr_at_step(step: int, *, lr: float, min_lr: float, total_steps: int) -> float:
    """Learning rate of 0-based optimizer `step` of `total_steps`: the closed form of torch's
    CosineAnnealingLR(T_max=total_steps, eta_min=min_lr) after `step` scheduler steps,
    `min_lr + (lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2`."""
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * step / total_steps))


def planned_epochs(config: Any, steps_per_epoch: int) -> int:
    """The epochs a training runs: `config.epochs`, or enough epochs of `steps_per_epoch` steps
    for `config.iterations` steps when that is set (> 0)."""
    if config.iterations > 0:
        return math.ceil(config.iterations / steps_per_epoch)
    return config.epochs


def total_steps(config: Any, steps_per_epoch: int) -> int:
    """The optimizer steps of the whole training (`iterations`, or every step of every epoch)."""
    return config.iterations if config.iterations > 0 else config.epochs * steps_per_epoch


def steps_in_epoch(config: Any, epoch: int, steps_per_epoch: int) -> int:
    """The optimizer steps of 0-based `epoch`: all its batches but in an `iterations` training's
    last epoch, which stops once the training's steps are done."""
    return min(steps_per_epoch, total_steps(config, steps_per_epoch) - epoch * steps_per_epoch)


def build_optimizer(params: list[Any], config: Any) -> torch.optim.Optimizer:
    """SGD, Adam (weight decay as an L2 term, as Dassl's, which TCP uses) or AdamW with the
    method config's lr, weight decay, momentum and epsilon, over `params` (parameters, or
    parameter groups as `PromptMethod.param_groups` gives them)."""
    if not params:
        raise RunError("the method has no trainable parameters; nothing to train")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    eps = getattr(config, "adam_eps", 1e-8)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=eps, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, eps=eps, weight_decay=config.weight_decay)
    raise RunError(f"unknown optimizer {config.optimizer!r}; choices: sgd, adam, adamw")


def set_lr(optimizer: torch.optim.Optimizer, lr: float, warmup: bool = False) -> None:
    """Every group's learning rate: `lr` times the group's `lr_scale` (1 when it has none; see
    `PromptMethod.param_groups`); during the constant warm-up (`warmup`) `lr` for every group,
    as Dassl's ConstantWarmupScheduler gives its WARMUP_CONS_LR to every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr if warmup else lr * group.get("lr_scale", 1.0)
