"""Prototype contrastive learning with prior-aware label queries (Zeng et al., "Learning from Prototypes:
Contrastive Learning with Prior-Aware Multi-Label Chest X-ray Classification", IEEE JBHI 2026).

Only the abstract is available: the three named components (LGA, LAD, APCL) are built as
described there, every detail it leaves open is a documented choice (docs/baselines.md), and the
consequential ones are options of :class:`ProtoContrastConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from fact_fast.nn import (ATTENTIONS, CLASSIFICATION_LOSSES, CrossAttentionLayer, GroupWiseLinear,
                          TransformerEncoderLayer, prototype_contrastive_loss, sinusoidal_position_2d)
from fact_fast.nn.classification_losses import NEGATIVE_WEIGHTINGS

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number, check_positive

__all__ = ["ProtoContrastConfig", "ProtoContrast", "MODULATIONS", "PROTOTYPES", "APCL_NEGATIVES", "label_prior_bias"]

MODULATIONS = ("prior", "mask", "none")
PROTOTYPES = ("ema", "label")
APCL_NEGATIVES = ("absent", "classes", "both")
CRITERIA = ("bce", "asl")


@dataclass
class ProtoContrastConfig(TrunkConfig):
    """Hyper-parameters. The abstract names the components and no number; every default below is
    fact_fast's choice (docs/baselines.md, "proto_contrast").

    * ``dim`` = 512, ``heads`` = 8, ``ff_dim`` = 2048, ``dropout`` = 0.1: width of the label
      queries, the projected visual tokens and both attention stacks.
    * ``lga_layers`` = 2; ``lga_modulation``: how the train co-occurrence graph modulates the
      label graph attention — ``"prior"`` (attention weights ∝ softmax score × co-occurrence
      weight, i.e. a ``log P`` score bias with P the row-normalised graph incl. self loops),
      ``"mask"`` (attention restricted to graph neighbours, unweighted) or ``"none"`` (plain
      self-attention over the label embeddings: the LLM prior alone).
    * ``lad_layers`` = 2; ``lad_attention``: the decoupling decoder's cross-attention, ``"sigmoid"``
      (independent gates per class query and image position, ``ops.sigmoid_attention``: no class
      or region competes for attention mass) or ``"softmax"`` (SDPA).
    * ``criterion``: ``"bce"`` or ``"asl"`` (γ− = 4, γ+ = 0, clip 0.05) for the classification term.
    * ``apcl_weight`` = 0.1 (at 1 the term cost 3.5 validation mAP on the bundled benchmark,
      docs/baselines.md), ``apcl_temperature`` = 1, ``apcl_negative_weighting`` =
      ``"similarity"`` (adaptive) or ``"uniform"`` (for the other classes' prototypes): see
      :func:`~fact_fast.nn.prototype_contrastive_loss`. At τ = 0.1 the term penalises every
      image-to-image variation of the features that is not yet discriminative (its softplus is
      convex in the similarity gap, which 1/τ amplifies) and collapsed them on the bundled
      benchmark (docs/baselines.md).
    * ``apcl_negatives``: what a positive anchor of class c is contrasted with. ``"absent"``
      (default): class c's *absence* prototype (running mean of the normalised features of the
      images where c is known negative); ``"classes"``: the other classes' prototypes
      (similarity-weighted); ``"both"``. Class c's features are decoded from class c's own query,
      so they differ from other classes' whatever the image shows: the other classes' prototypes
      are met by separating the queries, after which that term stops shaping what the decoder
      reads from the image. Presence and absence of one class share the query and differ only by
      image evidence (docs/baselines.md has the measurements).
    * ``prototypes``: ``"ema"`` (per-class running mean of the normalised features of the known
      positives, momentum ``prototype_momentum`` = 0.9, buffers) or ``"label"`` (the LGA label
      queries themselves, learned through the contrastive term; needs ``apcl_negatives="classes"``).
    * ``transformer_lr_scale`` = 0.1: learning-rate multiplier of the label embedding projection,
      LGA and LAD. At the engine's CNN rate (2e-3) the label queries collapsed to one vector
      within ~40 steps (mean pairwise cosine 0.92 → 1.00) and the model stayed at chance.
    """

    dim: int = 512
    heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1
    lga_layers: int = 2
    lga_modulation: str = "prior"
    lad_layers: int = 2
    lad_attention: str = "sigmoid"
    criterion: str = "bce"
    apcl_weight: float = 0.1
    apcl_temperature: float = 1.0
    apcl_negative_weighting: str = "similarity"
    apcl_negatives: str = "absent"
    prototypes: str = "ema"
    prototype_momentum: float = 0.9
    transformer_lr_scale: float = 0.1

    def __post_init__(self):
        check_positive(self, "dim", "heads", "ff_dim", "lga_layers", "lad_layers", integer=True)
        check_number(self, "dropout", low=0.0, high=1.0, high_open=True)
        check_number(self, "apcl_weight", low=0.0)
        check_positive(self, "apcl_temperature")
        check_number(self, "prototype_momentum", low=0.0, high=1.0, high_open=True)
        check_positive(self, "transformer_lr_scale")
        if self.dim % self.heads:
            raise ValueError(f"ProtoContrastConfig.dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.dim % 4:
            raise ValueError(f"ProtoContrastConfig.dim must be a multiple of 4 (2-D position encoding), got {self.dim}")
        for name, choices in (("lga_modulation", MODULATIONS), ("lad_attention", ATTENTIONS), ("criterion", CRITERIA),
                              ("apcl_negative_weighting", NEGATIVE_WEIGHTINGS), ("prototypes", PROTOTYPES),
                              ("apcl_negatives", APCL_NEGATIVES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.prototypes == "label" and self.apcl_negatives != "classes":
            raise ValueError("prototypes='label' has no absence prototypes (the label queries are the prototypes); "
                             "it needs apcl_negatives='classes'")

    @property
    def absence_prototypes(self) -> bool:
        return self.apcl_negatives in ("absent", "both")


def label_prior_bias(graph: dict, num_classes: int, modulation: str) -> torch.Tensor:
    """The additive attention bias ``[C, C]`` of the label graph attention from the task's CSR
    graph (edge weights, or 1; self loops added when the graph asks for them, and for any class
    that would otherwise have no edge): ``"prior"`` → ``log P`` with P the row-normalised
    adjacency (−inf off the graph); ``"mask"`` → 0 on edges, −inf elsewhere."""
    C = num_classes
    rowptr, col = graph["rowptr"], graph["col"]
    rows = torch.repeat_interleave(torch.arange(C), rowptr[1:] - rowptr[:-1])
    value = graph.get("value")
    adj = torch.zeros(C, C, dtype=torch.float64)
    adj.index_put_((rows, col), torch.ones(len(col), dtype=torch.float64) if value is None else value.double(),
                   accumulate=True)
    if graph.get("add_self_loops", True):
        adj += torch.eye(C, dtype=torch.float64)
    isolated = adj.sum(1) <= 0
    adj[isolated, isolated] = 1.0
    if modulation == "mask":
        return torch.where(adj > 0, 0.0, float("-inf")).float()
    return torch.log(adj / adj.sum(1, keepdim=True)).float()


class ProtoContrast(MultiLabelModel):
    """* **LGA** (label graph attention): the label text embeddings (``TaskInfo.label_embeddings``,
      the LLM prior) → ``Linear(E, dim)`` → ``lga_layers`` Transformer encoder layers over the C
      label tokens whose attention is modulated by the train co-occurrence graph → label queries
      ``Q [C, dim]``.
    * **LAD** (label-aware decoupling decoder): backbone map → 1 × 1 conv to ``dim`` + 2-D
      sine–cosine positions → tokens; ``lad_layers`` cross-attention layers without self-attention
      (each class query decodes its own feature) → class features ``F [B, C, dim]`` →
      group-wise linear classifier → logits.
    * **APCL**: ``loss = criterion(z, y) + λ · APCL(F, y, prototypes, absence prototypes)``.

    ``forward(images [B, 3, H, W]) -> ModelOutput(scores [B, C], logits [B, C],
    extras={"class_features": F, "label_queries": Q})``; loss ``{"total", <criterion>, "apcl"}``.
    With ``prototypes="ema"`` the loss of a training-mode model also moves the prototypes
    (after computing the loss with the previous ones).
    """

    config_class = ProtoContrastConfig

    def __init__(self, config: ProtoContrastConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        C = self.num_classes
        if task.label_embeddings is None:
            raise ValueError("proto_contrast needs task.label_embeddings [C, E] (the label text prior)")
        if c.lga_modulation != "none" and task.graph is None:
            raise ValueError("proto_contrast needs task.graph (the label co-occurrence graph) for "
                             f"lga_modulation={c.lga_modulation!r}; or pass lga_modulation=none")
        self.backbone = build_backbone(c)
        self.proj = nn.Conv2d(self.backbone.out_channels, c.dim, kernel_size=1)
        self.register_buffer("label_text", task.label_embeddings.float().clone())
        self.label_proj = nn.Linear(self.label_text.shape[1], c.dim)
        self.register_buffer("lga_bias", None if c.lga_modulation == "none"
                             else label_prior_bias(task.graph, C, c.lga_modulation))
        self.lga = nn.ModuleList(TransformerEncoderLayer(c.dim, c.heads, c.ff_dim, c.dropout)
                                 for _ in range(c.lga_layers))
        self.lad = nn.ModuleList(CrossAttentionLayer(c.dim, c.heads, c.ff_dim, c.dropout, attention=c.lad_attention)
                                 for _ in range(c.lad_layers))
        self.classifier = GroupWiseLinear(C, c.dim)
        self._criterion = CLASSIFICATION_LOSSES[c.criterion]
        if c.prototypes == "ema":
            self.register_buffer("prototype_bank", torch.zeros(C, c.dim))
            self.register_buffer("prototype_updates", torch.zeros(C, dtype=torch.int64))
        if c.absence_prototypes:
            self.register_buffer("absent_bank", torch.zeros(C, c.dim))
            self.register_buffer("absent_updates", torch.zeros(C, dtype=torch.int64))

    def lr_scales(self) -> dict:
        scale = self.config.transformer_lr_scale
        return {"label_proj.": scale, "lga.": scale, "lad.": scale}

    def label_queries(self) -> torch.Tensor:
        """LGA: ``Q [C, dim]``."""
        h = self.label_proj(self.label_text).unsqueeze(0)
        for layer in self.lga:
            h = layer(h, attn_mask=self.lga_bias)
        return h.squeeze(0)

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        if images.dim() != 4:
            raise ValueError(f"proto_contrast: expected images [B, 3, H, W], got {tuple(images.shape)}")
        x = self.proj(self.backbone(images))
        _, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + sinusoidal_position_2d(h, w, d, device=x.device, dtype=x.dtype)
        queries = self.label_queries()
        features = queries.to(tokens.dtype)
        for layer in self.lad:
            features = layer(features, tokens)
        logits = self.classifier(features)
        return ModelOutput(torch.sigmoid(logits), logits, {"class_features": features, "label_queries": queries})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        c = self.config
        features = output.extras["class_features"]
        classification = self._criterion(output.logits, targets, mask)
        if c.prototypes == "ema":
            prototypes, valid = self.prototype_bank.clone(), self.prototype_updates > 0
        else:
            prototypes, valid = output.extras["label_queries"], None
        absent = dict(absent_prototypes=self.absent_bank.clone(), absent_mask=self.absent_updates > 0) \
            if c.absence_prototypes else {}
        apcl = prototype_contrastive_loss(features, targets, mask, prototypes, valid, temperature=c.apcl_temperature,
                                          negative_weighting=c.apcl_negative_weighting,
                                          class_negatives=c.apcl_negatives != "absent", **absent)
        if c.prototypes == "ema" and self.training:
            self.update_prototypes(features, targets, mask)
        total = classification + c.apcl_weight * apcl
        return {"total": total, c.criterion: classification.detach(), "apcl": apcl.detach()}

    @torch.no_grad()
    def update_prototypes(self, features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> None:
        """``p_c ← m·p_c + (1 − m)·mean_i f̂_ic`` over the batch's known positives of class c
        (f̂ = f/‖f‖), and the same for the absence prototypes over the known negatives; a class's
        first batch sets its prototype to that mean; classes without such a label in the batch
        keep theirs."""
        known = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask
        f = F.normalize(features.float(), dim=-1)
        banks = [(self.prototype_bank, self.prototype_updates, (targets > 0.5) & known)]
        if self.config.absence_prototypes:
            banks.append((self.absent_bank, self.absent_updates, (targets <= 0.5) & known))
        m = self.config.prototype_momentum
        for bank, updates, members in banks:
            w = members.float()
            count = w.sum(0)
            mean = torch.einsum("bc,bcd->cd", w, f) / count.clamp_min(1.0)[:, None]
            moved = torch.where((updates > 0)[:, None], m * bank + (1 - m) * mean, mean)
            seen = count > 0
            bank[seen] = moved[seen]
            updates += seen.long()


register_model("proto_contrast", ProtoContrast,
               description="prototype contrastive learning (IEEE JBHI 2026): co-occurrence modulated label graph "
                           "attention, label-aware decoupling decoder, adaptive prototype contrastive loss")
