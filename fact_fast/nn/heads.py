"""Classification heads over per-class features or image tokens: the 1×1 projection of a feature
map, the group-wise linear classifier and the ML-Decoder (Ridnik et al., "ML-Decoder: Scalable and
Versatile Classification Head", WACV'23)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .transformer import CrossAttentionLayer

__all__ = ["GroupWiseLinear", "MLDecoder", "PROJECTION_INITS", "projection_1x1"]

PROJECTION_INITS = ("default", "orthogonal", "identity")


def projection_1x1(in_channels: int, out_channels: int, init: str = "default") -> nn.Conv2d:
    """A 1×1 convolution ``[B, in, h, w] -> [B, out, h, w]`` with a bias.

    ``init="default"`` is PyTorch's (weights U(−1/√in, 1/√in)): it shrinks a feature by about √3
    and mixes its channels at random. ``"orthogonal"`` starts the weight (semi-)orthogonal and
    the bias at zero, so the projection starts as an isometry (``in == out``: a rotation) and the
    layers after it see the trunk's features at their own scale. ``"identity"`` (``in == out``
    only) starts it as the identity, so the layers after it see the trunk's own channels rather
    than a mixture of them (on the bundled benchmark only a projection that left them unmixed
    scored like no projection; why is not established, docs/fact_head.md).
    """
    if init not in PROJECTION_INITS:
        raise ValueError(f"projection init must be one of {PROJECTION_INITS}, got {init!r}")
    if init == "identity" and in_channels != out_channels:
        raise ValueError(f"projection_init='identity' needs d equal to the trunk's channels, got "
                         f"{in_channels} -> {out_channels}; use projection_init='default' (or 'orthogonal')")
    conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=1, bias=True)
    if init == "orthogonal":
        nn.init.orthogonal_(conv.weight)
        nn.init.zeros_(conv.bias)
    elif init == "identity":
        with torch.no_grad():
            conv.weight.copy_(torch.eye(conv.out_channels).view_as(conv.weight))
        nn.init.zeros_(conv.bias)
    return conv


class GroupWiseLinear(nn.Module):
    """One linear classifier per class on that class's own feature: ``z_c = ⟨w_c, x_c⟩ + b_c``.

    ``forward(x [B, C, D], frozen=False) -> [B, C]``. ``frozen=True`` uses the weights as
    constants (no gradient reaches them; the input still gets its gradient), for updates that
    must leave the classifier alone. Initialisation ``U(−1/√D, 1/√D)`` for weights and biases
    (as ``nn.Linear`` and Query2Label's ``GroupWiseLinear``).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes, self.dim = int(num_classes), int(dim)
        if self.num_classes <= 0 or self.dim <= 0:
            raise ValueError(f"GroupWiseLinear: num_classes and dim must be positive, got {num_classes}, {dim}")
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.dim))
        self.bias = nn.Parameter(torch.empty(self.num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}"

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.num_classes, self.dim):
            raise ValueError(f"GroupWiseLinear: x must be [B, {self.num_classes}, {self.dim}], got {tuple(x.shape)}")
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        return (x * w.to(x.dtype)).sum(-1) + b.to(x.dtype)


class _MLDecoderLayer(nn.Module):
    """One ML-Decoder layer: the self-attention block of a Transformer decoder removed, which in
    the official ``TransformerDecoderLayerOptimal`` leaves ``q = LN(q + Dropout(q))``; then
    cross-attention to the image tokens and the feed-forward block (:class:`CrossAttentionLayer`)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.query_drop = nn.Dropout(dropout)
        self.cross = CrossAttentionLayer(dim, heads, ff_dim, dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        return self.cross(self.query_norm(q + self.query_drop(q)), memory, key_padding_mask)


class MLDecoder(nn.Module):
    """ML-Decoder: fixed query vectors cross-attend to the image tokens; "group fully-connected"
    pooling turns each decoded query into its group's class logits.

    * image tokens ``ReLU(Linear(in_dim → dim))``;
    * ``G = min(max_groups, C)`` queries ``[G, dim]``, drawn once from N(0, 1) and **not learned**
      (a buffer; the official code freezes its ``query_embed``);
    * ``layers`` decoder layers (:class:`_MLDecoderLayer`: no self-attention, ``heads``-head
      cross-attention, feed-forward ``ff_dim``, dropout);
    * group FC: query g gives the logits of classes ``g·k … g·k + k − 1`` with ``k = ⌈C / G⌉``
      through its own ``[dim, k]`` matrix (Xavier-normal), plus a per-class bias (zeros). With
      ``C ≤ max_groups`` that is one query and one weight vector per class.

    ``forward(x [B, in_dim, h, w] or tokens [B, L, in_dim], key_padding_mask bool [B, L] = None)
    -> logits [B, C]``; ``key_padding_mask`` is True at tokens to ignore.
    """

    def __init__(self, in_dim: int, num_classes: int, dim: int = 768, heads: int = 8, ff_dim: int = 2048,
                 dropout: float = 0.1, layers: int = 1, max_groups: int = 100):
        super().__init__()
        in_dim, num_classes, dim, layers, max_groups = (int(v) for v in (in_dim, num_classes, dim, layers, max_groups))
        for name, v in (("in_dim", in_dim), ("num_classes", num_classes), ("dim", dim), ("layers", layers),
                        ("max_groups", max_groups)):
            if v <= 0:
                raise ValueError(f"MLDecoder: {name} must be positive, got {v}")
        self.in_dim, self.num_classes = in_dim, num_classes
        groups = min(max_groups, num_classes)
        self.group_size = math.ceil(num_classes / groups)
        self.embed = nn.Linear(in_dim, dim)
        self.register_buffer("queries", torch.randn(groups, dim))
        self.layers = nn.ModuleList(_MLDecoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.group_weight = nn.Parameter(torch.empty(groups, dim, self.group_size))
        self.group_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.xavier_normal_(self.group_weight)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"MLDecoder: expected [B, {self.in_dim}, h, w] or [B, L, {self.in_dim}], got {tuple(x.shape)}")
        memory = torch.relu(self.embed(x))
        h = self.queries.to(memory.dtype).unsqueeze(0).expand(memory.shape[0], -1, -1)
        for layer in self.layers:
            h = layer(h, memory, key_padding_mask)
        logits = torch.einsum("bgd,gdk->bgk", h, self.group_weight.to(h.dtype)).flatten(1)[:, :self.num_classes]
        return logits + self.group_bias.to(logits.dtype)
