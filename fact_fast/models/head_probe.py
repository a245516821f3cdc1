"""The head probe: the steps between a plain CNN head and FACT's head, one at a time.

``benchmarks.fact_ladder`` walks from the CNN + BCE baseline to full FACT one change per rung; the
rungs between the two that are neither a plain CNN nor FACT are this model: the same trunk, an
optional 1×1 projection to the width d, mean pooling or FACT's semantic interface, and a linear or
scaled-cosine read-out, trained with BCE. It is a diagnostic model, not a method of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fact_fast.nn import PROJECTION_INITS, GroupWiseLinear, SemanticInterface, projection_1x1
from fact_fast.nn.classification_losses import bce_loss
from fact_fast.nn.interface import BIASES

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number

__all__ = ["HeadProbeConfig", "HeadProbe", "POOLS", "READOUTS"]

POOLS = ("mean", "interface")
READOUTS = ("linear", "cosine")


@dataclass
class HeadProbeConfig(TrunkConfig):
    """* ``dim``: width d of the 1×1 projection after the trunk (None: no projection, the trunk's
      channels go straight to the pooling); ``projection_init``: its initialisation
      (:func:`fact_fast.nn.projection_1x1`); ``projection_lr_scale``: its learning-rate multiplier.
    * ``pool``: ``"mean"`` (global average of the M positions, one feature per image) or
      ``"interface"`` (FACT's E = Q + σ(QVᵀ/√d + b)V, one feature per image and class).
    * ``readout``: ``"linear"`` (⟨w_c, x_c⟩ + b_c) or ``"cosine"`` (``cosine_scale``·cos(x_c, w_c)
      + b_c, the read-out of a normalised classifier).
    * ``query_init_std``, ``interface_bias``: the interface's, as in FACT.
    """

    dim: int | None = 128
    projection_init: str = "default"
    projection_lr_scale: float = 1.0
    pool: str = "mean"
    readout: str = "linear"
    cosine_scale: float = 16.0
    query_init_std: float = 0.02
    interface_bias: str = "zero"

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.interface_bias not in BIASES:
            raise ValueError(f"interface_bias must be one of {BIASES}, got {self.interface_bias!r}")
        if self.projection_init not in PROJECTION_INITS:
            raise ValueError(f"projection_init must be one of {PROJECTION_INITS}, got {self.projection_init!r}")
        if self.pool == "interface" and self.dim is None:
            raise ValueError("pool='interface' needs a projection width dim")
        check_number(self, "dim", low=1, integer=True, allow_none=True)
        check_number(self, "cosine_scale", low=0, low_open=True)
        check_number(self, "projection_lr_scale", low=0, low_open=True)
        check_number(self, "query_init_std", low=0, low_open=True)


class HeadProbe(MultiLabelModel):
    """``forward(images [B, 3, H, W]) -> ModelOutput(scores=σ(z) [B, C], logits=z [B, C],
    extras={"features": [B, D] (mean) or [B, C, d] (interface)})``; ``loss`` -> ``{"total", "bce"}``."""

    config_class = HeadProbeConfig

    def __init__(self, config: HeadProbeConfig, task: TaskInfo):
        super().__init__(config, task)
        c, C = self.config, self.num_classes
        self.backbone = build_backbone(c)
        width = self.backbone.out_channels if c.dim is None else c.dim
        self.proj = None if c.dim is None else projection_1x1(self.backbone.out_channels, c.dim, c.projection_init)
        self.interface = (SemanticInterface(C, width, bias=c.interface_bias, init_std=c.query_init_std)
                          if c.pool == "interface" else None)
        # one weight vector per class either way: GroupWiseLinear on [B, C, D] features, or the
        # same weights broadcast over a mean-pooled [B, D] feature
        self.classifier = GroupWiseLinear(C, width)

    def lr_scales(self) -> dict:
        scale = self.config.projection_lr_scale
        return {} if scale == 1.0 or self.proj is None else {"proj.": scale}

    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters() if n.endswith("queries")}

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        x = self.backbone(images)
        if self.proj is not None:
            x = self.proj(x)
        v = x.flatten(2).transpose(1, 2)                                   # [B, M, D]
        if self.interface is not None:
            feats = self.interface(v)                                      # [B, C, D]
        else:
            feats = v.mean(1)                                              # [B, D]
        per_class = feats if feats.dim() == 3 else feats.unsqueeze(1).expand(-1, self.num_classes, -1)
        if self.config.readout == "linear":
            logits = self.classifier(per_class)
        else:
            cos = (F.normalize(per_class, dim=-1) * F.normalize(self.classifier.weight, dim=-1)).sum(-1)
            logits = self.config.cosine_scale * cos + self.classifier.bias
        return ModelOutput(torch.sigmoid(logits), logits, {"features": feats})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        value = bce_loss(output.logits, targets, mask)
        return {"total": value, "bce": value.detach()}


register_model("fact_head_probe", HeadProbe,
               description="diagnostic: fact_tiny's trunk, 1×1 projection, mean pool or FACT's interface, "
                           "linear or scaled-cosine read-out, BCE (the fact_ladder rungs)",
               backbone="fact_resnet_tiny", out_index=3, dim=128)
