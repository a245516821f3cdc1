"""The plain baselines: pooled backbone features + one linear layer, trained with BCE, ASL or focal loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fact_fast.nn import CLASSIFICATION_LOSSES, GlobalPool
from fact_fast.nn.classification_losses import REDUCTIONS

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number

__all__ = ["PooledLinearConfig", "PooledLinearClassifier", "CRITERIA"]

# the losses this head is built for (other entries of CLASSIFICATION_LOSSES need what it lacks,
# e.g. the class prevalence of the weighted ASL)
CRITERIA = ("bce", "asl", "focal")


@dataclass
class PooledLinearConfig(TrunkConfig):
    """Backbone → global average pooling → ``Linear(D, C)``; ``criterion`` picks the loss.

    * ``criterion``: ``"bce"`` (binary cross-entropy), ``"asl"`` (asymmetric loss, Ridnik et al.,
      ICCV'21) or ``"focal"`` (Lin et al., ICCV'17).
    * ``reduction``: ``"mean"`` over the known labels (default, every criterion) or ``"sum"``
      (the ASL paper's; see docs/baselines.md for why the mean is the default).
    * ``asl_gamma_neg`` = 4, ``asl_gamma_pos`` = 0, ``asl_clip`` = 0.05: the ASL paper's
      setting for its multi-label experiments, as in the official training script
      (Alibaba-MIIL/ASL ``train.py``: ``AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)``).
    * ``asl_detach_focusing`` = True: the official training script's
      ``disable_torch_grad_focal_loss=True`` (the focusing weights get no gradient).
    * ``focal_gamma`` = 2, ``focal_alpha`` = 0.25: focal-loss paper Table 1a/1b (the best pair,
      "γ = 2, α = 0.25 works best"); ``None`` (``focal_alpha=null`` on the command line) disables
      α-balancing.
    """

    criterion: str = "bce"
    reduction: str = "mean"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    asl_detach_focusing: bool = True
    focal_gamma: float = 2.0
    focal_alpha: float | None = 0.25

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.reduction not in REDUCTIONS or self.reduction == "none":
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        check_number(self, "asl_clip", low=0.0, high=1.0, high_open=True)
        for name in ("asl_gamma_neg", "asl_gamma_pos", "focal_gamma"):
            check_number(self, name, low=0.0)
        check_number(self, "focal_alpha", low=0.0, high=1.0, allow_none=True)

    def loss_options(self) -> dict:
        """The keyword arguments of the chosen loss function."""
        if self.criterion == "asl":
            return {"gamma_neg": self.asl_gamma_neg, "gamma_pos": self.asl_gamma_pos, "clip": self.asl_clip,
                    "detach_focusing": self.asl_detach_focusing}
        if self.criterion == "focal":
            return {"gamma": self.focal_gamma, "alpha": self.focal_alpha}
        return {}


class PooledLinearClassifier(MultiLabelModel):
    """``forward(images [B, 3, H, W]) -> ModelOutput(scores=σ(z) [B, C], logits=z [B, C],
    extras={"features": pooled [B, D]})``; ``loss`` -> ``{"total", <criterion>}``."""

    config_class = PooledLinearConfig

    def __init__(self, config: PooledLinearConfig, task: TaskInfo):
        super().__init__(config, task)
        self.backbone = build_backbone(self.config)
        self.pool = GlobalPool("avg")
        self.head = nn.Linear(self.backbone.out_channels, self.num_classes)
        self._loss_fn = CLASSIFICATION_LOSSES[self.config.criterion]
        self._loss_options = self.config.loss_options()

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        features = self.pool(self.backbone(images))
        logits = self.head(features)
        return ModelOutput(torch.sigmoid(logits), logits, {"features": features})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        value = self._loss_fn(output.logits, targets, mask, reduction=self.config.reduction, **self._loss_options)
        return {"total": value, self.config.criterion: value.detach()}


_TRUNK = "ImageNet ResNet-50 trunk, global average pooling, linear head"
register_model("resnet50_bce", PooledLinearClassifier, description=f"{_TRUNK}, BCE", criterion="bce")
register_model("resnet50_asl", PooledLinearClassifier,
               description=f"{_TRUNK}, asymmetric loss (Ridnik et al., ICCV'21)", criterion="asl")
register_model("resnet50_focal", PooledLinearClassifier,
               description=f"{_TRUNK}, focal loss (Lin et al., ICCV'17)", criterion="focal")
