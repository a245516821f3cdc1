"""Softmax multi-head attention and a Transformer encoder layer (Vaswani et al., NeurIPS'17).

The attention itself is ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-
efficient kernels on GPU). FACT's own *sigmoid* attention is ``fact_fast.ops.sigmoid_attention``;
these modules are for the methods whose attention is softmax.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["MultiHeadAttention", "TransformerEncoderLayer"]


class MultiHeadAttention(nn.Module):
    """``softmax(Q Kᵀ / √d_h) V`` over ``heads`` heads, then an output projection.

    ``forward(query [B, Lq, D], key [B, Lk, D] = query, value = key, key_padding_mask bool
    [B, Lk] = None) -> [B, Lq, D]``; ``key_padding_mask`` is True where a key must be ignored.
    Projections have biases (as ``torch.nn.MultiheadAttention``); attention dropout applies in
    training mode only.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        dim, heads = int(dim), int(heads)
        if heads <= 0 or dim <= 0 or dim % heads:
            raise ValueError(f"MultiHeadAttention: dim ({dim}) must be a positive multiple of heads ({heads})")
        self.dim, self.heads, self.dropout = dim, heads, float(dropout)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout}"

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or query.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: query must be [B, L, {self.dim}], got {tuple(query.shape)}")
        if key.shape != value.shape or key.dim() != 3 or key.shape[0] != query.shape[0] or key.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: key/value must both be [B={query.shape[0]}, L, {self.dim}], "
                             f"got {tuple(key.shape)} and {tuple(value.shape)}")
        attn_mask = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != key.shape[:2] or key_padding_mask.dtype != torch.bool:
                raise ValueError(f"key_padding_mask must be bool {list(key.shape[:2])}, got "
                                 f"{key_padding_mask.dtype} {list(key_padding_mask.shape)}")
            attn_mask = ~key_padding_mask[:, None, None, :]  # SDPA: True = attend
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        B, _, Lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, self.dim))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward block with residuals, dropout and LayerNorm.

    Post-norm by default (``x = LN(x + Drop(MHA(x)))``, ``x = LN(x + Drop(FFN(x)))``, as in
    Vaswani et al. and ``torch.nn.TransformerEncoderLayer``); ``norm_first`` gives the pre-norm
    variant. ``FFN = Linear(D, ff) → ReLU → Dropout → Linear(ff, D)``.
    ``forward(x [B, L, D], key_padding_mask bool [B, L] = None) -> [B, L, D]``.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int = 2048, dropout: float = 0.1, norm_first: bool = False,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        if int(ff_dim) <= 0:
            raise ValueError(f"ff_dim must be positive, got {ff_dim}")
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm_first = bool(norm_first)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.drop1(self.attn(h, key_padding_mask=key_padding_mask))
            return x + self.drop2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop1(self.attn(x, key_padding_mask=key_padding_mask)))
        return self.norm2(x + self.drop2(self.ff(x)))
