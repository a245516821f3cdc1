"""Reference fuzzy membership and FACT's point + set loss (docs/design.md §2.6–2.7)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POLYNOMIAL_DEGREE = 3


def _sq_dist(e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (e - s).pow(2).sum(-1)


def fuzzy_membership(e: torch.Tensor, s: torch.Tensor, tau, kernel: str = "gaussian") -> torch.Tensor:
    """e [B, C, d], s [C, d], tau > 0 -> μ [B, C] in [0, 1].

    gaussian   exp(−‖e−s‖²/τ)            (FACT's choice)
    laplacian  exp(−‖e−s‖/τ)
    linear     σ(⟨e,s⟩/τ)                 (the linear kernel squashed into [0, 1])
    cosine     (1 + cos(e,s)) / 2
    polynomial ((1 + cos(e,s)) / 2)^3     (a degree-3 polynomial kernel on the cosine, in [0, 1])
    """
    if kernel == "gaussian":
        return torch.exp(-_sq_dist(e, s) / tau)
    if kernel == "laplacian":
        # The epsilon keeps the gradient of the norm finite when e == s.
        return torch.exp(-torch.sqrt(_sq_dist(e, s) + 1e-12) / tau)
    if kernel == "linear":
        return torch.sigmoid((e * s).sum(-1) / tau)
    cos = F.cosine_similarity(e, s.expand_as(e), dim=-1)
    if kernel == "cosine":
        return (1 + cos) / 2
    if kernel == "polynomial":
        return ((1 + cos) / 2) ** POLYNOMIAL_DEGREE
    raise ValueError(f"unknown kernel {kernel!r}")


LOGITS = ("scaled", "log")


def point_logit(mu: torch.Tensor, logit: str, logit_scale: float, threshold: float,
                log_mu: torch.Tensor | None = None) -> torch.Tensor:
    """The logit f [B, C] the point loss sees; f = 0 exactly where μ = δ in both forms.

    * ``"scaled"``: f = λ(μ − δ), bounded in [−λδ, λ(1 − δ)].
    * ``"log"``: f = λ·log(μ/δ); for the gaussian kernel log μ = −‖e − s‖²/τ, unbounded below, so
      negatives can be pushed as far as the data asks. ``log_mu`` (when given) is log μ computed
      without the exp, so an underflowed μ still has a finite logit and gradient.
    """
    if logit == "scaled":
        return logit_scale * (mu - threshold)
    if logit == "log":
        if log_mu is None:
            log_mu = torch.log(mu.clamp_min(torch.finfo(mu.dtype).tiny))
        return logit_scale * (log_mu - math.log(threshold))
    raise ValueError(f"logit must be one of {LOGITS}, got {logit!r}")


def point_set_loss(mu: torch.Tensor, y: torch.Tensor, alpha: float, logit_scale: float, threshold: float,
                   smooth: float, mask: torch.Tensor | None = None, logit: str = "scaled",
                   log_mu: torch.Tensor | None = None, logit_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample L_point + α·L_set from memberships μ [B, C] and binary labels y [B, C] -> [B].

    The point loss is ZLPR on the logit of :func:`point_logit`; the set loss is 1 − the fuzzy
    Jaccard of μ. ``mask`` (optional bool [B, C], True = label observed) drops the other entries from both
    point-loss sums and from the Jaccard numerator and denominator; their gradient is exactly 0
    and their label value is never read (it may be NaN). A row with no observed entry gives 0.
    """
    f = point_logit(mu, logit, logit_scale, threshold, log_mu)
    if logit_bias is not None:
        f = f + logit_bias.to(f.dtype)
    pos = y > 0.5
    neg = ~pos
    if mask is not None:
        pos, neg = pos & mask, neg & mask
    neg_inf = torch.full_like(f, float("-inf"))
    zero = torch.zeros_like(f[:, :1])
    # log(1 + Σ exp(x)) = logsumexp([0, x...]); excluded classes contribute exp(−inf) = 0.
    point_neg = torch.logsumexp(torch.cat([zero, torch.where(neg, f, neg_inf)], dim=1), dim=1)
    point_pos = torch.logsumexp(torch.cat([zero, torch.where(pos, -f, neg_inf)], dim=1), dim=1)
    if mask is None:
        yf = y.to(mu.dtype)
        jaccard = ((yf * mu).sum(1) + smooth) / ((yf + (1 - yf) * mu).sum(1) + smooth)
        return point_neg + point_pos + alpha * (1 - jaccard)
    # torch.where, not a product with the mask: an unobserved label may be NaN, and NaN·0 is NaN.
    yf = torch.where(mask, y.to(mu.dtype), torch.zeros_like(mu))
    mu_seen = torch.where(mask, mu, torch.zeros_like(mu))
    numerator = (yf * mu_seen).sum(1) + smooth
    denominator = (yf + (1 - yf) * mu_seen).sum(1) + smooth
    observed = mask.any(1)
    # rows with nothing observed: J = 1 exactly, also when smooth = 0 (no 0/0 in value or gradient)
    jaccard = torch.where(observed, numerator / torch.where(observed, denominator, torch.ones_like(denominator)),
                          torch.ones_like(numerator))
    return point_neg + point_pos + alpha * (1 - jaccard)


def reduce_loss(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """'mean' of an empty batch is 0 (not NaN) so a rank that gets no samples still steps."""
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    return total / max(per_sample.shape[0], 1)


def fuzzy_loss(e: torch.Tensor, s: torch.Tensor, y: torch.Tensor, tau, alpha: float = 1.0,
               logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0,
               reduction: str = "mean", mask: torch.Tensor | None = None,
               logit: str = "scaled") -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian membership + point/set loss. Returns (loss, μ [B, C]); loss per ``reduction``.

    ``mask``: optional bool [B, C], True where the label is observed (see :func:`point_set_loss`);
    'mean' still divides by B.
    """
    compute = torch.float64 if e.dtype == torch.float64 else torch.float32
    tau_c = tau.to(compute) if isinstance(tau, torch.Tensor) else tau
    log_mu = -_sq_dist(e.to(compute), s.to(compute)) / tau_c
    mu = torch.exp(log_mu)
    loss = reduce_loss(point_set_loss(mu, y, alpha, logit_scale, threshold, smooth, mask, logit, log_mu), reduction)
    return loss, mu.to(e.dtype)
