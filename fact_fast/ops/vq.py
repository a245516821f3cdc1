"""Vector quantization ops: ``vq_nearest`` and ``vq_quantize`` (SPEC §3).

Front-end (validation + dispatch) and backend registrations of the VQ family.
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


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor, *, backend: str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword of each row.

    Args:
        z: [N, d] float16/bfloat16/float32/float64.
        codebook: [K, d], same dtype and device, K ≥ 1.
        backend: "auto" (default), "reference", "cpu", "cuda" or "triton".
    Returns:
        ``(index, dist)``: index int64 [N] (ties → lowest index), dist [N] in z.dtype = the
        minimum squared L2 distance (differentiable w.r.t. z and codebook).
    """
    check_tensor("z", z, ndim=2)
    _check_codebook(z, codebook)
    _, fn = resolve(OP_NEAREST, backend, z.device, z, codebook)
    return fn(z, codebook)


def vq_quantize(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25, *, backend: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize z to its nearest codewords with a straight-through estimator (SPEC §2.3).

    Args:
        z: [..., d] float16/bfloat16/float32/float64.
        codebook: [K, d], same dtype and device, K ≥ 1.
        beta: weight of the encoder (commitment) term.
    Returns:
        ``(v, index, commit_loss)``: v [..., d] = z + sg(z_q − z); index int64 [...];
        commit_loss scalar = mean‖sg[z] − z_q‖² + β·mean‖z − sg[z_q]‖² (0 for an empty z).
    """
    check_tensor("z", z, min_ndim=1)
    _check_codebook(z, codebook)
    beta = check_finite_number("beta", beta)
    _, fn = resolve(OP_QUANTIZE, backend, z.device, z, codebook, beta)
    return fn(z, codebook, beta)


register(OP_NEAREST, "reference")(reference.vq_nearest)
register(OP_QUANTIZE, "reference")(reference.vq_quantize)


# --- compiled extension (fact_fast._C): cpu and cuda --------------------------------------------

def _nearest_setup_context(ctx, inputs, output):
    z, codebook = inputs
    index, _ = output
    ctx.mark_non_differentiable(index)
    ctx.save_for_backward(z, codebook, index)


def _nearest_backward(ctx, grad_index, grad_dist):
    z, codebook, index = ctx.saved_tensors
    # dist = ‖z − p_k‖²: d/dz = 2(z − p_k), d/dp_k = −2(z − p_k), summed over the rows that chose k.
    scaled = (z - codebook[index]) * (2 * grad_dist).unsqueeze(1)
    grad_z = scaled if ctx.needs_input_grad[0] else None
    grad_codebook = None
    if ctx.needs_input_grad[1]:
        grad_codebook = torch.zeros_like(codebook).index_add_(0, index, -scaled)
    return grad_z, grad_codebook


if _extension.load():
    @torch.library.register_fake("fact_fast::vq_nearest")
    def _vq_nearest_fake(z, codebook):
        return z.new_empty(z.shape[0], dtype=torch.int64), z.new_empty(z.shape[0])

    torch.library.register_autograd("fact_fast::vq_nearest", _nearest_backward,
                                    setup_context=_nearest_setup_context)


def _compiled_nearest(z: torch.Tensor, codebook: torch.Tensor):
    return torch.ops.fact_fast.vq_nearest(z, codebook)


for _device in ("cpu", "cuda"):
    register(OP_NEAREST, _device, supports=lambda z, codebook, _d=_device: _support.compiled(_d, OP_NEAREST, z)
             )(_compiled_nearest)
