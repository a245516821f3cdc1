"""Train/eval mode helpers."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["set_train_mode", "bn_stats_preserved"]


def set_train_mode(module: torch.nn.Module, freeze_bn: bool = False) -> torch.nn.Module:
    """``module.train()``, keeping BatchNorm layers in eval mode (running statistics frozen) when
    ``freeze_bn`` -- the usual choice for fine-tuning with small per-device batches, and what makes a DDP run compute
    the same function as one process with the global batch."""
    module.train()
    if freeze_bn:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return module


@contextlib.contextmanager
def bn_stats_preserved(module: torch.nn.Module) -> Iterator[None]:
    """Run forwards in train mode (BatchNorm normalises with batch statistics) without moving
    the running statistics: they are restored on exit. For data-dependent initialisation passes,
    which must see training-mode features but are not training steps."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(),
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in module.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, n in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                if n is not None:
                    m.num_batches_tracked.copy_(n)
