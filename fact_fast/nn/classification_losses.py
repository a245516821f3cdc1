"""Multi-label classification losses of the baselines (FACT's own objective is in ``losses.py``).

Every loss takes ``logits`` ``[B, C]`` (any float dtype; half precision is computed in float32),
``targets`` ``[B, C]`` 0/1 and an optional ``mask`` bool ``[B, C]``, True where the label is
known: unknown entries contribute nothing to the value or the gradient. ``reduction``:

* ``"mean"``: mean over the known entries (0 when none is known);
* ``"sum"``: sum over the known entries;
* ``"none"``: the per-entry loss ``[B, C]``, 0 at unknown entries.

:data:`CLASSIFICATION_LOSSES` maps a name to its function (``fn(logits, targets, mask=None,
reduction="mean", **hyper_parameters)``); a new loss is one function plus one entry there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .losses import masked_mean

__all__ = ["CLASSIFICATION_LOSSES", "REDUCTIONS", "NEGATIVE_WEIGHTINGS", "reduce_masked", "bce_loss",
           "asymmetric_loss", "weighted_asymmetric_loss", "focal_loss", "generalized_cross_entropy_loss",
           "multilabel_soft_margin_loss", "ride_diversity_loss", "jensen_shannon_diversity_loss",
           "prototype_contrastive_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _check(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float [B, C] tensor, got "
                         f"{getattr(logits, 'dtype', type(logits))} {list(getattr(logits, 'shape', []))}")
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape:
        raise ValueError(f"targets must have the shape of logits {list(logits.shape)}, got "
                         f"{list(getattr(targets, 'shape', [type(targets).__name__]))}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                             or mask.shape != logits.shape):
        raise ValueError(f"mask must be a bool tensor of shape {list(logits.shape)} (True = label known), got "
                         f"{getattr(mask, 'dtype', type(mask))} {list(getattr(mask, 'shape', []))}")


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision (autocast), else unchanged (float64 stays)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def reduce_masked(loss: torch.Tensor, mask: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """Reduce a per-entry loss ``[B, C]`` over the entries where ``mask`` is True (see module doc)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    # where(), not a product: an unknown entry's inf/NaN must not leak into the value
    kept = loss if mask is None else torch.where(mask, loss, torch.zeros_like(loss))
    if reduction == "mean":
        return masked_mean(kept, mask)
    if reduction == "sum":
        return kept.sum()
    return kept


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy with logits, ``−[y log σ(z) + (1−y) log(1−σ(z))]`` per entry."""
    _check(logits, targets, mask)
    z = _wide(logits)
    per = F.binary_cross_entropy_with_logits(z, targets.to(z.dtype), reduction="none")
    return reduce_masked(per, mask, reduction)


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                    reduction: str = "mean", gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                    detach_focusing: bool = True) -> torch.Tensor:
    """Asymmetric loss (ASL; Ridnik et al., ICCV'21).

    With p = σ(z) and the shifted negative probability p_m = max(p − m, 0) (m = ``clip``)::

        L+ = (1 − p)^γ+ · log(p)
        L− = p_m^γ− · log(1 − p_m)
        L  = −y·L+ − (1 − y)·L−

    Defaults γ− = 4, γ+ = 0, m = 0.05 are the paper's (Sec. 4, and the official training
    script). The paper sums L over classes and samples; ``reduction="sum"`` gives that,
    the default ``"mean"`` divides it by the number of known labels (see docs/baselines.md).
    ``detach_focusing``: the focusing weights (1 − p)^γ+ and p_m^γ− are constants in the
    backward, as the official code trains (``disable_torch_grad_focal_loss=True``); False
    differentiates through them too. ``log(1 − p_m) = log(min(σ(−z) + m, 1))`` and
    ``log p = log σ(z)`` are computed without the official code's 1e-8 clamp.
    """
    _check(logits, targets, mask)
    if not 0.0 <= clip < 1.0:
        raise ValueError(f"clip must be in [0, 1), got {clip}")
    if gamma_neg < 0 or gamma_pos < 0:
        raise ValueError(f"gamma_neg and gamma_pos must be >= 0, got {gamma_neg}, {gamma_pos}")
    z = _wide(logits)
    y = targets.to(z.dtype)
    p = torch.sigmoid(z)
    log_p = F.logsigmoid(z)
    if clip > 0:
        one_minus_pm = (torch.sigmoid(-z) + clip).clamp(max=1.0)  # 1 − max(p − m, 0)
        log_one_minus_pm = torch.log(one_minus_pm)
        p_m = 1.0 - one_minus_pm
    else:
        log_one_minus_pm = F.logsigmoid(-z)
        p_m = p
    w_pos, w_neg = (1.0 - p).pow(gamma_pos), p_m.pow(gamma_neg)
    if detach_focusing:
        w_pos, w_neg = w_pos.detach(), w_neg.detach()
    per = -(y * w_pos * log_p + (1.0 - y) * w_neg * log_one_minus_pm)
    return reduce_masked(per, mask, reduction)


def weighted_asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                             reduction: str = "mean", *, prevalence, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                             clip: float = 0.05, detach_focusing: bool = False) -> torch.Tensor:
    """CheXFusion's weighted asymmetric loss (CheXFusion, ICCV Workshops 2023): the ASL of :func:`asymmetric_loss` with a
    per-class weight on each side,

        L = −w⁺_c · y · L+  −  w⁻_c · (1 − y) · L−,       w⁺_c = exp(1 − p_c),   w⁻_c = exp(p_c)

    where ``prevalence`` p_c (float ``[C]`` in [0, 1]) is class c's fraction of positive training
    labels: rare classes weigh their positives up to e ≈ 2.72 and their negatives about 1, common
    ones the other way round. Defaults γ− = 4, γ+ = 1, m = 0.05 and ``detach_focusing=False`` (the
    focusing weights are differentiated) are CheXFusion's (poster and released ``ASLwithClassWeight``).
    """
    _check(logits, targets, mask)
    p = torch.as_tensor(prevalence, dtype=torch.float64)
    if p.shape != (logits.shape[1],) or not bool(torch.all((p >= 0) & (p <= 1))):
        raise ValueError(f"prevalence must be {logits.shape[1]} values in [0, 1] (one per class, no NaN), got "
                         f"{list(p.shape)} {p.tolist()[:8]}")
    per = asymmetric_loss(logits, targets, None, "none", gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip,
                          detach_focusing=detach_focusing)
    p = p.to(device=per.device, dtype=per.dtype)
    y = targets.to(per.dtype)
    weight = y * torch.exp(1.0 - p) + (1.0 - y) * torch.exp(p)
    return reduce_masked(weight * per, mask, reduction)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
               reduction: str = "mean", gamma: float = 2.0, alpha: float | None = 0.25) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., ICCV'17, Eq. 5): ``−α_t (1 − p_t)^γ log(p_t)`` with
    p_t = p for a positive, 1 − p for a negative, α_t = α for a positive, 1 − α for a negative.

    Defaults γ = 2, α = 0.25 are the paper's best pair (Table 1a/1b); ``alpha=None`` drops the
    α-balancing. The paper normalises the sum by the number of positive anchors (detection);
    here ``reduction`` applies (docs/baselines.md).
    """
    _check(logits, targets, mask)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
    z = _wide(logits)
    y = targets.to(z.dtype)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # −log p_t
    p = torch.sigmoid(z)
    p_t = y * p + (1.0 - y) * (1.0 - p)
    per = (1.0 - p_t).pow(gamma) * ce
    if alpha is not None:
        per = (y * alpha + (1.0 - y) * (1.0 - alpha)) * per
    return reduce_masked(per, mask, reduction)


def generalized_cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                                   reduction: str = "mean", q: float = 0.8) -> torch.Tensor:
    """Generalized cross-entropy (GCE; Zhang & Sabuncu, NeurIPS'18), per binary label: the
    probability given to the true value, p_t (p = σ(z) for a positive, 1 − p for a negative),
    enters as ``(1 − p_t^q) / q``:

        L = y · (1 − p^q) / q  +  (1 − y) · (1 − (1 − p)^q) / q,     q ∈ (0, 1]

    q → 0 gives binary cross-entropy, q = 1 the mean absolute error ``|y − p|``; in between, the
    gradient ``p_t^q`` times BCE's down-weights labels the model finds implausible. LDRNet
    ("Label Decoupling and Reconstruction", ACM MM 2024) uses it for its E-step (Eq. 16), with
    its q defined the other way round (exponent 1 − q, so that its q = 1 is BCE). ``p^q`` is computed as ``exp(q · log σ(z))``, so
    saturated logits keep finite values and gradients.
    """
    _check(logits, targets, mask)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q}")
    z = _wide(logits)
    y = targets.to(z.dtype)
    # 1 − p_t^q = −expm1(q log p_t): exact for p_t near 1, where 1 − exp(...) cancels
    per = -(y * torch.expm1(q * F.logsigmoid(z)) + (1.0 - y) * torch.expm1(q * F.logsigmoid(-z))) / q
    return reduce_masked(per, mask, reduction)


def multilabel_soft_margin_loss(logits: torch.Tensor, targets: torch.Tensor,
                                mask: torch.Tensor | None = None) -> torch.Tensor:
    """ML-GCN's objective, ``torch.nn.MultiLabelSoftMarginLoss``: per sample
    ``−(1/C) Σ_c [y_c log σ(z_c) + (1 − y_c) log σ(−z_c)]``, averaged over the batch.

    With a mask each sample averages over its own known labels (C becomes that sample's count),
    then samples with at least one known label are averaged, so every sample keeps the weight it
    has in the unmasked loss. Without a mask this equals ``bce_loss(..., reduction="mean")``.
    """
    _check(logits, targets, mask)
    z = _wide(logits)
    per = F.binary_cross_entropy_with_logits(z, targets.to(z.dtype), reduction="none")
    if mask is None:
        return per.mean() if per.numel() else per.sum()
    w = mask.to(per.dtype)
    known = w.sum(dim=1)
    per_sample = torch.where(mask, per, torch.zeros_like(per)).sum(dim=1) / known.clamp_min(1.0)
    return per_sample.sum() / (known > 0).sum().clamp_min(1).to(per.dtype)


def _check_experts(expert_logits: torch.Tensor, name: str) -> int:
    if not isinstance(expert_logits, torch.Tensor) or expert_logits.dim() != 3 or not expert_logits.is_floating_point():
        raise ValueError(f"expert_logits must be a float [n_experts, B, C] tensor, got "
                         f"{list(getattr(expert_logits, 'shape', [type(expert_logits).__name__]))}")
    if expert_logits.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 experts, got {expert_logits.shape[0]}")
    return expert_logits.shape[0]


def ride_diversity_loss(expert_logits: torch.Tensor) -> torch.Tensor:
    """RIDE-style expert diversity term (Wang et al., ICLR 2021; Eq. 3 of "Enhancing Multi-Label
    Long-Tailed Classification on Chest X-Rays through ML-GCN Augmentation", ICCV Workshops 2023)::

        L_div = −1/(n − 1) · Σ_i KL(p̄ ‖ p⁽ⁱ⁾),   p⁽ⁱ⁾ = softmax_c(z⁽ⁱ⁾),   p̄ = (1/n) Σ_i p⁽ⁱ⁾

    averaged over the batch. ``expert_logits`` float ``[n, B, C]`` (n >= 2 experts). p̄ is a
    constant in the backward (RIDE computes it under ``no_grad``), so each expert is pushed away
    from the ensemble, not the ensemble towards it. Minimising L_div *increases* the
    divergence, hence the minus sign. The term uses no labels: unknown labels do not matter.
    It has no lower bound: an expert whose distribution puts ~0 where p̄ does not makes it
    arbitrarily negative (see :func:`jensen_shannon_diversity_loss`).
    """
    n = _check_experts(expert_logits, "ride_diversity_loss")
    B = expert_logits.shape[1]
    log_p = F.log_softmax(_wide(expert_logits), dim=-1)
    with torch.no_grad():
        log_p_bar = torch.logsumexp(log_p, dim=0) - math.log(n)  # log of the mean, without log(0)
        p_bar = log_p_bar.exp()
    kl = (p_bar * (log_p_bar - log_p)).sum(dim=-1)  # [n, B]: KL(p̄ ‖ p⁽ⁱ⁾) per expert and sample
    return -kl.sum(dim=0).mean() / (n - 1) if B else kl.sum() * 0.0


def jensen_shannon_diversity_loss(expert_logits: torch.Tensor) -> torch.Tensor:
    """A bounded expert diversity term: the generalised Jensen–Shannon divergence of the experts'
    class distributions, negated, with the normalisation of RIDE's term::

        L_div = −1/(n − 1) · Σ_i KL(p⁽ⁱ⁾ ‖ p̄),   p⁽ⁱ⁾ = softmax_c(z⁽ⁱ⁾),   p̄ = (1/n) Σ_i p⁽ⁱ⁾

    averaged over the batch; ``expert_logits`` float ``[n, B, C]``. Since p⁽ⁱ⁾ ≤ n·p̄, every KL
    term lies in [0, log n], so ``−n log n / (n − 1) ≤ L_div ≤ 0``: minimising it still spreads
    the experts apart, but once they disagree as much as distributions can, the term stops
    growing and cannot outweigh the classification loss (RIDE's KL(p̄ ‖ p⁽ⁱ⁾) is unbounded). The
    gradient goes through p̄ as well (it is the divergence of the set of experts). No labels.
    """
    n = _check_experts(expert_logits, "jensen_shannon_diversity_loss")
    B = expert_logits.shape[1]
    log_p = F.log_softmax(_wide(expert_logits), dim=-1)
    log_p_bar = torch.logsumexp(log_p, dim=0) - math.log(n)
    kl = (log_p.exp() * (log_p - log_p_bar)).sum(dim=-1)  # [n, B]: KL(p⁽ⁱ⁾ ‖ p̄)
    return -kl.sum(dim=0).mean() / (n - 1) if B else kl.sum() * 0.0


NEGATIVE_WEIGHTINGS = ("similarity", "uniform")


def prototype_contrastive_loss(features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None,
                               prototypes: torch.Tensor, prototype_mask: torch.Tensor | None = None,
                               temperature: float = 0.1, negative_weighting: str = "similarity",
                               reduction: str = "mean", absent_prototypes: torch.Tensor | None = None,
                               absent_mask: torch.Tensor | None = None, class_negatives: bool = True) -> torch.Tensor:
    """Adaptive prototype contrastive loss (fact_fast's formulation of the APCL of "Learning from
    Prototypes", IEEE JBHI 2026; the abstract gives no equation, docs/baselines.md lists the
    choices).

    Every known positive label (i, c) is an anchor: its class-specific feature ``f_ic`` is pulled
    to its class prototype ``p_c`` and pushed from the other classes' prototypes. With cosine
    similarities ``s_k = cos(f_ic, p_k) / τ``::

        ℓ_ic = −s_c + log( e^{s_c} + Σ_{k≠c} w_ck e^{s_k} )

    ``negative_weighting="similarity"`` (the "adaptive" part) weights the negatives by how close
    their prototype is to the anchor's, ``w_ck = n_c · softmax_{k≠c}(cos(p_c, p_k) / τ)`` over the
    n_c valid negatives (mean weight 1; a constant in the backward), so look-alike pathologies
    repel hardest; ``"uniform"`` is the plain prototype InfoNCE (w = 1).

    ``absent_prototypes`` ``[C, d]`` (optional): a prototype of each class's *absence*
    ``a_c``; an anchor of class c then also has ``a_c`` as a negative (weight 1),
    ``ℓ_ic = −s_c + log(e^{s_c} + e^{cos(f_ic, a_c)/τ} + Σ_{k≠c} w_ck e^{s_k})``. Features of one
    class that share a decoder query differ only by what the image shows, so this negative is
    the one that query identity cannot separate. ``absent_mask`` bool ``[C]``: which exist yet.
    ``class_negatives=False`` drops the other classes' prototypes (needs absence prototypes):
    ``ℓ_ic = −s_c + log(e^{s_c} + e^{cos(f_ic, a_c)/τ})``.

    Args:
        features: float ``[B, C, d]``, one feature per image and class.
        targets: ``[B, C]`` 0/1; ``mask`` bool ``[B, C]`` (True = known) or None. Negative and
            unknown labels are not anchors.
        prototypes: float ``[C, d]``. ``prototype_mask`` bool ``[C]``: prototypes that exist yet
            (False: the class is neither an anchor nor a negative); None = all.
        reduction: ``"mean"`` over the anchors (0 when there is none), ``"sum"``, or ``"none"``
            (``[B, C]``, 0 off the anchors).
        absent_prototypes, absent_mask: see above (None: no absence prototypes).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or not features.is_floating_point():
        raise ValueError(f"features must be a float [B, C, d] tensor, got "
                         f"{list(getattr(features, 'shape', [type(features).__name__]))}")
    B, C, d = features.shape
    _check(features[..., 0], targets, mask)
    if not isinstance(prototypes, torch.Tensor) or prototypes.shape != (C, d):
        raise ValueError(f"prototypes must be [{C}, {d}], got {list(getattr(prototypes, 'shape', []))}")
    if prototype_mask is not None and (prototype_mask.dtype != torch.bool or prototype_mask.shape != (C,)):
        raise ValueError(f"prototype_mask must be bool [{C}], got {prototype_mask.dtype} {list(prototype_mask.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if negative_weighting not in NEGATIVE_WEIGHTINGS:
        raise ValueError(f"negative_weighting must be one of {NEGATIVE_WEIGHTINGS}, got {negative_weighting!r}")
    f = F.normalize(_wide(features), dim=-1)
    p = F.normalize(_wide(prototypes), dim=-1).to(f.dtype)
    s = torch.einsum("bcd,kd->bck", f, p) / temperature                      # [B, C (anchor class), C (prototype)]
    valid = torch.ones(C, dtype=torch.bool, device=f.device) if prototype_mask is None else prototype_mask.to(f.device)
    eye = torch.eye(C, dtype=torch.bool, device=f.device)
    negative = valid[None, :] & ~eye                                         # [C, C]: k is a negative of c
    with torch.no_grad():
        if negative_weighting == "similarity":
            sim = (p @ p.t() / temperature).masked_fill(~negative, float("-inf"))
            count = negative.sum(dim=1, keepdim=True).to(f.dtype)
            log_w = torch.log_softmax(sim, dim=1) + torch.log(count.clamp_min(1.0))
        else:
            log_w = torch.zeros(C, C, dtype=f.dtype, device=f.device)
        log_w = torch.where(eye, torch.zeros_like(log_w), log_w.masked_fill(~negative, float("-inf")))
    if not class_negatives:
        if absent_prototypes is None:
            raise ValueError("class_negatives=False leaves no negative: pass absent_prototypes")
        log_w = log_w.masked_fill(~eye, float("-inf"))
    positive = s.diagonal(dim1=1, dim2=2)                                    # [B, C]: s_c
    terms = s + log_w
    if absent_prototypes is not None:
        if not isinstance(absent_prototypes, torch.Tensor) or absent_prototypes.shape != (C, d):
            raise ValueError(f"absent_prototypes must be [{C}, {d}], got "
                             f"{list(getattr(absent_prototypes, 'shape', []))}")
        if absent_mask is not None and (absent_mask.dtype != torch.bool or absent_mask.shape != (C,)):
            raise ValueError(f"absent_mask must be bool [{C}], got {absent_mask.dtype} {list(absent_mask.shape)}")
        a = F.normalize(_wide(absent_prototypes), dim=-1).to(f.dtype)
        s_absent = torch.einsum("bcd,cd->bc", f, a) / temperature
        if absent_mask is not None:
            s_absent = s_absent.masked_fill(~absent_mask.to(f.device)[None, :], float("-inf"))
        terms = torch.cat([terms, s_absent.unsqueeze(-1)], dim=-1)
    per = torch.logsumexp(terms, dim=-1) - positive
    anchors = (targets > 0.5) & valid[None, :]
    if mask is not None:
        anchors = anchors & mask
    return reduce_masked(per, anchors, reduction)


# name -> loss; each takes (logits, targets, mask=None, reduction="mean", **hyper-parameters)
CLASSIFICATION_LOSSES = {
    "bce": bce_loss,
    "asl": asymmetric_loss,
    "weighted_asl": weighted_asymmetric_loss,
    "focal": focal_loss,
    "gce": generalized_cross_entropy_loss,
}
