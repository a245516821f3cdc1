"""Reference sigmoid attention: materializes the full Lq×Lk score matrix."""
from __future__ import annotations

import math

import torch


def sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                      bias: float = 0.0) -> torch.Tensor:
    """q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv] (leading dims broadcast) -> [..., Lq, dv].

    σ(q kᵀ·scale + bias) v with scale = 1/√d by default.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    return torch.matmul(torch.sigmoid(scores), v)


def sigmoid_interface(q: torch.Tensor, v: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
    """q [C, d] or [B, C, d], v [B, M, d] -> E = q + σ(q vᵀ/√d + bias) v, [B, C, d]."""
    return q + sigmoid_attention(q, v, v, 1.0 / math.sqrt(q.shape[-1]), bias)
