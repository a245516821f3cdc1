"""FACT objective: fuzzy point + set loss (or the BCE ablation) + γ·commitment (docs/design.md §2.7)."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from fact_fast import ops
from fact_fast.ops.reference.fuzzy import LOGITS, point_logit, point_set_loss, reduce_loss

__all__ = ["FACTLoss", "fuzzy_loss_from_membership", "masked_mean", "LOSSES"]

LOSSES = ("fuzzy", "bce")


def fuzzy_loss_from_membership(mu: torch.Tensor, y: torch.Tensor, alpha: float = 1.0,
                               logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0,
                               reduction: str = "mean", mask: torch.Tensor | None = None,
                               logit: str = "scaled") -> torch.Tensor:
    """L_point + α·L_set from precomputed memberships ``μ [B, C]`` (any kernel); ``mask`` bool
    ``[B, C]`` excludes unknown labels; ``logit`` is the point loss's logit
    (:func:`fact_fast.ops.reference.fuzzy.point_logit`).

    For the gaussian kernel prefer ``ops.fuzzy_loss`` (fused membership + loss); this is the path
    for the other kernels, whose μ comes from ``ops.fuzzy_membership``.
    """
    masked = {} if mask is None else {"mask": mask}
    per_sample = point_set_loss(mu.float(), y, alpha, logit_scale, threshold, smooth, logit=logit, **masked)
    return reduce_loss(per_sample, reduction)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True (all entries when ``mask`` is None);
    0 (with a gradient path) when nothing is selected."""
    if mask is None:
        return x.mean() if x.numel() else x.sum()
    w = mask.to(x.dtype)
    return (x * w).sum() / w.sum().clamp_min(1.0)


class FACTLoss(nn.Module):
    """``forward(output, targets, mask=None) -> {"total", "fuzzy"|"bce", "commit"}`` (scalars).

    ``output`` is FACT's ``ModelOutput``: ``scores`` = μ ``[B, C]`` and ``extras`` with
    ``embeddings``, ``anchors``, ``tau``, ``commit_loss`` and ``kernel``. ``mask`` bool ``[B, C]``
    is True where the label is known; unknown labels contribute nothing.

    * ``loss="fuzzy"``: L_fuzzy = mean_b(L_point + α·L_set). With the gaussian kernel this calls
      the fused ``ops.fuzzy_loss(e, s, y, τ)``; other kernels use μ from the model.
    * ``loss="bce"`` (ablation): BCE-with-logits on the same logit f, mean over the known B·C entries.
    * ``logit``: the logit f of the point loss (and of the BCE ablation), ``"scaled"`` f = λ(μ − δ)
      or ``"log"`` f = λ·log(μ/δ) (:func:`fact_fast.ops.reference.fuzzy.point_logit`).
    * total = main + γ·L_commit.
    """

    def __init__(self, loss: str = "fuzzy", alpha: float = 1.0, gamma: float = 1.0,
                 logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0, logit: str = "scaled"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if logit not in LOGITS:
            raise ValueError(f"logit must be one of {LOGITS}, got {logit!r}")
        self.loss, self.alpha, self.gamma, self.logit = loss, float(alpha), float(gamma), logit
        self.logit_scale, self.threshold, self.smooth = float(logit_scale), float(threshold), float(smooth)

    def extra_repr(self) -> str:
        return (f"loss={self.loss}, logit={self.logit}, alpha={self.alpha}, gamma={self.gamma}, "
                f"logit_scale={self.logit_scale}, threshold={self.threshold}")

    def logits(self, output) -> torch.Tensor:
        """The logit f ``[B, C]`` (float32) this loss sees for a FACT output."""
        return point_logit(output.scores.float(), self.logit, self.logit_scale, self.threshold)

    def forward(self, output, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, extras = output.scores, output.extras
        y = targets.to(mu.dtype) if targets.dtype != mu.dtype else targets
        masked = {} if mask is None else {"mask": mask}
        bias = extras.get("logit_bias")
        if self.loss == "fuzzy":
            e = extras.get("embeddings")
            if bias is not None:
                compute = torch.float64 if e.dtype == torch.float64 else torch.float32
                e, s = e.to(compute), extras["anchors"].to(compute)
                log_mu = -(e - s).pow(2).sum(-1) / extras["tau"].to(compute)
                per_sample = point_set_loss(mu.to(compute), y, self.alpha, self.logit_scale, self.threshold, self.smooth,
                                            logit=self.logit, log_mu=log_mu, logit_bias=bias, **masked)
                main = reduce_loss(per_sample, "mean")
            elif extras.get("kernel", "gaussian") == "gaussian" and e is not None:
                s = extras["anchors"]
                if s.dtype != e.dtype:  # autocast
                    s = s.to(e.dtype)
                main, _ = ops.fuzzy_loss(e, s, y, extras["tau"], alpha=self.alpha,
                                         logit_scale=self.logit_scale, threshold=self.threshold,
                                         smooth=self.smooth, logit=self.logit, **masked)
            else:
                main = fuzzy_loss_from_membership(mu, y, self.alpha, self.logit_scale,
                                                  self.threshold, self.smooth, logit=self.logit, **masked)
        else:
            logits = self.logits(output) + (0 if bias is None else bias.float())
            main = masked_mean(F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none"), mask)
        commit = extras.get("commit_loss")
        commit = main.new_zeros(()) if commit is None else commit
        total = main.float() + self.gamma * commit.float()
        return {"total": total, self.loss: main, "commit": commit}
