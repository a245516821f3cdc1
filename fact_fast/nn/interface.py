"""Semantic interface operator E = Q + σ(Q Vᵀ/√d + b) V (docs/design.md §2.5)."""
from __future__ import annotations

import math

import torch
from torch import nn

from fact_fast import ops

__all__ = ["SemanticInterface"]

BIASES = ("zero", "neg_log_m")


class SemanticInterface(nn.Module):
    """Learned class queries ``Q [C, d]`` attending (sigmoid attention) over visual tokens.

    ``forward(v [B, M, d]) -> E [B, C, d]`` through ``ops.sigmoid_interface``. ``bias="zero"``
    (paper default) or ``"neg_log_m"`` (b = −ln M, which keeps the summed attention mass O(1)
    for large M, as in sigmoid-attention practice).
    """

    def __init__(self, num_classes: int, dim: int, bias: str = "zero", init_std: float = 0.02):
        super().__init__()
        if bias not in BIASES:
            raise ValueError(f"interface bias must be one of {BIASES}, got {bias!r}")
        self.num_classes, self.dim, self.bias_mode = int(num_classes), int(dim), bias
        self.queries = nn.Parameter(torch.empty(self.num_classes, self.dim))
        nn.init.trunc_normal_(self.queries, std=init_std, a=-2 * init_std, b=2 * init_std)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, bias={self.bias_mode}"

    def attention_bias(self, num_tokens: int) -> float:
        return 0.0 if self.bias_mode == "zero" else -math.log(max(num_tokens, 1))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() != 3 or v.shape[-1] != self.dim:
            raise ValueError(f"SemanticInterface: expected v [B, M, {self.dim}], got {tuple(v.shape)}")
        q = self.queries if self.queries.dtype == v.dtype else self.queries.to(v.dtype)  # autocast
        return ops.sigmoid_interface(q, v, bias=self.attention_bias(v.shape[1]))
