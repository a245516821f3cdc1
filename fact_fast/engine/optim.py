"""Optimiser and learning-rate schedule of one training stage."""
from __future__ import annotations

import math

import torch

__all__ = ["OPTIMIZERS", "build_optimizer", "cosine_warmup_lambda"]

OPTIMIZERS = ("adamw", "adam", "sgd")


def build_optimizer(param_groups: list, name: str, lr: float, momentum: float = 0.9,
                    betas: tuple = (0.9, 0.999)) -> torch.optim.Optimizer:
    """``name`` over the model's groups (each carries its own ``lr`` and ``weight_decay``).

    ``adam`` applies weight decay as L2 in the gradient (as the papers that use Adam do);
    ``adamw`` decouples it. ``betas``: Adam's moment decays (β1, β2).
    """
    groups = [g for g in param_groups if g["params"]]
    if not groups:
        raise ValueError("optimizer: the model has no trainable parameters in this stage")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def cosine_warmup_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup_steps``, cosine to ``min_ratio``."""
    total_steps = max(int(total_steps), 1)
    warmup_steps = max(min(int(warmup_steps), total_steps - 1), 0)

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        t = min(max(t, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return fn
