"""Global pooling of a backbone feature map into one vector per image (the baselines' heads)."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GlobalPool", "global_pool", "POOLINGS"]

POOLINGS = ("avg", "max", "lse")


def global_pool(x: torch.Tensor, mode: str = "avg", lse_gamma: float = 0.5) -> torch.Tensor:
    """``x [B, D, H, W]`` -> ``[B, D]`` (same dtype).

    * ``"avg"``: mean over the H·W positions (ResNet's head).
    * ``"max"``: maximum over the positions (ML-GCN's global max pooling).
    * ``"lse"``: log-sum-exp pooling (Pinheiro & Collobert, CVPR'15),
      ``(1/γ) · log((1/P) · Σ_{ij} exp(γ · x_ij))`` with P = H·W; it moves from the mean (γ → 0)
      to the max (γ → ∞). Computed as ``(logsumexp(γx) − log P) / γ``, stable for any γ > 0.
    """
    if x.dim() != 4:
        raise ValueError(f"global_pool: expected x [B, D, H, W], got {tuple(x.shape)}")
    if mode == "avg":
        return x.mean(dim=(2, 3))
    if mode == "max":
        return x.amax(dim=(2, 3))
    if mode == "lse":
        if not lse_gamma > 0:
            raise ValueError(f"lse_gamma must be > 0, got {lse_gamma}")
        flat = x.flatten(2)
        flat = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
        pooled = (torch.logsumexp(lse_gamma * flat, dim=2) - math.log(flat.shape[2])) / lse_gamma
        return pooled.to(x.dtype)
    raise ValueError(f"pooling mode must be one of {POOLINGS}, got {mode!r}")


class GlobalPool(nn.Module):
    """Module form of :func:`global_pool`: ``forward(x [B, D, H, W]) -> [B, D]``."""

    def __init__(self, mode: str = "avg", lse_gamma: float = 0.5):
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling mode must be one of {POOLINGS}, got {mode!r}")
        if mode == "lse" and not lse_gamma > 0:
            raise ValueError(f"lse_gamma must be > 0, got {lse_gamma}")
        self.mode, self.lse_gamma = mode, float(lse_gamma)

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (f", lse_gamma={self.lse_gamma}" if self.mode == "lse" else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(x, self.mode, self.lse_gamma)
