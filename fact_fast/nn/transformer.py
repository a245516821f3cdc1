"""Multi-head attention, a Transformer encoder layer (Vaswani et al., NeurIPS'17) and a
cross-attention decoder layer without self-attention (the query-to-image decoders of the baselines).

Softmax attention runs on ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-
efficient kernels on GPU); sigmoid attention (``attention="sigmoid"``) on fact_fast's fused
``ops.sigmoid_attention``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from fact_fast import ops

__all__ = ["MultiHeadAttention", "TransformerEncoderLayer", "CrossAttentionLayer", "ATTENTIONS"]

ATTENTIONS = ("softmax", "sigmoid")


class MultiHeadAttention(nn.Module):
    """``softmax(Q Kᵀ / √d_h + M) V`` over ``heads`` heads, then an output projection.

    ``forward(query [B, Lq, D], key [B, Lk, D] = query, value = key, key_padding_mask bool
    [B, Lk] = None, attn_mask = None) -> [B, Lq, D]``; ``key_padding_mask`` is True where a key
    must be ignored; ``attn_mask`` float ``[Lq, Lk]`` is the additive score bias M (``-inf``
    forbids a pair; every query needs one allowed key). Projections have biases (as
    ``torch.nn.MultiheadAttention``); attention dropout applies in training mode only.

    ``attention="sigmoid"``: ``σ(Q Kᵀ / √d_h + b) V`` per head through ``ops.sigmoid_attention``,
    with ``b = sigmoid_bias`` or, when None, ``−log Lk`` (so that the gates of Lk keys sum to about
    one at initialisation, Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
    Self-Attention", ICLR'25). Each query–key gate is independent: no normalisation across keys.
    It takes no masks and no attention dropout.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, attention: str = "softmax",
                 sigmoid_bias: float | None = None):
        super().__init__()
        dim, heads = int(dim), int(heads)
        if heads <= 0 or dim <= 0 or dim % heads:
            raise ValueError(f"MultiHeadAttention: dim ({dim}) must be a positive multiple of heads ({heads})")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.dim, self.heads, self.dropout = dim, heads, float(dropout)
        self.attention = attention
        self.sigmoid_bias = None if sigmoid_bias is None else float(sigmoid_bias)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout}, attention={self.attention}"

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or query.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: query must be [B, L, {self.dim}], got {tuple(query.shape)}")
        if key.shape != value.shape or key.dim() != 3 or key.shape[0] != query.shape[0] or key.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: key/value must both be [B={query.shape[0]}, L, {self.dim}], "
                             f"got {tuple(key.shape)} and {tuple(value.shape)}")
        Lq, Lk = query.shape[1], key.shape[1]
        if self.attention == "sigmoid" and (key_padding_mask is not None or attn_mask is not None):
            raise ValueError("MultiHeadAttention(attention='sigmoid') takes no key_padding_mask or attn_mask")
        bias = None
        if attn_mask is not None:
            if attn_mask.shape != (Lq, Lk) or not attn_mask.is_floating_point():
                raise ValueError(f"attn_mask must be a float [{Lq}, {Lk}] additive bias, got "
                                 f"{attn_mask.dtype} {list(attn_mask.shape)}")
            bias = attn_mask
        if key_padding_mask is not None:
            if key_padding_mask.shape != key.shape[:2] or key_padding_mask.dtype != torch.bool:
                raise ValueError(f"key_padding_mask must be bool {list(key.shape[:2])}, got "
                                 f"{key_padding_mask.dtype} {list(key_padding_mask.shape)}")
            keep = ~key_padding_mask[:, None, None, :]  # SDPA: True = attend
            bias = keep if bias is None else bias.masked_fill(~keep, float("-inf"))
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        if self.attention == "sigmoid":
            b = -math.log(max(Lk, 1)) if self.sigmoid_bias is None else self.sigmoid_bias
            out = ops.sigmoid_attention(q, k, v, bias=b)
        else:
            if bias is not None and bias.is_floating_point():
                bias = bias.to(q.dtype)  # SDPA wants the float mask in the (autocast) dtype of q
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.dropout if self.training else 0.0)
        B = out.shape[0]
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, self.dim))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward block with residuals, dropout and LayerNorm.

    Post-norm by default (``x = LN(x + Drop(MHA(x)))``, ``x = LN(x + Drop(FFN(x)))``, as in
    Vaswani et al. and ``torch.nn.TransformerEncoderLayer``); ``norm_first`` gives the pre-norm
    variant. ``FFN = Linear(D, ff) → ReLU → Dropout → Linear(ff, D)``.
    ``forward(x [B, L, D], key_padding_mask bool [B, L] = None, attn_mask float [L, L] = None)
    -> [B, L, D]`` (masks as in :class:`MultiHeadAttention`).
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

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.drop1(self.attn(h, key_padding_mask=key_padding_mask, attn_mask=attn_mask))
            return x + self.drop2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop1(self.attn(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


class CrossAttentionLayer(nn.Module):
    """Queries attend to a memory, then a feed-forward block; no self-attention among the queries
    (each query, e.g. one per class, is decoded on its own). Post-norm with residuals::

        q = LN1(q + Drop(MHA(q, memory)))
        q = LN2(q + Drop(FFN(q)))          FFN = Linear(D, ff) → ReLU → Dropout → Linear(ff, D)

    ``forward(query [B, Lq, D] or [Lq, D] (shared by the batch), memory [B, Lk, D],
    key_padding_mask bool [B, Lk] = None) -> [B, Lq, D]``. ``attention``: ``"softmax"`` (SDPA)
    or ``"sigmoid"`` (``ops.sigmoid_attention``), see :class:`MultiHeadAttention`.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int = 2048, dropout: float = 0.1, attention: str = "softmax",
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        if int(ff_dim) <= 0:
            raise ValueError(f"ff_dim must be positive, got {ff_dim}")
        self.attn = MultiHeadAttention(dim, heads, dropout, attention=attention)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if query.dim() == 2:
            query = query.unsqueeze(0).expand(memory.shape[0], -1, -1)
        q = self.norm1(query + self.drop1(self.attn(query, memory, key_padding_mask=key_padding_mask)))
        return self.norm2(q + self.drop2(self.ff(q)))
