"""Fuzzy membership and FACT's point + set loss (docs/design.md §2.6–2.7, §3).

Front-end (validation + dispatch) and backend registrations of the fuzzy family.

Fused backends (``cpu``, ``cuda``: the compiled ops ``fact_fast::fuzzy_loss`` /
``fuzzy_membership`` / ``fuzzy_backward``; ``triton``: the same three as ``*_triton`` custom ops)
run one forward kernel and one backward kernel per call. The forward returns per-sample stats
(the two log-sum-exps and the Jaccard numerator/denominator, [B, 4]) that the backward uses to
rebuild the gradient without any [B, C] softmax buffer; μ and the distances are recomputed there.
Both point-loss logits are fused (the ops' last argument, ``logit``: "scaled" or "log").
Only the Gaussian membership kernel is fused; the others run in the reference. The kernels take no
label mask: a masked ``fuzzy_loss`` runs the reference.
"""
from __future__ import annotations

import torch

from fact_fast import _extension

from . import _support, reference
from ._backend import register, resolve
from ._validate import (check_finite_number, check_positive, check_same_device, check_same_dtype, check_tensor,
                        is_compiling)

OP_MEMBERSHIP = "fuzzy_membership"
OP_LOSS = "fuzzy_loss"
KERNELS = ("gaussian", "linear", "cosine", "laplacian", "polynomial")
REDUCTIONS = ("mean", "sum", "none")
LOGITS = ("scaled", "log")  # the point loss's logit (reference.fuzzy.point_logit)


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


def _check_mask(mask, y: torch.Tensor) -> None:
    check_tensor("mask", mask, ndim=2, dtypes=(torch.bool,))
    check_same_device(y=y, mask=mask)
    if tuple(mask.shape) != tuple(y.shape):
        raise ValueError(f"mask must have shape [B, C] = {tuple(y.shape)} like y, got {tuple(mask.shape)}")


def _check_labels(y: torch.Tensor, e: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Shape/dtype checks, and that every observed label is 0 or 1 — without a host sync off the CPU.

    bool labels are binary by type: nothing runs. Other dtypes cost a few elementwise ops: on CPU
    tensors a ValueError is raised at once; on a GPU the check is a device-side assertion
    (``torch._assert_async``), so a training step never waits for it; a bad label then fails the
    next synchronization with the message below (and, CUDA being CUDA, the context with it).
    Skipped while torch.compile traces.
    """
    check_tensor("y", y, ndim=2, dtypes=None)
    check_same_device(e=e, y=y)
    if tuple(y.shape) != tuple(e.shape[:2]):
        raise ValueError(f"y must have shape [B, C] = {tuple(e.shape[:2])}, got {tuple(y.shape)}")
    if y.dtype.is_complex:
        raise TypeError(f"y must be a real (bool, integer or float) tensor, got {y.dtype}")
    if mask is not None:
        _check_mask(mask, y)
    if y.dtype == torch.bool or is_compiling() or y.numel() == 0:
        return
    bad = (y != 0) & (y != 1)
    if mask is not None:
        bad = bad & mask
    if y.device.type == "cpu":
        if bool(bad.any()):
            raise ValueError(f"y must be binary (every {'observed ' if mask is not None else ''}entry 0 or 1)")
    else:
        torch._assert_async(~bad.any(), "fact_fast.ops.fuzzy_loss: y must be binary (every observed entry 0 or 1)")


def fuzzy_loss(e: torch.Tensor, s: torch.Tensor, y: torch.Tensor, tau, alpha: float = 1.0,
               logit_scale: float = 10.0, threshold: float = 0.5, smooth: float = 1.0, reduction: str = "mean",
               *, mask: torch.Tensor | None = None, logit: str = "scaled", backend: str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian fuzzy membership fused with FACT's point + set loss.

    Args:
        e: [B, C, d]; s: [C, d]; y: [B, C] binary labels (bool/int/float); tau > 0.
        alpha: weight of the set (fuzzy Jaccard) loss; logit_scale λ and threshold δ form the point
        loss's logit, f = λ(μ − δ) for ``logit="scaled"`` or f = λ·log(μ/δ) = λ(−‖e − s‖²/τ − log δ)
        for ``logit="log"`` (both are 0 where μ = δ; the fused backends compute both);
        smooth: ε of the Jaccard; reduction: "mean" (over B; 0 for an empty batch), "sum" or "none".
        mask: optional bool [B, C], True where the label is observed. Unobserved entries are left
            out of both point-loss sums and of the Jaccard numerator and denominator (their label
            may be NaN; their gradient is exactly 0); a row with nothing observed contributes 0.
            The fused kernels take no mask: with one, ``auto`` runs the reference and a fused
            backend named explicitly raises :class:`BackendUnavailableError`.
    Returns:
        ``(loss, mu)``: loss per ``reduction`` (float32, or float64 for float64 inputs), μ [B, C] in e.dtype.
    """
    _check_e_s_tau(e, s, tau)
    _check_labels(y, e, mask)
    alpha = check_finite_number("alpha", alpha)
    logit_scale = check_finite_number("logit_scale", logit_scale)
    threshold = check_finite_number("threshold", threshold)
    smooth = check_finite_number("smooth", smooth)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logit not in LOGITS:
        raise ValueError(f"logit must be one of {LOGITS}, got {logit!r}")
    if logit == "log" and not threshold > 0:
        raise ValueError(f"threshold must be > 0 for logit='log' (f = λ·log(μ/δ)), got {threshold}")
    tau = tau.reshape(()) if isinstance(tau, torch.Tensor) else tau
    args = (e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction, mask, logit)
    _, fn = resolve(OP_LOSS, backend, e.device, *args)
    return fn(*args)


register(OP_MEMBERSHIP, "reference")(reference.fuzzy_membership)
register(OP_LOSS, "reference")(reference.fuzzy_loss)


# --- fused backends: shared autograd wiring ---------------------------------------------------------

def _compute_dtype(e: torch.Tensor) -> torch.dtype:
    return torch.float64 if e.dtype == torch.float64 else torch.float32


def _tau_tensor(tau, e: torch.Tensor) -> torch.Tensor:
    """τ as a 0-d tensor in the kernels' accumulation dtype (differentiable when it is a tensor)."""
    if isinstance(tau, torch.Tensor):
        return tau.to(_compute_dtype(e))
    return torch.full((), float(tau), dtype=_compute_dtype(e), device=e.device)


def _loss_fake(e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction, logit):
    acc = _compute_dtype(e)
    loss = e.new_empty((e.shape[0],) if reduction == "none" else (), dtype=acc)
    return loss, e.new_empty(e.shape[:2]), e.new_empty(e.shape[0], 4, dtype=acc)


def _membership_fake(e, s, tau):
    return e.new_empty(e.shape[:2])


def _backward_fake(grad_loss, grad_mu, e, s, y, tau, stats, alpha, logit_scale, threshold, reduction, logit):
    # Contiguous, like the real kernels' outputs (empty_like would keep a transposed e's strides).
    return e.new_empty(e.shape), s.new_empty(s.shape), e.new_empty((), dtype=_compute_dtype(e))


def _autograd(backward_op):
    """(setup_context, backward) pairs for a loss op and a membership op sharing ``backward_op``."""

    def loss_setup(ctx, inputs, output):
        e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction, logit = inputs
        ctx.save_for_backward(e, s, y, tau, output[2])
        ctx.params = (alpha, logit_scale, threshold, reduction, logit)
        # Unused outputs (typically μ, or the loss in an eval pass) then arrive as None and the
        # kernel skips their terms instead of reading a zero-filled [B, C] gradient.
        ctx.set_materialize_grads(False)

    def loss_backward(ctx, grad_loss, grad_mu, _grad_stats):
        e, s, y, tau, stats = ctx.saved_tensors
        if grad_loss is None and grad_mu is None:
            return (None,) * 10
        de, ds, dtau = backward_op(grad_loss, grad_mu, e, s, y, tau, stats, *ctx.params)
        need = ctx.needs_input_grad
        return (de if need[0] else None, ds if need[1] else None, None, dtau if need[3] else None,
                None, None, None, None, None, None)

    def membership_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def membership_backward(ctx, grad_mu):
        e, s, tau = ctx.saved_tensors
        de, ds, dtau = backward_op(None, grad_mu, e, s, None, tau, None, 0.0, 0.0, 0.0, "none", "scaled")
        need = ctx.needs_input_grad
        return de if need[0] else None, ds if need[1] else None, dtau if need[2] else None

    return (loss_backward, loss_setup), (membership_backward, membership_setup)


def _fused_loss(loss_op):
    def run(e, s, y, tau, alpha, logit_scale, threshold, smooth, reduction, mask=None, logit="scaled"):
        # mask is None here: _unmasked sends masked calls to the reference
        loss, mu, _ = loss_op(e, s, y, _tau_tensor(tau, e), alpha, logit_scale, threshold, smooth, reduction, logit)
        return loss, mu
    return run


def _unmasked(reason_fn):
    """``supports`` of a fused loss: the kernels take no mask, so a masked call goes to the reference
    (both logits are fused)."""
    def supports(e, *args):
        mask = args[8] if len(args) > 8 else None  # (s, y, tau, alpha, λ, δ, ε, reduction, mask, logit)
        if mask is not None:
            return "the fused fuzzy_loss kernels take no mask (the reference does)"
        return reason_fn(e)
    return supports


def _fused_membership(membership_op):
    def run(e, s, tau, kernel):
        return membership_op(e, s, _tau_tensor(tau, e))
    return run


def _gaussian_only(reason_fn):
    def supports(e, s, tau, kernel):
        if kernel != "gaussian":
            return f"only the gaussian membership kernel is fused, got {kernel!r}"
        return reason_fn(e)
    return supports


# --- compiled extension (fact_fast._C): cpu and cuda ---------------------------------------------

if _extension.load() and _extension.has_kernel(OP_LOSS, "cpu"):
    torch.library.register_fake("fact_fast::fuzzy_loss")(_loss_fake)
    torch.library.register_fake("fact_fast::fuzzy_membership")(_membership_fake)
    torch.library.register_fake("fact_fast::fuzzy_backward")(_backward_fake)
    (_bwd, _setup), (_mbwd, _msetup) = _autograd(lambda *a: torch.ops.fact_fast.fuzzy_backward(*a))
    torch.library.register_autograd("fact_fast::fuzzy_loss", _bwd, setup_context=_setup)
    torch.library.register_autograd("fact_fast::fuzzy_membership", _mbwd, setup_context=_msetup)

    for _device in ("cpu", "cuda"):
        register(OP_LOSS, _device, supports=_unmasked(lambda e, _d=_device: _support.compiled(_d, OP_LOSS, e))
                 )(_fused_loss(lambda *a: torch.ops.fact_fast.fuzzy_loss(*a)))
        register(OP_MEMBERSHIP, _device,
                 supports=_gaussian_only(lambda e, _d=_device: _support.compiled(_d, OP_MEMBERSHIP, e))
                 )(_fused_membership(lambda *a: torch.ops.fact_fast.fuzzy_membership(*a)))


# --- triton ---------------------------------------------------------------------------------------

@torch.library.custom_op("fact_fast::fuzzy_loss_triton", mutates_args=())
def _fuzzy_loss_triton(e: torch.Tensor, s: torch.Tensor, y: torch.Tensor, tau: torch.Tensor, alpha: float,
                       logit_scale: float, threshold: float, smooth: float, reduction: str, logit: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fact_fast.kernels import fuzzy as kernels
    return kernels.fuzzy_forward(e.contiguous(), s.contiguous(), y.contiguous(), tau, alpha, logit_scale,
                                 threshold, smooth, reduction, logit)


@torch.library.custom_op("fact_fast::fuzzy_membership_triton", mutates_args=())
def _fuzzy_membership_triton(e: torch.Tensor, s: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    from fact_fast.kernels import fuzzy as kernels
    return kernels.fuzzy_forward(e.contiguous(), s.contiguous(), None, tau, 0.0, 0.0, 0.0, 0.0, "none", "scaled")[1]


@torch.library.custom_op("fact_fast::fuzzy_backward_triton", mutates_args=())
def _fuzzy_backward_triton(grad_loss: torch.Tensor | None, grad_mu: torch.Tensor | None, e: torch.Tensor,
                           s: torch.Tensor, y: torch.Tensor | None, tau: torch.Tensor, stats: torch.Tensor | None,
                           alpha: float, logit_scale: float, threshold: float, reduction: str, logit: str
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fact_fast.kernels import fuzzy as kernels
    return kernels.fuzzy_backward(grad_loss, grad_mu, e.contiguous(), s.contiguous(),
                                  None if y is None else y.contiguous(), tau, stats, alpha, logit_scale,
                                  threshold, reduction, logit)


_fuzzy_loss_triton.register_fake(_loss_fake)
_fuzzy_membership_triton.register_fake(_membership_fake)
_fuzzy_backward_triton.register_fake(_backward_fake)
(_tbwd, _tsetup), (_tmbwd, _tmsetup) = _autograd(_fuzzy_backward_triton)
_fuzzy_loss_triton.register_autograd(_tbwd, setup_context=_tsetup)
_fuzzy_membership_triton.register_autograd(_tmbwd, setup_context=_tmsetup)

# Must match fact_fast.kernels.fuzzy.MAX_D (not imported here: kernel modules load lazily).
TRITON_MAX_D = 8192


def _triton_supports(e: torch.Tensor) -> str | None:
    reason = _support.triton(e)
    if reason is None and e.shape[-1] > TRITON_MAX_D:
        return f"the Triton kernels hold one feature row in registers: d must be <= {TRITON_MAX_D}"
    return reason


register(OP_LOSS, "triton", supports=_unmasked(_triton_supports))(_fused_loss(_fuzzy_loss_triton))
register(OP_MEMBERSHIP, "triton", supports=_gaussian_only(_triton_supports))(
    _fused_membership(_fuzzy_membership_triton))
