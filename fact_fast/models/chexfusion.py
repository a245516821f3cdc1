"""CheXFusion (Kim, "CheXFusion: Effective Fusion of Multi-View Features using Transformers for
Long-Tailed Chest X-Ray Classification", ICCV Workshops (CVAMD) 2023; code dongkyunk/CheXFusion)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fact_fast.nn import MLDecoder, TransformerEncoderLayer, sinusoidal_position_2d, weighted_asymmetric_loss
from fact_fast.nn.classification_losses import REDUCTIONS

from .base import ModelOutput, MultiLabelModel, Stage, StageContext, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number, check_positive

__all__ = ["CheXFusionConfig", "CheXFusion", "train_prevalence"]

SINGLE_VIEW, FUSION = "backbone", "fusion"


@dataclass
class CheXFusionConfig(TrunkConfig):
    """Hyper-parameters; "poster" is the CheXFusion poster (ICCV Workshops 2023), "code" its release
    (dongkyunk/CheXFusion).

    * ``decoder_dim`` = 768, ``decoder_layers`` = 1, ``decoder_heads`` = 8, ``decoder_ff_dim`` =
      2048, ``decoder_dropout`` = 0.1, ``decoder_groups`` = 100: the ML-Decoder head (poster,
      "Employ ML-Decoder as a classification head"; code ``MLDecoder``: ``decoder_embedding=768``,
      ``num_layers_decoder = 1``, ``dim_feedforward = 2048``, ``decoder_dropout = 0.1``, 8 heads,
      ``embed_len_decoder = 100``, no self-attention).
    * ``wasl_gamma_neg`` = 4, ``wasl_gamma_pos`` = 1, ``wasl_clip`` = 0.05: the weighted ASL
      (poster, "Weighted Asymmetric Loss"; code ``ASLwithClassWeight(gamma_neg=4, gamma_pos=1,
      clip=0.05)``); class weights w⁺ = exp(1 − p_c), w⁻ = exp(p_c) from the train prevalence.
    * ``wasl_detach_focusing`` = False: the code differentiates through the focusing weights.
    * ``reduction`` = ``"mean"``: the code's ``-loss.mean()`` (over the known labels here).
    * ``fusion_dim`` = 768, ``fusion_layers`` = 2, ``fusion_heads`` = 8, ``fusion_ff_dim`` = 2048,
      ``fusion_dropout`` = 0.1: the fusion Transformer (code: ``nn.TransformerEncoder(
      nn.TransformerEncoderLayer(d_model=768, nhead=8), num_layers=2)``, PyTorch's defaults
      otherwise); its input is a 3 × 3, stride-2 convolution of each view's frozen feature map
      (code ``nn.Conv2d(768, 768, kernel_size=3, stride=2, padding=1)``).
    * ``max_views`` = 4: views of a study fused (code: studies with more are cut to 4, the
      segment embedding has 4 rows).

    * ``transformer_lr_scale`` = 0.1: learning-rate multiplier of the attention modules, both
      ML-Decoder heads and the fusion encoder; ``fusion_lr_scale`` = 1: multiplier of the whole
      fusion stage. The code trains both stages with one rate, AdamW 3e-5 on a pretrained
      ConvNeXt (``configs/chexfusion.yaml`` sets both to 1); the engine's default rate (2e-3) is
      a CNN's, at which the fusion stage collapsed to constant scores on the bundled benchmark.

    The paper's trunk is ConvNeXt-S (``convnext_small.fb_in22k_ft_in1k``) at 1024 px, AdamW
    lr 3e-5, batch 8 (code ``config.yaml``); the default here is ResNet-50 like every baseline.
    """

    decoder_dim: int = 768
    decoder_layers: int = 1
    decoder_heads: int = 8
    decoder_ff_dim: int = 2048
    decoder_dropout: float = 0.1
    decoder_groups: int = 100
    wasl_gamma_neg: float = 4.0
    wasl_gamma_pos: float = 1.0
    wasl_clip: float = 0.05
    wasl_detach_focusing: bool = False
    reduction: str = "mean"
    fusion_dim: int = 768
    fusion_layers: int = 2
    fusion_heads: int = 8
    fusion_ff_dim: int = 2048
    fusion_dropout: float = 0.1
    max_views: int = 4
    transformer_lr_scale: float = 0.1
    fusion_lr_scale: float = 1.0

    def __post_init__(self):
        check_positive(self, "decoder_dim", "decoder_layers", "decoder_heads", "decoder_ff_dim", "decoder_groups",
                       "fusion_dim", "fusion_layers", "fusion_heads", "fusion_ff_dim", "max_views", integer=True)
        for name in ("decoder_dropout", "fusion_dropout"):
            check_number(self, name, low=0.0, high=1.0, high_open=True)
        check_number(self, "wasl_clip", low=0.0, high=1.0, high_open=True)
        check_positive(self, "transformer_lr_scale", "fusion_lr_scale")
        check_number(self, "wasl_gamma_neg", low=0.0)
        check_number(self, "wasl_gamma_pos", low=0.0)
        if self.reduction not in REDUCTIONS or self.reduction == "none":
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        for name, heads in (("decoder_dim", self.decoder_heads), ("fusion_dim", self.fusion_heads)):
            if getattr(self, name) % heads:
                raise ValueError(f"CheXFusionConfig.{name} ({getattr(self, name)}) must be a multiple of its "
                                 f"number of heads ({heads})")
        if self.fusion_dim % 4:
            raise ValueError(f"CheXFusionConfig.fusion_dim must be a multiple of 4 (2-D position encoding), "
                             f"got {self.fusion_dim}")


def train_prevalence(task: TaskInfo, model: str) -> torch.Tensor:
    """``task.prevalence`` as float32 ``[C]``; a class with no known training label (NaN) gets 0,
    its loss entries being masked anyway. Raises when no class has one."""
    p = task.prevalence.float()
    if bool(torch.isnan(p).all()):
        raise ValueError(f"{model} needs task.prevalence (the train split's positive fraction per class; the "
                         f"engine passes it), got none")
    return torch.nan_to_num(p, nan=0.0)


class CheXFusion(MultiLabelModel):
    """Stage ``backbone`` (single images): backbone map ``[B, D, h, w]`` → ML-Decoder head
    (:class:`~fact_fast.nn.MLDecoder`) → logits; weighted ASL.

    Stage ``fusion`` (studies, ``Stage(views=True, max_views=4)``): the backbone is frozen (no
    gradient, BatchNorm statistics fixed); each valid view's map goes through a 3 × 3 stride-2
    convolution to ``fusion_dim``, plus a 2-D sine–cosine position encoding and the learned
    segment embedding of its slot in the study; the tokens of all views of a study form one
    sequence for a ``fusion_layers``-layer Transformer encoder (padded views masked out) and a
    second ML-Decoder head; weighted ASL on the study's labels.

    ``forward(images [B, 3, H, W])`` or ``forward(images [B, V, 3, H, W], view_mask bool [B, V])``
    ``-> ModelOutput(scores [B, C], logits [B, C], {})``. Once the fusion stage has begun (its
    flag is a buffer, so checkpoints carry it), single images are scored as one-view studies by
    the fusion head, which is then the model's output.
    """

    config_class = CheXFusionConfig

    def __init__(self, config: CheXFusionConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        C = self.num_classes
        self.backbone = build_backbone(c)
        D = self.backbone.out_channels
        decoder = dict(dim=c.decoder_dim, heads=c.decoder_heads, ff_dim=c.decoder_ff_dim, dropout=c.decoder_dropout,
                       layers=c.decoder_layers, max_groups=c.decoder_groups)
        self.head = MLDecoder(D, C, **decoder)
        self.fusion_proj = nn.Conv2d(D, c.fusion_dim, kernel_size=3, stride=2, padding=1)
        self.segment = nn.Parameter(torch.randn(c.max_views, c.fusion_dim))  # code: torch.randn
        self.fusion_encoder = nn.ModuleList(
            TransformerEncoderLayer(c.fusion_dim, c.fusion_heads, c.fusion_ff_dim, c.fusion_dropout)
            for _ in range(c.fusion_layers))
        self.fusion_head = MLDecoder(c.fusion_dim, C, **decoder)
        self.register_buffer("prevalence", train_prevalence(task, "chexfusion"))
        self.register_buffer("fusion_active", torch.zeros((), dtype=torch.bool))
        self._set_trainable(fusion=False)

    def lr_scales(self) -> dict:
        scale = self.config.transformer_lr_scale
        return {"head.": scale, "fusion_encoder.": scale, "fusion_head.": scale}

    def _fusion_modules(self) -> list:
        return [self.fusion_proj, self.fusion_encoder, self.fusion_head]

    def _set_trainable(self, fusion: bool) -> None:
        """Stage 1 trains the backbone and its head; stage 2 the fusion modules only. Unused
        parameters are frozen so that the optimiser and DDP see only what the stage trains."""
        for m in (self.backbone, self.head):
            m.requires_grad_(not fusion)
        for m in self._fusion_modules():
            m.requires_grad_(fusion)
        self.segment.requires_grad_(fusion)

    def train(self, mode: bool = True):
        super().train(mode)
        if bool(self.fusion_active):
            self.backbone.eval()  # the frozen backbone keeps its BatchNorm statistics
        return self

    def stages(self) -> list:
        return [Stage(SINGLE_VIEW, description="single-view backbone + ML-Decoder head, weighted ASL"),
                Stage(FUSION, views=True, max_views=self.config.max_views, lr_scale=self.config.fusion_lr_scale,
                      description=f"frozen backbone; Transformer fusion of up to {self.config.max_views} views of a "
                                  f"study + ML-Decoder head, weighted ASL")]

    def begin_stage(self, stage: Stage, ctx: StageContext | None, resumed: bool = False) -> None:
        fusion = stage.name == FUSION
        self.fusion_active.fill_(fusion)
        self._set_trainable(fusion)
        self.train(self.training)

    def fuse(self, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of studies ``images [B, V, 3, H, W]`` with ``view_mask bool [B, V]``."""
        B, V = view_mask.shape
        if images.dim() != 5 or images.shape[:2] != (B, V):
            raise ValueError(f"chexfusion: images must be [B, V, 3, H, W] matching view_mask [B, V] = "
                             f"{[B, V]}, got {tuple(images.shape)}")
        if V > self.config.max_views:
            raise ValueError(f"chexfusion: {V} views per study, but the model fuses at most max_views = "
                             f"{self.config.max_views}")
        if view_mask.dtype != torch.bool or not bool(view_mask.any(dim=1).all()):
            raise ValueError("chexfusion: view_mask must be bool with at least one valid view per study")
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            maps = self.backbone(images[view_mask])                           # [n, D, h, w]
        maps = self.fusion_proj(maps)                                          # [n, F, h', w']
        n, F_, h, w = maps.shape
        tokens = maps.flatten(2).transpose(1, 2)
        tokens = tokens + sinusoidal_position_2d(h, w, F_, device=tokens.device, dtype=tokens.dtype)
        slot = torch.arange(V, device=view_mask.device).expand(B, V)[view_mask]
        tokens = tokens + self.segment[slot].to(tokens.dtype)[:, None, :]
        seq = tokens.new_zeros(B, V, h * w, F_)
        seq[view_mask] = tokens
        seq = seq.reshape(B, V * h * w, F_)
        padding = (~view_mask)[:, :, None].expand(B, V, h * w).reshape(B, V * h * w)
        for layer in self.fusion_encoder:
            seq = layer(seq, key_padding_mask=padding)
        return self.fusion_head(seq, key_padding_mask=padding)

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        if images.dim() == 5:
            if not bool(self.fusion_active):
                raise ValueError("chexfusion: multi-view input needs the fusion stage's weights; this model holds "
                                 "stage-1 (single-view) weights, score the views one by one")
            if view_mask is None:
                view_mask = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
            logits = self.fuse(images, view_mask)
        elif images.dim() == 4 and view_mask is None:
            if bool(self.fusion_active):
                logits = self.fuse(images.unsqueeze(1), torch.ones(images.shape[0], 1, dtype=torch.bool,
                                                                   device=images.device))
            else:
                logits = self.head(self.backbone(images))
        else:
            raise ValueError(f"chexfusion: expected images [B, 3, H, W], or [B, V, 3, H, W] with view_mask [B, V]; "
                             f"got {tuple(images.shape)}" + ("" if view_mask is None else " with a view_mask"))
        return ModelOutput(torch.sigmoid(logits), logits, {})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        c = self.config
        value = weighted_asymmetric_loss(output.logits, targets, mask, reduction=c.reduction,
                                         prevalence=self.prevalence, gamma_neg=c.wasl_gamma_neg,
                                         gamma_pos=c.wasl_gamma_pos, clip=c.wasl_clip,
                                         detach_focusing=c.wasl_detach_focusing)
        return {"total": value, "weighted_asl": value.detach()}


register_model("chexfusion", CheXFusion,
               description="CheXFusion (ICCV Workshops 2023): ML-Decoder head + weighted ASL, then Transformer "
                           "fusion of up to 4 views per study on the frozen backbone (two stages)")
