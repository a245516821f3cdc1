"""ML-GCN with experts (Seo et al., "Enhancing Multi-Label Long-Tailed Classification on Chest X-Rays
through ML-GCN Augmentation", ICCV Workshops (CVAMD) 2023)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from fact_fast.nn import (GlobalPool, TransformerEncoderLayer, bce_loss, jensen_shannon_diversity_loss,
                          ride_diversity_loss, split_last_stage)

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model
from .mlgcn import label_gcn_for
from .trunk import TrunkConfig, build_backbone, check_number, check_positive

__all__ = ["MLGCNExpertsConfig", "MLGCNExperts", "LABEL_ATTENTION", "EXPERT_INIT", "DIVERSITY"]

LABEL_ATTENTION = ("across_labels", "per_label")
EXPERT_INIT = ("copy", "random")
DIVERSITY = {"jensen_shannon": jensen_shannon_diversity_loss, "ride": ride_diversity_loss}


@dataclass
class MLGCNExpertsConfig(TrunkConfig):
    """Hyper-parameters; "paper" is "Enhancing Multi-Label Long-Tailed Classification on Chest X-Rays
    through ML-GCN Augmentation" (ICCV Workshops 2023), "code" its release
    (lisaseo9704/2023_ICCVW_CVAMD_NCIA500).

    * ``num_experts`` = 4: Sec. 3.1 and 4.3 ("we incorporated a total of 4 experts").
    * ``gcn_hidden`` = 1024: Sec. 4.3 ("two layers of GCNs, with dimensions of 1024 and 2048"); the
      second layer has the expert's feature width (2048 for ResNets).
    * ``gcn_negative_slope`` = 0.2: ML-GCN's LeakyReLU, kept by the code's ``GCN_block``.
    * ``lse_gamma`` = 0.5: Sec. 3.4, Eq. 5 and 4.3 ("γ for LSE pooling was set to 0.5").
    * ``attention_heads`` = 8, ``attention_ff_dim`` = 2048, ``attention_dropout`` = 0.1: the paper
      says "a single layer of Transformer Encoder" (Sec. 3.5); the numbers are the code's
      ``nn.TransformerEncoderLayer(d_model, nhead=8)`` with PyTorch's defaults (post-norm, ReLU).
    * ``label_attention``: ``"across_labels"`` (default: the C label classifiers attend to each
      other, the paper's stated purpose, Sec. 3.1 "utilize the correlating information among
      labels") or ``"per_label"`` (each label is its own one-token sequence, as the code runs it).
    * ``diversity_weight`` = 0.2: λ of Eq. 4 ("we set λ to 0.2"; RIDE's default too).
    * ``diversity``: ``"jensen_shannon"`` (default: the experts' Jensen–Shannon divergence,
      bounded, :func:`~fact_fast.nn.jensen_shannon_diversity_loss`) or ``"ride"`` (Eq. 3 as
      printed and coded, KL(p̄ ‖ p⁽ᵉ⁾), unbounded below: on the bundled benchmark it reached −48 to
      −110 within 150 steps and took over the loss).
    * ``scaled_logits`` = True: ``z_e = u'_e A'_eᵀ / √D``. The encoder's post-norm outputs have
      unit-variance coordinates, so the unscaled product of the paper and code starts with a
      standard deviation of about √D (logits ≈ 20 at D = 256: every sigmoid saturated, a first
      BCE of ~13 per expert); the 1/√D is the scaling of the paper's own attention (Eq. 6).
    * ``transformer_lr_scale`` = 0.1: learning-rate multiplier of the shared Transformer encoder
      layer (:meth:`~fact_fast.models.MultiLabelModel.lr_scales`). The paper and code train the
      whole network at Adam 1e-4 (``configs/mlgcn_experts.yaml``, which sets this to 1); the
      engine's default lr (2e-3) is a CNN's, at which attention layers collapse.
    * ``expert_init``: ``"copy"`` (default: each expert starts from the trunk's last stage, the
      paper's "final CNN block of ResNet-101 ... constituted a single expert", Sec. 4.3) or
      ``"random"`` (re-initialised with PyTorch's default initialisation, as the code builds them).
    """

    num_experts: int = 4
    gcn_hidden: int = 1024
    gcn_negative_slope: float = 0.2
    lse_gamma: float = 0.5
    attention_heads: int = 8
    attention_ff_dim: int = 2048
    attention_dropout: float = 0.1
    label_attention: str = "across_labels"
    diversity_weight: float = 0.2
    diversity: str = "jensen_shannon"
    scaled_logits: bool = True
    expert_init: str = "copy"
    transformer_lr_scale: float = 0.1

    def __post_init__(self):
        check_positive(self, "gcn_hidden", "attention_heads", "attention_ff_dim", integer=True)
        check_positive(self, "lse_gamma")
        check_number(self, "num_experts", low=2, integer=True)  # the diversity term compares experts
        check_number(self, "attention_dropout", low=0.0, high=1.0, high_open=True)
        check_number(self, "gcn_negative_slope", low=0.0)
        check_number(self, "diversity_weight", low=0.0)
        check_positive(self, "transformer_lr_scale")
        if self.diversity not in DIVERSITY:
            raise ValueError(f"diversity must be one of {tuple(DIVERSITY)}, got {self.diversity!r}")
        if not isinstance(self.scaled_logits, bool):
            raise ValueError(f"MLGCNExpertsConfig.scaled_logits must be true or false, got {self.scaled_logits!r}")
        if self.label_attention not in LABEL_ATTENTION:
            raise ValueError(f"label_attention must be one of {LABEL_ATTENTION}, got {self.label_attention!r}")
        if self.expert_init not in EXPERT_INIT:
            raise ValueError(f"expert_init must be one of {EXPERT_INIT}, got {self.expert_init!r}")


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


class MLGCNExperts(MultiLabelModel):
    """Shared trunk (the backbone's stages before the one it returns) → n experts. Expert e: its own copy of that stage →
    LSE pooling → ``u_e [B, D]``; its own two-layer GCN over the label embeddings and label graph →
    ``A_e [C, D]``; one Transformer encoder layer, shared by all experts and by both inputs, maps
    ``u_e`` (a one-token sequence) and ``A_e`` (C tokens); logits ``z_e = u'_e A'_eᵀ / √D``
    (``scaled_logits``; without the √D as the paper writes it). The model's logits are the
    experts' mean, its scores their sigmoid.

    Loss (Eq. 4): ``Σ_e BCE(z_e, y) + λ · L_div`` with L_div the experts' diversity term
    (``diversity``: bounded Jensen–Shannon, or RIDE's Eq. 3).

    ``forward(images [B, 3, H, W]) -> ModelOutput(scores [B, C], logits [B, C],
    extras={"expert_logits": [n, B, C]})``.
    """

    config_class = MLGCNExpertsConfig
    backbone_prefixes = ("trunk.", "expert_stages.")

    def __init__(self, config: MLGCNExpertsConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        backbone = build_backbone(c)
        width = backbone.out_channels
        if width % c.attention_heads:
            raise ValueError(f"attention_heads ({c.attention_heads}) must divide the feature width {width} "
                             f"of backbone {c.backbone!r}")
        self.trunk, last = split_last_stage(backbone)
        self.expert_stages = nn.ModuleList(copy.deepcopy(last) for _ in range(c.num_experts))
        if c.expert_init == "random":
            for stage in self.expert_stages:
                _reinitialise(stage)
        self.pool = GlobalPool("lse", c.lse_gamma)
        self.expert_gcns = nn.ModuleList(
            label_gcn_for(task, c.gcn_hidden, width, c.gcn_negative_slope, "mlgcn_experts")
            for _ in range(c.num_experts))
        self.encoder = TransformerEncoderLayer(width, c.attention_heads, c.attention_ff_dim, c.attention_dropout)
        self.logit_scale = width ** -0.5 if c.scaled_logits else 1.0

    def lr_scales(self) -> dict:
        return {"encoder.": self.config.transformer_lr_scale}

    def expert_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Each expert's logits ``[n, B, C]``."""
        shared = self.trunk(images)
        out = []
        for stage, gcn in zip(self.expert_stages, self.expert_gcns):
            u = self.encoder(self.pool(stage(shared)).unsqueeze(1)).squeeze(1)  # [B, D]
            a = gcn().to(u.dtype)
            if self.config.label_attention == "across_labels":
                a = self.encoder(a.unsqueeze(0)).squeeze(0)  # one sequence of C label tokens
            else:
                a = self.encoder(a.unsqueeze(1)).squeeze(1)  # C one-token sequences
            out.append((u @ a.t()) * self.logit_scale)
        return torch.stack(out)

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        per_expert = self.expert_logits(images)
        logits = per_expert.mean(dim=0)
        return ModelOutput(torch.sigmoid(logits), logits, {"expert_logits": per_expert})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        per_expert = output.extras["expert_logits"]
        classification = sum(bce_loss(z, targets, mask) for z in per_expert)
        diversity = DIVERSITY[self.config.diversity](per_expert)
        total = classification + self.config.diversity_weight * diversity
        return {"total": total, "bce": classification.detach(), "diversity": diversity.detach()}


register_model("mlgcn_experts", MLGCNExperts,
               description="ML-GCN with 4 experts, LSE pooling, attention and expert diversity (ICCV Workshops "
                           "2023); run with --graph topk_reweighted --sampler cycle")
