"""FACT: Fuzzy Alignment with Comorbidity Topology (docs/design.md §2), assembled from ``fact_fast.nn``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from fact_fast import ops
from fact_fast.nn import (PROJECTION_INITS, Backbone, FACTLoss, FuzzyMembership, LabelGCN, SemanticInterface,
                          VectorQuantizer, bn_stats_preserved, projection_1x1, stage)
from fact_fast.nn.interface import BIASES
from fact_fast.nn.losses import LOSSES
from fact_fast.ops.reference.fuzzy import LOGITS
from fact_fast.nn.membership import KERNELS

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model

__all__ = ["FACTConfig", "FACT", "EMBEDDING_NORMS", "PAPER_CHOICES"]

EMBEDDING_NORMS = ("none", "l2")
LABEL_EMBEDDING_TRANSFORMS = ("none", "center")


def transform_label_embeddings(s0: torch.Tensor, how: str) -> torch.Tensor:
    """S⁰ ``[C, D]`` as the GCN sees it. Sentence embeddings share a common direction (the shipped
    MiniLM vectors have mean pairwise cosine ≈ 0.73); ``"center"`` removes it (S⁰ minus its mean
    over the classes), so what the GCN propagates is what tells the classes apart."""
    if how == "none":
        return s0
    if how == "center":
        return s0 - s0.mean(0, keepdim=True)
    raise ValueError(f"label_embedding_transform must be one of {LABEL_EMBEDDING_TRANSFORMS}, got {how!r}")


@dataclass
class FACTConfig:
    """Architecture + objective hyper-parameters.

    The sizes are the paper's: with C=40 classes and 384-d label embeddings the resnet50 model has
    26,039,873 parameters (paper: 25.87 M, +0.7 %) and 4.203 G multiply-adds at 3×224×224 (paper:
    4.21 G, −0.2 %): trunk 23.51 M / 4.087 G, projection 1.05 M, codebook 0.52 M, GCN 0.92 M,
    queries and anchor residuals 0.04 M, τ 1.

    The second group are the choices the paper leaves open. Their defaults were chosen on the
    validation split of the bundled benchmark, one rung at a time from a plain CNN to full FACT
    (docs/fact_head.md has the evidence); :data:`PAPER_CHOICES` holds the literal reading the
    project started from (``fact_tiny_paper`` / ``fact_resnet50_paper``).
    """

    backbone: str = "resnet50"
    pretrained: bool = False
    pretrained_file: str | None = None  # local backbone weights (implies pretrained)
    out_index: int = -1            # which backbone stage feeds the projection
    dim: int = 512                 # d
    codebook_size: int = 1024      # K
    gcn_hidden: int = 1024
    beta: float = 0.25             # commitment weight inside L_commit
    gamma: float = 1.0             # weight of L_commit in the total loss
    alpha: float = 1.0             # weight of L_set
    smooth: float = 1.0            # ε of the fuzzy Jaccard
    use_vq: bool = True            # ablation switches of the paper
    use_gcn: bool = True
    membership: str = "gaussian"
    loss: str = "fuzzy"
    gcn_negative_slope: float = 0.2
    # -- open choices (docs/fact_head.md) ---------------------------------------------------------
    # "default": PyTorch's U(−1/√D, 1/√D), which shrinks the trunk's features by about √3;
    # "orthogonal": an isometry; "identity" (d equal to the trunk width): the trunk's own channels
    # (fact_fast.nn.projection_1x1).
    projection_init: str = "default"
    projection_lr_scale: float = 1.0  # learning-rate multiplier of the 1×1 projection
    # The point loss is ZLPR on a logit f the paper does not define. "log": f = λ·log(μ/δ) =
    # λ(−‖ê − ŝ‖²/τ − log δ), unbounded below, so the prior of a rare class can be fitted; "scaled":
    # f = λ(μ − δ), bounded in [−λδ, λ(1 − δ)]. Both are 0 where μ = δ, the decision threshold.
    point_logit: str = "log"
    logit_scale: float = 10.0      # λ
    threshold: float = 0.5         # δ
    logit_bias: bool = False       # a learned per-class bias b_c (from the class prior) added to f
    # "l2": E and S on the unit sphere before the membership, so ‖e − s‖² ≤ 4; "none" is the literal
    # formula, whose embeddings' scale runs away with the bounded logit.
    embedding_norm: str = "l2"
    init_tau: float | None = None  # None: from the first batch, median μ = 1/2 (see FuzzyMembership)
    tau_lr_scale: float = 1.0      # learning-rate multiplier of log τ
    # Sentence embeddings share one direction (mean pairwise cosine 0.73 for the shipped MiniLM
    # vectors) and the GCN's Â² is low-pass: as shipped, the anchors start at cosine 0.95 and move
    # together. "center" removes the common direction of S⁰, center_anchors that of the GCN's output,
    # and anchor_residual adds a free vector per class that the graph does not smooth.
    label_embedding_transform: str = "center"
    center_anchors: bool = True
    anchor_residual: bool = True
    # Queries at std 0.02 make the interface a shared mean pool (gates 0.500 ± 0.002, every class
    # the same E_c); at std 1 the gates start selective.
    query_init_std: float = 1.0
    interface_bias: str = "zero"
    vq_data_init: bool = True
    vq_restart_every: int = 0      # re-seed dead codes every N training steps (0: never)
    codebook_lr_scale: float = 1.0  # learning-rate multiplier of the codebook
    # Regularisation of the head, which fits the bundled benchmark's 3000 training images faster than
    # validation improves: token_dropout drops whole visual positions of V in training (rescaled by
    # 1/(1 − p), so the interface's sum over positions keeps its expectation); head_lr_scale
    # multiplies the learning rate of everything after the trunk.
    token_dropout: float = 0.0
    # Isotropic Gaussian noise on V in training, of variance token_noise × the batch's mean squared
    # coordinate of V, so ‖noise‖²/‖V‖² ≈ token_noise. It measures what perturbing the tokens by the
    # quantiser's relative error (0.18–0.22 at K = 1024 on the bundled benchmark) costs without the VQ.
    token_noise: float = 0.0
    head_lr_scale: float = 1.0

    def __post_init__(self):
        if self.membership not in KERNELS:
            raise ValueError(f"membership must be one of {KERNELS}, got {self.membership!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.interface_bias not in BIASES:
            raise ValueError(f"interface_bias must be one of {BIASES}, got {self.interface_bias!r}")
        if self.embedding_norm not in EMBEDDING_NORMS:
            raise ValueError(f"embedding_norm must be one of {EMBEDDING_NORMS}, got {self.embedding_norm!r}")
        if self.projection_init not in PROJECTION_INITS:
            raise ValueError(f"projection_init must be one of {PROJECTION_INITS}, got {self.projection_init!r}")
        if self.point_logit not in LOGITS:
            raise ValueError(f"point_logit must be one of {LOGITS}, got {self.point_logit!r}")
        if self.label_embedding_transform not in LABEL_EMBEDDING_TRANSFORMS:
            raise ValueError(f"label_embedding_transform must be one of {LABEL_EMBEDDING_TRANSFORMS}, "
                             f"got {self.label_embedding_transform!r}")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"token_dropout must be in [0, 1), got {self.token_dropout}")
        if not self.token_noise >= 0:
            raise ValueError(f"token_noise must be >= 0, got {self.token_noise}")
        for name in ("head_lr_scale", "projection_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.query_init_std > 0:
            raise ValueError(f"query_init_std must be > 0, got {self.query_init_std}")
        for name in ("dim", "codebook_size", "gcn_hidden"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FACTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"FACTConfig has no option(s) {sorted(unknown)}; its options: {sorted(known)}")
        return cls(**d)


def _prior_logits(prevalence: torch.Tensor) -> torch.Tensor:
    """log(p / (1 − p)) of the train prevalence ``[C]`` (float32; 0 where unknown), clamped to
    prevalences in [1e-4, 1 − 1e-4]: a logit that starts at the class prior."""
    p = torch.nan_to_num(prevalence.double(), nan=0.5).clamp(1e-4, 1 - 1e-4)
    return (p / (1 - p)).log().float()


def _mean_pairwise_cos(x: torch.Tensor) -> float:
    """Mean cosine between two different rows of ``x [C, d]``."""
    n = F.normalize(x.float(), dim=-1)
    c = n.shape[0]
    if c < 2:
        return 1.0
    g = n @ n.T
    return float((g.sum() - g.diagonal().sum()) / (c * (c - 1)))


#: The open choices as the project first read the paper: the literal kernel on unnormalised
#: embeddings, the bounded logit λ(μ − δ), S⁰ and the GCN's output as they are, queries at std 0.02,
#: a 10× codebook learning rate, the projection at PyTorch's initialisation trained at the full rate.
#: One switch away as ``fact_tiny_paper`` and ``fact_resnet50_paper``.
PAPER_CHOICES = {"point_logit": "scaled", "embedding_norm": "none", "label_embedding_transform": "none",
                 "center_anchors": False, "anchor_residual": False, "query_init_std": 0.02,
                 "codebook_lr_scale": 10.0, "projection_init": "default", "projection_lr_scale": 1.0}


class FACT(MultiLabelModel):
    """backbone → 1×1 projection → VQ → semantic interface → fuzzy membership vs. GCN anchors.

    Built from a :class:`FACTConfig` and a :class:`~fact_fast.models.TaskInfo`, whose
    ``label_embeddings`` (S⁰ ``[C, D]``) and ``graph`` (the label graph in CSR) the GCN needs.

    ``forward(images [B, 3, H, W])`` returns ``ModelOutput(scores=μ [B, C], logits=None,
    extras)`` with extras ``embeddings`` E ``[B, C, d]``, ``anchors`` S ``[C, d]``, ``tau``
    (scalar), ``commit_loss`` (scalar; 0 without VQ), ``codes`` ``[B, M]`` int64 (None without VQ),
    ``feature_hw`` (h, w) of the feature map, ``kernel`` (str).
    """

    config_class = FACTConfig

    def __init__(self, config: FACTConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        C = self.num_classes
        self.backbone = Backbone(c.backbone, pretrained=c.pretrained, out_index=c.out_index,
                                 pretrained_file=c.pretrained_file)
        self.proj = projection_1x1(self.backbone.out_channels, c.dim, c.projection_init)
        self.vq = VectorQuantizer(c.codebook_size, c.dim, beta=c.beta, data_init=c.vq_data_init,
                                  restart_every=c.vq_restart_every) if c.use_vq else None
        self.interface = SemanticInterface(C, c.dim, bias=c.interface_bias, init_std=c.query_init_std)
        if c.use_gcn:
            if task.label_embeddings is None or task.graph is None:
                raise ValueError("use_gcn=True needs task.label_embeddings [C, D] and task.graph (the label graph)")
            g = task.graph
            s0 = transform_label_embeddings(task.label_embeddings, c.label_embedding_transform)
            self.gcn = LabelGCN(s0, g["rowptr"], g["col"], hidden_dim=c.gcn_hidden,
                                out_dim=c.dim, value=g.get("value"), negative_slope=c.gcn_negative_slope,
                                add_self_loops=g.get("add_self_loops", True))
            self.free_anchors = nn.Parameter(torch.randn(C, c.dim) * 0.02) if c.anchor_residual else None
        else:
            self.gcn = None
            self.free_anchors = nn.Parameter(torch.randn(C, c.dim) * 0.02)
        self.membership = FuzzyMembership(c.membership, init_tau=c.init_tau)
        self.logit_bias = nn.Parameter(_prior_logits(task.prevalence)) if c.logit_bias else None
        self.criterion = FACTLoss(c.loss, alpha=c.alpha, gamma=c.gamma, logit_scale=c.logit_scale,
                                  threshold=c.threshold, smooth=c.smooth, logit=c.point_logit)

    @property
    def default_threshold(self) -> float:
        return float(self.config.threshold)

    # -- pieces -------------------------------------------------------------------------------
    def anchors(self) -> torch.Tensor:
        """Semantic anchors S [C, d]."""
        if self.gcn is None:
            return self.free_anchors
        with stage("gcn"):
            s = self.gcn()
        if self.config.center_anchors:
            s = s - s.mean(0, keepdim=True)
        return s if self.free_anchors is None else s + self.free_anchors

    @property
    def tau(self) -> torch.Tensor:
        return self.membership.tau

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Projected visual tokens Z ``[B, M, d]`` and the feature map's (h, w)."""
        with stage("backbone"):
            feat = self.backbone(images)
        with stage("projection"):
            z = self.proj(feat)
        return z.flatten(2).transpose(1, 2), (int(z.shape[-2]), int(z.shape[-1]))

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        z, hw = self.features(images)
        if self.vq is not None:
            with stage("vq"):
                v, codes, commit = self.vq(z)
        else:
            v, codes, commit = z, None, z.new_zeros(())
        if self.training and self.config.token_noise > 0:
            v = v + torch.randn_like(v) * (self.config.token_noise * v.detach().pow(2).mean()).sqrt()
        if self.config.token_dropout > 0:
            # v [B, M, d] read as (N, C, L): dropout1d zeroes whole positions and rescales the rest
            v = F.dropout1d(v, self.config.token_dropout, self.training)
        s = self.anchors()
        with stage("interface"):
            e = self.interface(v)
        if self.config.embedding_norm == "l2":
            # ‖e − s‖² ∈ [0, 4]: the kernel cannot be saturated by the embeddings' scale alone
            e, s = F.normalize(e, dim=-1), F.normalize(s, dim=-1)
        with stage("membership"):
            mu = self.membership(e, s)
        return ModelOutput(mu, None, {"embeddings": e, "anchors": s, "tau": self.membership.tau,
                                      "commit_loss": commit, "codes": codes, "feature_hw": hw,
                                      "kernel": self.config.membership, "logit_bias": self.logit_bias})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        return self.criterion(output, targets, mask)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor) -> None:
        """Run the data-dependent initialisations (VQ codebook, τ) on one batch now instead of
        lazily in the first training forward (keeps the training graph static for DDP and
        torch.compile). A no-op for parts already initialised; BatchNorm statistics are left
        untouched (this pass is not a training step)."""
        was_training = self.training
        self.train()
        with bn_stats_preserved(self):
            self(images)
        if self.vq is not None:
            self.vq.reset_stats()
        self.train(was_training)

    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters()
                if n.endswith(("codebook", "log_tau", "queries", "free_anchors"))}

    def lr_scales(self) -> dict:
        """``head_lr_scale`` on every parameter outside the trunk, times ``projection_lr_scale``
        on the projection."""
        c = self.config
        scales = {}
        if c.head_lr_scale != 1.0:
            params = dict(self.named_parameters())
            tops = {n.split(".")[0] for n in params} - {"backbone"}
            scales = {top if top in params else f"{top}.": c.head_lr_scale for top in tops}
        if c.projection_lr_scale != 1.0:
            scales["proj."] = c.head_lr_scale * c.projection_lr_scale
        return scales

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list:
        """The base groups, with the codebook and log τ in groups of their own learning rate."""
        special = {"vq.codebook": ("codebook", self.config.codebook_lr_scale),
                   "membership.log_tau": ("tau", self.config.tau_lr_scale)}
        named = dict(self.named_parameters())
        groups = []
        for g in super().param_groups(lr, weight_decay, backbone_lr_scale):
            ids = {id(named[n]) for n in special if n in named}
            g["params"] = [p for p in g["params"] if id(p) not in ids]
            if g["params"]:
                groups.append(g)
        for pname, (gname, scale) in special.items():
            p = named.get(pname)
            if p is not None and p.requires_grad:
                groups.append({"params": [p], "lr": lr * scale * self.lr_scale_of(pname), "weight_decay": 0.0,
                               "name": gname})
        return groups

    def epoch_stats(self, reset: bool = True) -> dict:
        out = {"tau": float(self.tau.detach())}
        if self.vq is not None:
            cb = self.vq.codebook_stats(reset=reset)
            out.update({"codebook_perplexity": cb["perplexity"], "codebook_usage": cb["usage"]})
        return out

    @torch.no_grad()
    def diagnostics(self, images: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor) -> dict:
        """How the head is doing (logged per epoch; docs/fact_head.md reads them):

        * ``anchor_cos``: mean pairwise cosine of the anchors S (near 1: the classes share one anchor);
        * ``class_embedding_cos``: mean cosine between two classes' E_c in the same image (near 1:
          the interface gives every class the same feature, a shared mean pool);
        * ``gate_std``: std of the interface gates σ(QVᵀ/√d + b) over ``images`` (near 0: no
          class selects its own positions); ``query_ratio``: mean ‖Q_c‖ / mean ‖σ(·)V‖_c;
        * ``logit_pos_p10/p50/p90``, ``logit_neg_p10/p50/p90``: percentiles of the point loss's
          logit f over the validation positives and negatives (``scores`` = μ, ``targets``).
        """
        z, _ = self.features(images)
        v = self.vq(z)[0] if self.vq is not None else z
        q = self.interface.queries.to(v.dtype)
        gates = torch.sigmoid(q @ v.transpose(1, 2) / math.sqrt(v.shape[-1])
                              + self.interface.attention_bias(v.shape[1]))
        attended = gates @ v                                                      # [n, C, d]
        out = {"anchor_cos": _mean_pairwise_cos(self.anchors()),
               "class_embedding_cos": sum(_mean_pairwise_cos(e) for e in q + attended) / len(images)
               if len(images) else None,
               "gate_std": float(gates.std()) if gates.numel() > 1 else None,
               "query_ratio": float(q.norm(dim=-1).mean() / attended.norm(dim=-1).mean().clamp_min(1e-12))
               if len(images) else None}
        f = self.criterion.logits(ModelOutput(scores.float(), None, {}))
        if self.logit_bias is not None:
            f = f + self.logit_bias.detach().float().to(f.device)
        known = ~torch.isnan(targets)
        for name, sel in (("pos", known & (targets > 0.5)), ("neg", known & (targets < 0.5))):
            vals = f[sel]
            for p in (10, 50, 90):
                out[f"logit_{name}_p{p}"] = float(torch.quantile(vals, p / 100)) if vals.numel() else None
        return out

    def training_state(self) -> dict:
        return {} if self.vq is None else {"vq_restart": self.vq.restart_state()}

    def load_training_state(self, state: dict) -> None:
        if self.vq is not None and "vq_restart" in state:
            self.vq.load_restart_state(state["vq_restart"])

    @torch.no_grad()
    def evidence_maps(self, images: torch.Tensor) -> dict:
        """The semantic interface's attention σ(Q Vᵀ/√d + b) per class over the M feature
        positions: ``maps`` float ``[B, C, h, w]`` in [0, 1]; ``codes`` int64 ``[B, h, w]`` (the
        codebook atom at each position; None without VQ) -- which atoms carried a class's
        evidence is the attention mass per atom."""
        z, (h, w) = self.features(images)
        if self.vq is not None:
            codes, _ = ops.vq_nearest(z.reshape(-1, z.shape[-1]).to(self.vq.codebook.dtype), self.vq.codebook)
            v = self.vq.codebook[codes].reshape(z.shape)
            codes = codes.reshape(z.shape[0], h, w)
        else:
            v, codes = z, None
        q = self.interface.queries.to(v.dtype)
        logits = q @ v.transpose(1, 2) / math.sqrt(v.shape[-1]) + self.interface.attention_bias(v.shape[1])
        maps = torch.sigmoid(logits).reshape(v.shape[0], self.num_classes, h, w)
        return {"maps": maps.float(), "codes": codes}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Boolean predictions μ > δ."""
        return self(images).scores > self.config.threshold


# The paper's model: ResNet-50 trunk, d = 512, K = 1024, GCN hidden 1024.
register_model("fact_resnet50", FACT, description="FACT with a ResNet-50 trunk (the paper's model)")
register_model("fact_resnet50_paper", FACT, description="fact_resnet50 with the paper read literally "
               "(PAPER_CHOICES: unnormalised kernel, bounded logit, raw S⁰, queries at std 0.02)", **PAPER_CHOICES)
# Small CPU-friendly model for the bundled synthetic benchmark (the default of `python -m
# fact_fast.train`): the small `fact_resnet_tiny` trunk (fact_fast.nn.trunks) up to its stride-16
# stage, so a 64 px image gives FACT 4 x 4 = 16 feature positions for its atoms and its interface
# attention; d = 128, the trunk's width (d = 64 lost 2 validation mAP, docs/fact_head.md). With d equal
# to that width the projection starts as the identity and trains 1000x slower, so the head reads the
# trunk's own channels: against the projection learned from PyTorch's initialisation it gained 1.4
# validation mAP over five seeds, and FACT's curves no longer fell after their peak
# (docs/fact_head.md). The trunk was chosen with the plain CNN + BCE baseline on validation
# (docs/benchmark.md).
_TINY = dict(backbone="fact_resnet_tiny", out_index=3, dim=128, codebook_size=1024, gcn_hidden=128,
             vq_restart_every=10, projection_init="identity", projection_lr_scale=0.001)
register_model("fact_tiny", FACT, description="FACT on the small fact_resnet_tiny trunk, stride 16 (CPU default)",
               **_TINY)
register_model("fact_tiny_paper", FACT, description="fact_tiny with the paper read literally (PAPER_CHOICES)",
               **{**_TINY, **PAPER_CHOICES})
# Tiny smoke-test model (timm's `test_resnet`, 96 channels, stride 32).
register_model("fact_test", FACT, description="FACT smoke-test size", backbone="test_resnet", dim=32,
               codebook_size=64, gcn_hidden=64)
