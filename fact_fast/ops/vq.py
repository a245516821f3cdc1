"""Vector quantization ops: ``vq_nearest`` and ``vq_quantize`` (docs/design.md §3).

Front-end (validation + dispatch) and backend registrations of the VQ family.

Every fused backend runs the same three compiled / Triton ops, each with a fake (meta) kernel and a
registered autograd formula, so ``torch.compile`` traces them:

* ``vq_nearest(z, codebook, deterministic) -> (index, dist)``: fused distance GEMM + running argmin;
* ``vq_quantize(z, codebook, beta, deterministic) -> (v, index, loss)``: the search, the gather of
  z_q and the commitment loss in one forward;
* ``vq_residual_backward(z, codebook, index, grad_out, z_weight, codebook_weight, deterministic)``:
  grad_z = grad_out + w_z·(z − p_k) and grad_codebook[k] = Σ_{i: k_i = k} w_cb,i·(p_k − z_i), the
  backward of both (``vq_nearest``: w = 2·grad_dist; ``vq_quantize``: w_z = 2β·g/(N·d), w_cb = 2g/(N·d)).

``deterministic`` selects, on the GPU backends, a codebook-gradient reduction over the rows sorted by
index (bitwise reproducible) instead of float atomics; the CPU backend is always reproducible.
"""
from __future__ import annotations


import torch

from fact_fast import _extension

from . import _support, reference
from ._backend import register, resolve
from ._validate import check_finite_number, check_same_device, check_same_dtype, check_size, check_tensor

OP_NEAREST = "vq_nearest"
OP_QUANTIZE = "vq_quantize"


def _check_codebook(z: torch.Tensor, codebook: torch.Tensor) -> None:
    check_tensor("codebook", codebook, ndim=2)
    check_same_device(z=z, codebook=codebook)
    check_same_dtype(z=z, codebook=codebook)
    if codebook.shape[0] == 0:
        raise ValueError("codebook must have at least one row (codeword), got shape "
                         f"{tuple(codebook.shape)}")
    check_size("codebook", codebook, 1, z.shape[-1], "z's feature size d")


def _check_deterministic(deterministic) -> bool:
    if deterministic is None:
        return torch.are_deterministic_algorithms_enabled()
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool or None, got {type(deterministic).__name__}")
    return deterministic


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor, *, deterministic: bool | None = None,
               backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword of each row; never materializes the N×K distance table in fused backends.

    Args:
        z: [N, d] float16/bfloat16/float32 (float64: cpu and reference backends).
        codebook: [K, d], same dtype and device, K ≥ 1.
        deterministic: make the codebook gradient bitwise reproducible on GPU (sorted segmented
            reduction instead of atomics). Default: ``torch.are_deterministic_algorithms_enabled()``.
        backend: "auto" (default), "reference", "cpu", "cuda" or "triton".
    Returns:
        ``(index, dist)``: index int64 [N] (ties → lowest index), dist [N] in z.dtype = ‖z − p_index‖²
        computed exactly for the winner (differentiable w.r.t. z and codebook). Where two codewords
        are within rounding of each other, backends may pick different ones (the CPU backend
        resolves such near ties on exact distances).
    """
    check_tensor("z", z, ndim=2)
    _check_codebook(z, codebook)
    deterministic = _check_deterministic(deterministic)
    _, fn = resolve(OP_NEAREST, backend, z.device, z, codebook, deterministic)
    return fn(z, codebook, deterministic)


def vq_quantize(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25, *, deterministic: bool | None = None,
                backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize z to its nearest codewords with a straight-through estimator (docs/design.md §2.3).

    Args:
        z: [..., d] float16/bfloat16/float32 (float64: cpu and reference backends).
        codebook: [K, d], same dtype and device, K ≥ 1.
        beta: weight of the encoder (commitment) term.
        deterministic: see :func:`vq_nearest`.
        backend: "auto" (default), "reference", "cpu", "cuda" or "triton".
    Returns:
        ``(v, index, commit_loss)``: v [..., d] = z + sg(z_q − z) (its value is z_q; the gradient goes
        to z unchanged); index int64 [...] (use it for codebook usage / perplexity);
        commit_loss scalar in z.dtype = mean‖sg[z] − z_q‖² + β·mean‖z − sg[z_q]‖² over all elements
        (0 for an empty z).
    """
    check_tensor("z", z, min_ndim=1)
    _check_codebook(z, codebook)
    beta = check_finite_number("beta", beta)
    deterministic = _check_deterministic(deterministic)
    _, fn = resolve(OP_QUANTIZE, backend, z.device, z, codebook, beta, deterministic)
    return fn(z, codebook, beta, deterministic)


register(OP_NEAREST, "reference")(lambda z, codebook, deterministic: reference.vq_nearest(z, codebook))
register(OP_QUANTIZE, "reference")(lambda z, codebook, beta, deterministic: reference.vq_quantize(z, codebook, beta))


# --- autograd shared by the compiled and the Triton ops ------------------------------------------

def _nearest_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        z, codebook, deterministic = inputs
        ctx.save_for_backward(z, codebook, output[0])
        ctx.deterministic = deterministic

    def backward(ctx, grad_index, grad_dist):
        z, codebook, index = ctx.saved_tensors
        # dist = ‖z − p_k‖²: d/dz = 2(z − p_k), d/dp_k = Σ_{rows that chose k} 2(p_k − z).
        w = grad_dist * 2
        grad_z, grad_codebook = backward_op(z, codebook, index, None, w, w, ctx.deterministic)
        return (grad_z if ctx.needs_input_grad[0] else None,
                grad_codebook if ctx.needs_input_grad[1] else None, None)

    return backward, setup_context


def _quantize_autograd(backward_op):
    def setup_context(ctx, inputs, output):
        z, codebook, beta, deterministic = inputs
        ctx.save_for_backward(z, codebook, output[1])
        ctx.beta, ctx.deterministic = beta, deterministic

    def backward(ctx, grad_v, grad_index, grad_loss):
        z, codebook, index = ctx.saved_tensors
        # loss = Σ‖sg[z] − z_q‖²/(N·d) + β·Σ‖z − sg[z_q]‖²/(N·d); v passes its gradient to z as is.
        scale = grad_loss.double() * (2.0 / max(z.numel(), 1))
        grad_z, grad_codebook = backward_op(z, codebook, index, grad_v, scale * ctx.beta, scale,
                                            ctx.deterministic)
        return (grad_z if ctx.needs_input_grad[0] else None,
                grad_codebook if ctx.needs_input_grad[1] else None, None, None)

    return backward, setup_context


def _fake_nearest(z, codebook, deterministic=False):
    return z.new_empty(z.shape[0], dtype=torch.int64), z.new_empty(z.shape[0])


def _fake_quantize(z, codebook, beta, deterministic=False):
    return z.new_empty(z.shape), z.new_empty(z.shape[0], dtype=torch.int64), z.new_empty(())


def _fake_backward(z, codebook, index, grad_out, z_weight, codebook_weight, deterministic=False):
    return z.new_empty(z.shape), codebook.new_empty(codebook.shape)


def _flat_quantize(op):
    """Run a 2-D quantize op on z [..., d] and restore the leading shape."""
    def run(z, codebook, beta, deterministic):
        v, index, loss = op(z.reshape(-1, z.shape[-1]), codebook, beta, deterministic)
        return v.reshape(z.shape), index.reshape(z.shape[:-1]), loss
    return run


# --- compiled extension (fact_fast._C): cpu and cuda --------------------------------------------

if _extension.load():
    torch.library.register_fake("fact_fast::vq_nearest")(_fake_nearest)
    torch.library.register_fake("fact_fast::vq_quantize")(_fake_quantize)
    torch.library.register_fake("fact_fast::vq_residual_backward")(_fake_backward)

    def _compiled_backward(*args):
        return torch.ops.fact_fast.vq_residual_backward(*args)

    _bwd, _ctx = _nearest_autograd(_compiled_backward)
    torch.library.register_autograd("fact_fast::vq_nearest", _bwd, setup_context=_ctx)
    _bwd, _ctx = _quantize_autograd(_compiled_backward)
    torch.library.register_autograd("fact_fast::vq_quantize", _bwd, setup_context=_ctx)


def _compiled_nearest(z, codebook, deterministic):
    return torch.ops.fact_fast.vq_nearest(z, codebook, deterministic)


def _compiled_quantize_2d(z, codebook, beta, deterministic):
    return torch.ops.fact_fast.vq_quantize(z, codebook, beta, deterministic)


for _device in ("cpu", "cuda"):
    register(OP_NEAREST, _device,
             supports=lambda z, codebook, deterministic=False, _d=_device: _support.compiled(_d, OP_NEAREST, z)
             )(_compiled_nearest)
    register(OP_QUANTIZE, _device,
             supports=lambda z, codebook, beta=0.25, deterministic=False, _d=_device:
             _support.compiled(_d, OP_QUANTIZE, z))(_flat_quantize(_compiled_quantize_2d))


# --- Triton ----------------------------------------------------------------------------------------

@torch.library.custom_op("fact_fast::vq_nearest_triton", mutates_args=())
def vq_nearest_triton(z: torch.Tensor, codebook: torch.Tensor, deterministic: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    from fact_fast.kernels import vq as kernels
    index, dist, _, _ = kernels.nearest(z, codebook, want_dist=True, want_quantized=False)
    return index, dist


@torch.library.custom_op("fact_fast::vq_quantize_triton", mutates_args=())
def vq_quantize_triton(z: torch.Tensor, codebook: torch.Tensor, beta: float, deterministic: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fact_fast.kernels import vq as kernels
    index, _, dist_f32, zq = kernels.nearest(z, codebook, want_dist=False, want_quantized=True)
    # Both commitment terms have the value mean‖z − z_q‖²; a fixed-shape torch sum is reproducible.
    loss = (dist_f32.sum() * ((1.0 + beta) / max(z.numel(), 1))).to(z.dtype)
    return zq, index, loss


@torch.library.custom_op("fact_fast::vq_residual_backward_triton", mutates_args=())
def vq_residual_backward_triton(z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor,
                                grad_out: torch.Tensor | None, z_weight: torch.Tensor,
                                codebook_weight: torch.Tensor, deterministic: bool
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    from fact_fast.kernels import vq as kernels
    return kernels.residual_backward(z, codebook, index, grad_out, z_weight, codebook_weight, deterministic)


vq_nearest_triton.register_fake(_fake_nearest)
vq_quantize_triton.register_fake(_fake_quantize)
vq_residual_backward_triton.register_fake(_fake_backward)
_bwd, _ctx = _nearest_autograd(vq_residual_backward_triton)
vq_nearest_triton.register_autograd(_bwd, setup_context=_ctx)
_bwd, _ctx = _quantize_autograd(vq_residual_backward_triton)
vq_quantize_triton.register_autograd(_bwd, setup_context=_ctx)

register(OP_NEAREST, "triton", supports=lambda z, codebook, deterministic=False: _support.triton(z))(vq_nearest_triton)
register(OP_QUANTIZE, "triton", supports=lambda z, codebook, beta=0.25, deterministic=False: _support.triton(z)
         )(_flat_quantize(vq_quantize_triton))
