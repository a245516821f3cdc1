"""FACT: Fuzzy Alignment with Comorbidity Topology (SPEC §2), assembled from ``fact_fast.nn``."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from fact_fast.nn import (Backbone, FACTLoss, FuzzyMembership, LabelGCN, SemanticInterface,
                          VectorQuantizer, stage)
from fact_fast.nn.interface import BIASES
from fact_fast.nn.losses import LOSSES
from fact_fast.nn.membership import KERNELS

__all__ = ["FACTConfig", "FACT", "FACTOutput", "create_model", "list_models", "register_model",
           "get_model_config"]


@dataclass
class FACTConfig:
    """Architecture + objective hyper-parameters. Defaults are the paper's: with C=40 classes and
    384-d label embeddings the resnet50 model has 26,019,393 parameters (paper: 25.87 M, +0.6 %)
    and 4.203 G multiply-adds at 3×224×224 (paper: 4.21 G, −0.2 %): trunk 23.51 M / 4.087 G,
    projection 1.05 M, codebook 0.52 M, GCN 0.92 M, queries 0.02 M, τ 1."""

    backbone: str = "resnet50"
    pretrained: bool = False
    out_index: int = -1            # which backbone stage feeds the projection
    dim: int = 512                 # d
    codebook_size: int = 1024      # K
    gcn_hidden: int = 1024
    beta: float = 0.25             # commitment weight inside L_commit
    gamma: float = 1.0             # weight of L_commit in the total loss
    alpha: float = 1.0             # weight of L_set
    logit_scale: float = 10.0      # λ
    threshold: float = 0.5         # δ
    smooth: float = 1.0            # ε of the fuzzy Jaccard
    use_vq: bool = True
    use_gcn: bool = True
    membership: str = "gaussian"
    loss: str = "fuzzy"
    interface_bias: str = "zero"
    vq_data_init: bool = True
    vq_restart_every: int = 0      # re-seed dead codes every N training steps (0: never)
    init_tau: float | None = None  # None: from the first batch (see FuzzyMembership)
    gcn_negative_slope: float = 0.2

    def __post_init__(self):
        if self.membership not in KERNELS:
            raise ValueError(f"membership must be one of {KERNELS}, got {self.membership!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.interface_bias not in BIASES:
            raise ValueError(f"interface_bias must be one of {BIASES}, got {self.interface_bias!r}")
        for name in ("dim", "codebook_size", "gcn_hidden"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FACTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FACTConfig fields: {sorted(unknown)}")
        return cls(**d)


class FACTOutput(NamedTuple):
    mu: torch.Tensor                    # [B, C] fuzzy memberships = class scores
    embeddings: torch.Tensor            # E [B, C, d]
    anchors: torch.Tensor               # S [C, d]
    tau: torch.Tensor                   # scalar
    commit_loss: torch.Tensor           # scalar (0 without VQ)
    codes: torch.Tensor | None          # [B, M] code indices (None without VQ)
    kernel: str = "gaussian"


class FACT(nn.Module):
    """backbone → 1×1 projection → VQ → semantic interface → fuzzy membership vs. GCN anchors.

    Args:
        config: :class:`FACTConfig`.
        num_classes: C.
        label_embeddings: S⁰ ``[C, D]`` (text embeddings of the class names); needed with the GCN.
        rowptr, col, value: the label graph in CSR (no self loops needed; see
            ``fact_fast.data.label_graph``); needed with the GCN.
    """

    def __init__(self, config: FACTConfig, num_classes: int, label_embeddings: torch.Tensor | None = None,
                 rowptr: torch.Tensor | None = None, col: torch.Tensor | None = None,
                 value: torch.Tensor | None = None):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.num_classes = int(num_classes)
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        c = self.config
        self.backbone = Backbone(c.backbone, pretrained=c.pretrained, out_index=c.out_index)
        self.proj = nn.Conv2d(self.backbone.out_channels, c.dim, kernel_size=1, bias=True)
        self.vq = VectorQuantizer(c.codebook_size, c.dim, beta=c.beta, data_init=c.vq_data_init,
                                  restart_every=c.vq_restart_every) if c.use_vq else None
        self.interface = SemanticInterface(self.num_classes, c.dim, bias=c.interface_bias)
        if c.use_gcn:
            if label_embeddings is None or rowptr is None or col is None:
                raise ValueError("use_gcn=True needs label_embeddings [C, D] and the label graph (rowptr, col)")
            label_embeddings = torch.as_tensor(label_embeddings, dtype=torch.float32)
            if label_embeddings.shape[0] != self.num_classes:
                raise ValueError(f"label_embeddings has {label_embeddings.shape[0]} rows, "
                                 f"expected num_classes={self.num_classes}")
            self.gcn = LabelGCN(label_embeddings, torch.as_tensor(rowptr), torch.as_tensor(col),
                                hidden_dim=c.gcn_hidden, out_dim=c.dim, value=value,
                                negative_slope=c.gcn_negative_slope)
            self.free_anchors = None
        else:
            self.gcn = None
            self.free_anchors = nn.Parameter(torch.randn(self.num_classes, c.dim) * 0.02)
        self.membership = FuzzyMembership(c.membership, init_tau=c.init_tau)

    # -- pieces -------------------------------------------------------------------------------
    def anchors(self) -> torch.Tensor:
        """Semantic anchors S [C, d]."""
        if self.gcn is not None:
            with stage("gcn"):
                return self.gcn()
        return self.free_anchors

    def build_loss(self) -> FACTLoss:
        c = self.config
        return FACTLoss(c.loss, alpha=c.alpha, gamma=c.gamma, logit_scale=c.logit_scale,
                        threshold=c.threshold, smooth=c.smooth)

    @property
    def tau(self) -> torch.Tensor:
        return self.membership.tau

    def codebook_stats(self, reset: bool = False) -> dict:
        if self.vq is None:
            return {}
        return self.vq.codebook_stats(reset=reset)

    def forward(self, images: torch.Tensor) -> FACTOutput:
        with stage("backbone"):
            feat = self.backbone(images)
        with stage("projection"):
            z = self.proj(feat).flatten(2).transpose(1, 2)  # [B, M, d]
        if self.vq is not None:
            with stage("vq"):
                v, codes, commit = self.vq(z)
        else:
            v, codes, commit = z, None, z.new_zeros(())
        s = self.anchors()
        with stage("interface"):
            e = self.interface(v)
        with stage("membership"):
            mu = self.membership(e, s)
        return FACTOutput(mu, e, s, self.membership.tau, commit, codes, self.config.membership)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor) -> "FACT":
        """Run the data-dependent initialisations (VQ codebook, τ) on one batch now instead of
        lazily in the first training forward (keeps the training graph static for DDP and
        torch.compile). A no-op for parts already initialised."""
        was_training = self.training
        self.train()
        self(images)
        if self.vq is not None:
            self.vq.reset_stats()
        self.train(was_training)
        return self

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Boolean predictions μ > δ."""
        return self(images).mu > self.config.threshold


# -- registry ----------------------------------------------------------------------------------
_MODEL_CONFIGS: dict[str, FACTConfig] = {}


def register_model(name: str, config: FACTConfig | None = None, **fields_) -> FACTConfig:
    """Register a named configuration (``fields_`` override FACTConfig defaults)."""
    cfg = replace(config, **fields_) if config is not None else FACTConfig(**fields_)
    _MODEL_CONFIGS[name] = cfg
    return cfg


def list_models() -> list[str]:
    return sorted(_MODEL_CONFIGS)


def get_model_config(name: str, **overrides: Any) -> FACTConfig:
    if name not in _MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    cfg = replace(_MODEL_CONFIGS[name], **{k: v for k, v in overrides.items()})
    return cfg


def create_model(name: str, num_classes: int, label_embeddings: torch.Tensor | None = None,
                 rowptr: torch.Tensor | None = None, col: torch.Tensor | None = None, **overrides: Any) -> FACT:
    """timm-style factory: ``create_model("fact_resnet50", 40, S0, rowptr, col, use_vq=False)``."""
    value = overrides.pop("value", None)
    known = {f.name for f in fields(FACTConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"create_model got unknown options {sorted(unknown)}; FACTConfig fields: {sorted(known)}")
    return FACT(get_model_config(name, **overrides), num_classes, label_embeddings, rowptr, col, value=value)


# The paper's model (SPEC §2 defaults).
register_model("fact_resnet50")
# Small CPU-friendly model for the synthetic dataset (the default of `python -m fact_fast.train`).
# Picked by measurement on a 2-core CPU: timm's tiny `test_resnet` trunk (0.37 M parameters,
# 96 channels, stride 32) reaches ~0.9 val mAP on the synthetic set in 20 epochs (~2 min), while
# resnet10t/resnet18 trunks train 3-5x slower per epoch and learn slower from scratch.
register_model("fact_tiny", backbone="test_resnet", dim=64, codebook_size=256, gcn_hidden=128,
               vq_restart_every=10)
# Tiny smoke-test model (timm's `test_resnet`, 96 channels, stride 32).
register_model("fact_test", backbone="test_resnet", dim=32, codebook_size=64, gcn_hidden=64)
