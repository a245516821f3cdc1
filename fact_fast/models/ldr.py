"""LDRNet (Huang et al., "Label Decoupling and Reconstruction: A Two-Stage Training Framework for
Long-tailed Multi-label Medical Image Recognition", ACM MM 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fact_fast.nn import GroupWiseLinear, TransformerEncoderLayer, bce_loss, generalized_cross_entropy_loss

from .base import ModelOutput, MultiLabelModel, Stage, StageContext, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number, check_positive

__all__ = ["LDRConfig", "LDR", "COVARIANCES", "SAMPLE_NORMALISATIONS", "GCE_FORMS", "reverse_sampling_probabilities"]

COVARIANCES = ("diagonal", "full")
SAMPLE_NORMALISATIONS = ("per_class", "across_classes")
GCE_FORMS = ("paper", "reference")
DECOUPLE, RECONSTRUCT = "decouple", "reconstruct"


@dataclass
class LDRConfig(TrunkConfig):
    """Hyper-parameters; "paper" is "Label Decoupling and Reconstruction" (ACM MM 2024; no code was
    released).

    * ``sample_alpha`` = 0.9, ``sample_eps`` = 1e-9: α and ε of the reverse-sampling
      probabilities, Eq. 12 (Sec. 3.4, 4.3; Fig. 3a picks α = 0.9).
    * ``sample_normalisation``: what Eq. 12's weights ``(1/(F + ε))^α`` are normalised over.
      ``"per_class"`` (default): class c's two Gaussians, label 1 (F = its positives) against
      label 0 (F = its negatives), so p_c is a probability of class c's own binary draw (Eq. 13)
      that favours the rarer label; ``"across_classes"``: the C classes, as Eq. 12 prints it, so
      the p_c sum to 1 (about one virtual positive per sample: on the bundled benchmark common
      classes were drawn positive 1–1.6 % of the time, against 10–16 % in the data, and Hernia
      39 %, against 0.3 %).
    * ``gce_q`` = 0.8: q of the E-step's generalized cross-entropy, Eq. 16 (Sec. 4.3; Fig. 3b).
    * ``gce_form``: ``"paper"`` (default): q as Sec. 3.4 defines it, "when q is set to 1, the loss
      function becomes the traditional BCE Loss": Zhang & Sabuncu's GCE with exponent 1 − q (q =
      0.8 is close to BCE); ``"reference"``: exponent q, the convention of the GCE paper it cites
      (q = 0.8 is close to the mean absolute error, which gives confidently wrong labels almost
      no gradient).
    * ``m_step_real`` = True: the M-step also fits the classifier on the step's real class
      features (detached, with their labels) besides the virtual ones, as the virtual-feature
      compensation of the paper's reference [36] (Pan et al., MICCAI 2023) trains its classifier
      on real plus virtual features; False: virtual features only, so the classifier never sees
      the real features the encoder produces in stage 2.
    * ``use_prompt`` = True: the label-text prompt tokens of Eq. 2 (Table 4's "Prompt" row);
      False drops them (Table 4's ablation).
    * ``encoder_layers`` = 1, ``heads`` = 8, ``ff_dim`` = 2048, ``dropout`` = 0.1: the paper says "a
      standard Transformer encoder, which contains a self-attention module and a feed-forward
      network" (Sec. 3.3), one of each; heads, width and dropout are PyTorch's
      ``nn.TransformerEncoderLayer`` defaults (post-norm, ReLU). The encoder works at the
      backbone's width D, as Eq. 2–5 do (Q ∈ R^{(M+C)×D}).
    * ``covariance`` = ``"diagonal"``: each class's label-0 / label-1 Gaussian with independent
      dimensions (the per-dimension density of Eq. 11); ``"full"`` uses Eq. 10's D × D covariance
      (2·C·D² numbers: 1.3 GB for C = 40, D = 2048).
    * ``virtual_batch``: virtual feature sets drawn per training step of stage 2 (None: as many
      as the step has images).

    * ``transformer_lr_scale`` = 0.1: learning-rate multiplier of the query embedding (prompt MLP,
      label queries, indicators, positions) and the Transformer encoder; ``reconstruct_lr_scale``
      = 0.1: multiplier of the whole second stage, which fine-tunes a trained model (the paper
      gives one rate, Adam 1e-4, for its training; [36] fine-tunes at rates 10³–10⁴ below its
      first stage's). Both bridge the engine's CNN rate (2e-3) to what attention layers and a
      fine-tuning stage take; ``configs/ldr.yaml`` (lr 1e-4) sets both to 1.

    Adam, lr 1e-4, betas (0.9, 0.999), weight decay 1e-5 and batch 32 (Sec. 4.3) are engine
    flags (``configs/ldr.yaml``).
    """

    encoder_layers: int = 1
    heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1
    use_prompt: bool = True
    sample_alpha: float = 0.9
    sample_eps: float = 1e-9
    sample_normalisation: str = "per_class"
    gce_q: float = 0.8
    gce_form: str = "paper"
    m_step_real: bool = True
    covariance: str = "diagonal"
    virtual_batch: int | None = None
    transformer_lr_scale: float = 0.1
    reconstruct_lr_scale: float = 0.1

    def __post_init__(self):
        check_positive(self, "encoder_layers", "heads", "ff_dim", integer=True)
        check_number(self, "dropout", low=0.0, high=1.0, high_open=True)
        check_number(self, "sample_alpha", low=0.0)
        check_positive(self, "sample_eps")
        check_number(self, "gce_q", low=0.0, high=1.0, low_open=True)
        check_number(self, "virtual_batch", low=1, integer=True, allow_none=True)
        check_positive(self, "transformer_lr_scale", "reconstruct_lr_scale")
        for name in ("use_prompt", "m_step_real"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LDRConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.sample_normalisation not in SAMPLE_NORMALISATIONS:
            raise ValueError(f"sample_normalisation must be one of {SAMPLE_NORMALISATIONS}, "
                             f"got {self.sample_normalisation!r}")
        if self.gce_form not in GCE_FORMS:
            raise ValueError(f"gce_form must be one of {GCE_FORMS}, got {self.gce_form!r}")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {self.covariance!r}")


def reverse_sampling_probabilities(positives: torch.Tensor, negatives: torch.Tensor, alpha: float,
                                   eps: float, normalisation: str = "per_class") -> torch.Tensor:
    """Eq. 12's reverse-sampling probabilities ``p_c`` float32 ``[C]``: the probability of drawing
    class c's virtual feature from its label-1 Gaussian, from the weights ``w = (1/(F + ε))^α``.

    * ``"per_class"``: ``p_c = w(F¹_c) / (w(F¹_c) + w(F⁰_c))`` with F¹_c / F⁰_c class c's numbers
      of positive / negative training labels -- the reverse sampler over class c's two labels
      (α = 0: 1/2; α = 1: the rarer label as often as the other label occurs).
    * ``"across_classes"``: ``p_c = w(F¹_c) / Σ_j w(F¹_j)``, Eq. 12 as printed.

    Classes without a positive have no label-1 Gaussian: p_c = 0 (and are left out of the
    across-classes normalisation: with ε = 1e-9 they would otherwise take all the mass); classes
    without a negative have no label-0 Gaussian: p_c = 1. ``positives``/``negatives``: counts ``[C]``.
    """
    if normalisation not in SAMPLE_NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {SAMPLE_NORMALISATIONS}, got {normalisation!r}")
    f1, f0 = positives.double(), negatives.double()
    w1 = torch.where(f1 > 0, (1.0 / (f1 + eps)) ** alpha, torch.zeros_like(f1))
    if normalisation == "per_class":
        w0 = torch.where(f0 > 0, (1.0 / (f0 + eps)) ** alpha, torch.zeros_like(f0))
        p = w1 / (w1 + w0).clamp_min(torch.finfo(torch.float64).tiny)
    else:
        p = w1 / w1.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where((f0 > 0) | (f1 == 0), p, torch.ones_like(p)).float()


def _single_images(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [n, 3, H, W], targets [n, C])`` of a collated batch; multi-view items give one
    row per valid view with its item's target."""
    if len(batch) == 3:
        images, targets, view_mask = batch
        B, V = view_mask.shape
        return images[view_mask], targets.unsqueeze(1).expand(B, V, targets.shape[-1])[view_mask]
    return batch


class LDR(MultiLabelModel):
    """Stage ``decouple`` (Sec. 3.3): backbone map ``X [B, D, h, w]`` → tokens ``X_f [B, hw, D]``;
    query embedding ``Q = [MLP(W) + P_word : L + P_label] + P_position`` (Eq. 2) with W the C
    label-text embeddings (``TaskInfo.label_embeddings``, M = C prompt tokens), L the learnable
    label queries ``[C, D]``; a Transformer encoder over ``[Q : X_f]`` (Eq. 4); the outputs at L's
    positions are the class-aware features ``X_class [B, C, D]`` (Eq. 5); a group-wise linear
    classifier ``z_c = ⟨w_c, x_c⟩ + b_c`` (Eq. 6); BCE (Eq. 7).

    Stage ``reconstruct`` (Sec. 3.4): :meth:`begin_stage` estimates, from the stage-1 model over
    the training set, a Gaussian of class c's feature for label 0 and for label 1 (Eq. 9–11) and
    the reverse-sampling probabilities (Eq. 12), kept as buffers. Each training step then does
    one EM step: M-step, the classifier on virtual feature sets (class c drawn from its label-1
    Gaussian with probability p_c, else from its label-0 one; Eq. 13–15) -- and, with
    ``m_step_real``, on the step's real class features, detached -- with BCE; E-step, the
    encoder and backbone on the real images with GCE (Eq. 16) through the classifier held fixed.

    ``forward(images [B, 3, H, W]) -> ModelOutput(scores [B, C], logits [B, C],
    extras={"class_features": [B, C, D]})``; in stage-2 training also ``"virtual_logits"`` and
    ``"virtual_targets"`` ``[V, C]`` and, with ``m_step_real``, ``"real_m_logits"`` ``[B, C]``
    (the classifier on the detached real features). Loss: ``{"total", "bce"}`` in stage 1,
    ``{"total", "m_step_bce", "e_step_gce"}`` in stage 2.
    """

    config_class = LDRConfig

    def __init__(self, config: LDRConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        C = self.num_classes
        self.backbone = build_backbone(c)
        D = self.backbone.out_channels
        if D % c.heads:
            raise ValueError(f"heads ({c.heads}) must divide the feature width {D} of backbone {c.backbone!r}")
        self.num_prompts = 0
        if c.use_prompt:
            if task.label_embeddings is None:
                raise ValueError("ldr with use_prompt=True needs task.label_embeddings [C, E] (the label-text "
                                 "prompts); pass --model-kwargs use_prompt=false to run without them")
            self.register_buffer("label_text", task.label_embeddings.float().clone())
            E = self.label_text.shape[1]
            self.prompt_mlp = nn.Sequential(nn.Linear(E, D), nn.ReLU(), nn.Linear(D, D))
            self.word_indicator = nn.Parameter(torch.zeros(1, D))
            self.num_prompts = C
        self.label_queries = nn.Parameter(torch.randn(C, D))  # nn.Embedding's N(0, 1), as Query2Label
        self.label_indicator = nn.Parameter(torch.zeros(1, D))
        self.position = nn.Parameter(torch.zeros(self.num_prompts + C, D))
        for p in (self.label_indicator, self.position) + ((self.word_indicator,) if c.use_prompt else ()):
            nn.init.trunc_normal_(p, std=0.02)
        self.encoder = nn.ModuleList(TransformerEncoderLayer(D, c.heads, c.ff_dim, c.dropout)
                                     for _ in range(c.encoder_layers))
        self.classifier = GroupWiseLinear(C, D)
        # stage-2 state, in the state dict so that a resumed stage 2 samples from the same Gaussians
        self.register_buffer("gaussian_mean", torch.zeros(2, C, D))
        scale_shape = (2, C, D) if c.covariance == "diagonal" else (2, C, D, D)
        self.register_buffer("gaussian_scale", torch.zeros(scale_shape))  # std per dimension, or Σ^{1/2}
        self.register_buffer("gaussian_count", torch.zeros(2, C, dtype=torch.int64))
        self.register_buffer("sample_prob", torch.zeros(C))
        self.register_buffer("reconstructing", torch.zeros((), dtype=torch.bool))

    def lr_scales(self) -> dict:
        scale = self.config.transformer_lr_scale
        parts = ("label_queries", "label_indicator", "position", "encoder.")
        parts += ("prompt_mlp.", "word_indicator") if self.num_prompts else ()
        return {p: scale for p in parts}

    # -- stage 1 ---------------------------------------------------------------------------------
    def queries(self) -> torch.Tensor:
        """Q of Eq. 2, ``[M + C, D]``."""
        parts = []
        if self.num_prompts:
            parts.append(self.prompt_mlp(self.label_text) + self.word_indicator)
        parts.append(self.label_queries + self.label_indicator)
        return torch.cat(parts) + self.position

    def class_features(self, images: torch.Tensor) -> torch.Tensor:
        """``X_class [B, C, D]`` of Eq. 5."""
        if images.dim() != 4:
            raise ValueError(f"ldr: expected images [B, 3, H, W], got {tuple(images.shape)}")
        tokens = self.backbone(images).flatten(2).transpose(1, 2)
        q = self.queries().to(tokens.dtype)
        x = torch.cat((q.unsqueeze(0).expand(tokens.shape[0], -1, -1), tokens), dim=1)
        for layer in self.encoder:
            x = layer(x)
        return x[:, self.num_prompts:self.num_prompts + self.num_classes]

    # -- stage 2 ---------------------------------------------------------------------------------
    def stages(self) -> list:
        return [Stage(DECOUPLE, description="class-aware features (label queries + text prompts + Transformer "
                                            "encoder), BCE"),
                Stage(RECONSTRUCT, lr_scale=self.config.reconstruct_lr_scale,
                      description="per-class label-0/label-1 Gaussians from stage 1, reverse-sampled "
                                  "virtual features; EM: classifier BCE (M), encoder GCE (E)")]

    def begin_stage(self, stage: Stage, ctx: StageContext | None, resumed: bool = False) -> None:
        if stage.name == RECONSTRUCT and not resumed:
            if ctx is None:
                raise ValueError("ldr: stage 'reconstruct' estimates its Gaussians over the training set; "
                                 "begin_stage needs a StageContext with a train_loader")
            self.estimate_gaussians(ctx.train_loader, ctx.autocast)
            n0, n1 = self.gaussian_count
            ctx.log(f"ldr: label-0/label-1 Gaussians of {self.num_classes} classes from the training set "
                    f"(samples per class: label 1 {n1.min().item()}..{n1.max().item()}, label 0 "
                    f"{n0.min().item()}..{n0.max().item()}); reverse-sampling probabilities "
                    f"{self.sample_prob.min().item():.3g}..{self.sample_prob.max().item():.3g}")
        self.reconstructing.fill_(stage.name == RECONSTRUCT)

    @torch.no_grad()
    def estimate_gaussians(self, loader, autocast=None) -> None:
        """Eq. 9–10 over ``loader`` (batches of the training set): for each class c and label
        j ∈ {0, 1}, the mean and unbiased covariance of ``X_class[:, c]`` over the images whose
        label c is j (unknown labels are in neither), then Eq. 12's probabilities. Accumulated in
        float64. A Gaussian with one sample has zero spread; one with none is never sampled."""
        was_training = self.training
        self.eval()
        device = self.gaussian_mean.device
        C, D = self.gaussian_mean.shape[1:]
        full = self.config.covariance == "full"
        n = torch.zeros(2, C, dtype=torch.float64, device=device)
        s1 = torch.zeros(2, C, D, dtype=torch.float64, device=device)
        s2 = torch.zeros((2, C, D, D) if full else (2, C, D), dtype=torch.float64, device=device)
        for batch in loader:
            if batch is None:
                continue
            images, targets = _single_images(batch)
            if autocast is not None:
                with autocast():
                    f = self.class_features(images.to(device))
            else:
                f = self.class_features(images.to(device))
            f, targets = f.double(), targets.to(device)
            for j in (0, 1):
                sel = (targets == j).double()  # NaN (unknown) equals neither
                n[j] += sel.sum(0)
                s1[j] += torch.einsum("bc,bcd->cd", sel, f)
                s2[j] += torch.einsum("bc,bcd,bce->cde", sel, f, f) if full else torch.einsum("bc,bcd->cd", sel, f * f)
        mean = s1 / n.clamp_min(1.0)[..., None]
        denom = (n - 1.0).clamp_min(1.0)
        if full:
            cov = (s2 - n[..., None, None] * mean[..., :, None] * mean[..., None, :]) / denom[..., None, None]
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            evals, evecs = torch.linalg.eigh(cov)
            scale = evecs @ torch.diag_embed(evals.clamp_min(0.0).sqrt()) @ evecs.transpose(-1, -2)  # Σ^{1/2}
        else:
            scale = ((s2 - n[..., None] * mean * mean) / denom[..., None]).clamp_min(0.0).sqrt()
        self.gaussian_mean.copy_(mean)
        self.gaussian_scale.copy_(scale)
        self.gaussian_count.copy_(n.round().long())
        self.sample_prob.copy_(reverse_sampling_probabilities(n[1], n[0], self.config.sample_alpha,
                                                              self.config.sample_eps,
                                                              self.config.sample_normalisation))
        self.train(was_training)

    def sample_virtual(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 13–14: ``num`` virtual class-aware feature sets ``[num, C, D]`` and their labels
        ``[num, C]`` (1 where class c was drawn from its label-1 Gaussian, r_c ≤ p_c)."""
        mean, scale = self.gaussian_mean, self.gaussian_scale
        C, D = mean.shape[1:]
        label = torch.rand(num, C, device=mean.device) <= self.sample_prob
        z = torch.randn(num, C, D, device=mean.device)
        if scale.dim() == 3:
            x0, x1 = mean[0] + scale[0] * z, mean[1] + scale[1] * z
        else:
            x0 = mean[0] + torch.einsum("cij,ncj->nci", scale[0], z)
            x1 = mean[1] + torch.einsum("cij,ncj->nci", scale[1], z)
        return torch.where(label[..., None], x1, x0), label.float()

    # -- the protocol ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        features = self.class_features(images)
        extras = {"class_features": features}
        if self.training and bool(self.reconstructing):
            logits = self.classifier(features, frozen=True)  # E-step: the classifier is held fixed
            virtual, virtual_targets = self.sample_virtual(self.config.virtual_batch or images.shape[0])
            extras["virtual_logits"] = self.classifier(virtual.to(features.dtype))  # M-step
            extras["virtual_targets"] = virtual_targets
            if self.config.m_step_real:
                extras["real_m_logits"] = self.classifier(features.detach())
        else:
            logits = self.classifier(features)
        return ModelOutput(torch.sigmoid(logits), logits, extras)

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        if "virtual_logits" in output.extras:
            m_step = bce_loss(output.extras["virtual_logits"], output.extras["virtual_targets"])
            if "real_m_logits" in output.extras:
                m_step = m_step + bce_loss(output.extras["real_m_logits"], targets, mask)
            e_step = self.e_step_loss(output.logits, targets, mask)
            return {"total": m_step + e_step, "m_step_bce": m_step.detach(), "e_step_gce": e_step.detach()}
        value = bce_loss(output.logits, targets, mask)
        return {"total": value, "bce": value.detach()}


    def e_step_loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Eq. 16: generalized cross-entropy with exponent ``1 − gce_q`` (``gce_form="paper"``; BCE
        when it is 0) or ``gce_q`` (``"reference"``)."""
        c = self.config
        exponent = 1.0 - c.gce_q if c.gce_form == "paper" else c.gce_q
        if exponent <= 0.0:
            return bce_loss(logits, targets, mask)
        return generalized_cross_entropy_loss(logits, targets, mask, q=exponent)


register_model("ldr", LDR, description="LDRNet (ACM MM 2024): label decoupling with class queries and text prompts, "
                                       "then Gaussian reconstruction + EM fine-tuning (two stages)")
