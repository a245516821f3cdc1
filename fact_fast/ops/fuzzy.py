"""Fuzzy membership and FACT's point + set loss (SPEC §2.6–2.7, §3).

Front-end (validation + dispatch) and backend registrations of the fuzzy family.
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import register, resolve
from ._validate import (check_finite_number, check_positive, check_same_device, check_same_dtype, check_tensor,
                        is_compiling)

OP_MEMBERSHIP = "fuzzy_membership"
OP_LOSS = "fuzzy_loss"
KERNELS = ("gaussian", "linear", "cosine", "laplacian", "polynomial")
REDUCTIONS = ("mean", "sum", "none")


def _check_e_s_tau(e: torch.Tensor, s: torch.Tensor, tau) -> None:
    check_tensor("e", e, ndim=3)
    check_tensor("s", s, ndim=2)
    check_same_device(e=e, s=s)
    check_same_dtype(e=e, s=s)
    if tuple(s.shape) != tuple(e.shape[1:]):
        raise ValueError(f"s must have shape [C, d] = {tuple(e.shape[1:])} to match e {tuple(e.shape)}, "
                         f"got {tuple(s.shape)}")
    if isinstance(tau, torch.Tensor):
        check_tensor("tau", tau)
        if tau.numel() != 1:
            raise ValueError(f"tau must be a scalar (one element), got shape {tuple(tau.shape)}")
        check_same_device(e=e, tau=tau)
    elif isinstance(tau, (int, float)) and not isinstance(tau, bool):
        check_positive("tau", tau)
    else:
        raise TypeError(f"tau must be a float or a one-element tensor, got {type(tau).__name__}")


def fuzzy_membership(e: torch.Tensor, s: torch.Tensor, tau, kernel: str = "gaussian", *,
                     backend: str | None = None) -> torch.Tensor:
    """Membership μ of each sample's class embedding in its class anchor.

    Args:
        e: [B, C, d] class embeddings; s: [C, d] anchors (same dtype/device).
        tau: positive temperature, float or one-element tensor.
        kernel: one of ``KERNELS`` (see ``reference.fuzzy.fuzzy_membership`` for the formulas).
    Returns:
        μ [B, C] in e.dtype.
    """
    _check_e_s_tau(e, s, tau)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    tau = tau.reshape(()) if isinstance(tau, torch.Tensor) else tau
    _, fn = resolve(OP_MEMBERSHIP, backend, e.device, e, s, tau, kernel)
    return fn(e, s, tau, kernel)


def _check_labels(y: torch.Tensor, e: torch.Tensor) -> None:
    check_tensor("y", y, ndim=2, dtypes=None)
    check_same_device(e=e, y=y)
    if tuple(y.shape) != tuple(e.shape[:2]):
        raise ValueError(f"y must have shape [B, C] = {tuple(e.shape[:2])}, got {tuple(y.shape)}")
    if y.dtype.is_complex:
        raise TypeError(f"y must be a real (bool, integer or float) tensor, got {y.dtype}")
    if not is_compiling() and y.numel() > 0 and bool(((y != 0) & (y != 1)).any()):
        raise ValueError("y must be binary (every entry 0 or 1)")


def fuzzy_loss(e: torch.Tensor, s: torch.Tensor, y: torch.Tensor, tau, alpha: float = 1.0,
               logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0, reduction: str = "mean",
               *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian fuzzy membership fused with FACT's point + set loss.

    Args:
        e: [B, C, d]; s: [C, d]; y: [B, C] binary labels (bool/int/float); tau > 0.
        alpha: weight of the set (fuzzy Jaccard) loss; logit_scale λ and threshold δ form f = λ(μ − δ);
        smooth: ε of the Jaccard; reduction: "mean" (0 for an empty batch), "sum" or "none".
    Returns:
        ``(loss, mu)``: loss per ``reduction`` (float32, or float64 for float64 inputs), μ [B, C] in e.dtype.
    """
    _check_e_s_tau(e, s, tau)
    _check_labels(y, e)
    alpha = check_finite_number("alpha", alpha)
    logit_scale = check_finite_number("logit_scale", logit_scale)
    threshold = check_finite_number("threshold", threshold)
    smooth = check_finite_number("smooth", smooth)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    tau = tau.reshape(()) if isinstance(tau, torch.Tensor) else tau
    _, fn = resolve(OP_LOSS, backend, e.device, e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction)
    return fn(e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction)


register(OP_MEMBERSHIP, "reference")(reference.fuzzy_membership)
register(OP_LOSS, "reference")(reference.fuzzy_loss)
