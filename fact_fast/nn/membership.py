"""Fuzzy membership head μ = k(e, s; τ) with a learnable, log-parametrised τ (docs/design.md §2.6)."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from fact_fast import ops

__all__ = ["FuzzyMembership", "KERNELS"]

KERNELS = ("gaussian", "linear", "cosine", "laplacian", "polynomial")
_TAU_FREE = ("cosine", "polynomial")  # these kernels do not use τ


class FuzzyMembership(nn.Module):
    """``forward(e [B, C, d], s [C, d]) -> μ [B, C]`` via ``ops.fuzzy_membership``.

    τ = exp(log_tau) stays positive under any optimizer step. **Initialisation.** The scale of
    ‖e − s‖² depends on the backbone, d and the data and is unknown before the first batch; a
    fixed τ (e.g. 1) would put every μ at ~0 (τ ≪ ‖e−s‖²) or ~1 (τ ≫ ‖e−s‖²), where the loss,
    which works on λ(μ − δ), has vanishing gradient and every class is predicted the same way.
    So τ is initialised lazily from the first training batch so that the *median* membership is
    0.5 (the decision threshold δ, where the kernel is steepest in the useful range):

    * gaussian  exp(−‖e−s‖²/τ):  τ = median(‖e−s‖²) / ln 2   (the paper's kernel)
    * laplacian exp(−‖e−s‖/τ):   τ = median(‖e−s‖) / ln 2
    * linear    σ(⟨e,s⟩/τ):      τ = median(|⟨e,s⟩|)  (typical logits of magnitude 1)
    * cosine, polynomial: τ is unused and frozen.

    Pass ``init_tau`` to fix the initial τ instead. The ``tau_initialized`` flag is a buffer, so
    it is checkpointed and a resumed run keeps its learned τ; under torch.distributed the
    rank-0 value is broadcast.
    """

    def __init__(self, kernel: str = "gaussian", init_tau: float | None = None):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"membership kernel must be one of {KERNELS}, got {kernel!r}")
        if init_tau is not None and not init_tau > 0:
            raise ValueError(f"init_tau must be > 0, got {init_tau}")
        self.kernel = kernel
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau) if init_tau else 0.0),
                                    requires_grad=kernel not in _TAU_FREE)
        self.register_buffer("tau_initialized", torch.tensor(init_tau is not None or kernel in _TAU_FREE))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, tau={float(self.tau.detach()):.4g}"

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    @torch.no_grad()
    def init_tau_(self, e: torch.Tensor, s: torch.Tensor) -> float:
        """Set τ from a batch (see class docstring); returns the new τ."""
        e, s = e.detach().float(), s.detach().float()
        if e.numel() == 0:
            return float(self.tau.detach())
        if self.kernel == "gaussian":
            tau = (e - s).pow(2).sum(-1).median() / math.log(2.0)
        elif self.kernel == "laplacian":
            tau = (e - s).pow(2).sum(-1).sqrt().median() / math.log(2.0)
        elif self.kernel == "linear":
            tau = (e * s).sum(-1).abs().median()
        else:
            self.tau_initialized.fill_(True)
            return float(self.tau.detach())
        log_tau = tau.clamp_min(1e-6).log().to(self.log_tau.dtype)
        if dist.is_available() and dist.is_initialized():
            log_tau = log_tau.to(self.log_tau.device)
            dist.broadcast(log_tau, 0)
        self.log_tau.data.copy_(log_tau)
        self.tau_initialized.fill_(True)
        return float(self.tau.detach())

    def forward(self, e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.tau_initialized):
            self.init_tau_(e, s)
        if s.dtype != e.dtype:  # autocast
            s = s.to(e.dtype)
        return ops.fuzzy_membership(e, s, self.tau, kernel=self.kernel)
