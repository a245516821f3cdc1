"""FACT objective: fuzzy point + set loss (or the BCE ablation) + γ·commitment (SPEC §2.7)."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from fact_fast import ops
from fact_fast.ops.reference.fuzzy import point_set_loss, reduce_loss

__all__ = ["FACTLoss", "fuzzy_loss_from_membership", "LOSSES"]

LOSSES = ("fuzzy", "bce")


def fuzzy_loss_from_membership(mu: torch.Tensor, y: torch.Tensor, alpha: float = 1.0,
                               logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0,
                               reduction: str = "mean") -> torch.Tensor:
    """L_point + α·L_set from precomputed memberships ``μ [B, C]`` (any kernel).

    For the gaussian kernel prefer ``ops.fuzzy_loss`` (fused membership + loss); this is the path
    for the other kernels, whose μ comes from ``ops.fuzzy_membership``.
    """
    per_sample = point_set_loss(mu.float(), y, alpha, logit_scale, threshold, smooth)
    return reduce_loss(per_sample, reduction)


class FACTLoss(nn.Module):
    """``forward(out, targets) -> {"total", "fuzzy"|"bce", "commit"}`` (scalar tensors).

    ``out`` is a :class:`fact_fast.models.FACTOutput` (or anything with ``mu``, ``embeddings``,
    ``anchors``, ``tau``, ``commit_loss`` and ``kernel``).

    * ``loss="fuzzy"``: L_fuzzy = mean_b(L_point + α·L_set). With the gaussian kernel this calls
      the fused ``ops.fuzzy_loss(e, s, y, τ)``; other kernels use μ from the model.
    * ``loss="bce"`` (ablation): BCE-with-logits on f = λ(μ − δ), mean over B·C.
    * total = main + γ·L_commit.
    """

    def __init__(self, loss: str = "fuzzy", alpha: float = 1.0, gamma: float = 1.0,
                 logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss, self.alpha, self.gamma = loss, float(alpha), float(gamma)
        self.logit_scale, self.threshold, self.smooth = float(logit_scale), float(threshold), float(smooth)

    def extra_repr(self) -> str:
        return (f"loss={self.loss}, alpha={self.alpha}, gamma={self.gamma}, "
                f"logit_scale={self.logit_scale}, threshold={self.threshold}")

    def forward(self, out, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        y = targets.to(out.mu.dtype) if targets.dtype != out.mu.dtype else targets
        if self.loss == "fuzzy":
            if getattr(out, "kernel", "gaussian") == "gaussian" and out.embeddings is not None:
                e, s = out.embeddings, out.anchors
                if s.dtype != e.dtype:  # autocast
                    s = s.to(e.dtype)
                main, _ = ops.fuzzy_loss(e, s, y, out.tau, alpha=self.alpha,
                                         logit_scale=self.logit_scale, threshold=self.threshold,
                                         smooth=self.smooth)
            else:
                main = fuzzy_loss_from_membership(out.mu, y, self.alpha, self.logit_scale,
                                                  self.threshold, self.smooth)
        else:
            logits = self.logit_scale * (out.mu.float() - self.threshold)
            main = F.binary_cross_entropy_with_logits(logits, y.float()) if logits.numel() else logits.sum()
        commit = out.commit_loss if out.commit_loss is not None else main.new_zeros(())
        total = main.float() + self.gamma * commit.float()
        return {"total": total, self.loss: main, "commit": commit}
