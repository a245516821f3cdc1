"""Sigmoid attention and FACT's semantic interface operator (docs/design.md §3).

Front-end (validation + dispatch) and backend registrations of the attention family.
"""
from __future__ import annotations

import math

import torch

from fact_fast import _extension

from . import _support, reference
from ._backend import register, resolve
from ._validate import check_finite_number, check_same_device, check_same_dtype, check_tensor

OP_ATTENTION = "sigmoid_attention"
OP_INTERFACE = "sigmoid_interface"


def _broadcast_shape(*shapes) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError as err:
        raise ValueError(f"leading dimensions of q, k, v do not broadcast: {err}") from None


def sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                      bias: float = 0.0, *, backend: str | None = None) -> torch.Tensor:
    """σ(q kᵀ·scale + bias) v.

    Args:
        q: [..., Lq, d]; k: [..., Lk, d]; v: [..., Lk, dv]; leading dims broadcast; one float dtype.
        scale: default 1/√d.
        bias: added to every score.
    Returns:
        [broadcast(...), Lq, dv] in q.dtype.
    """
    check_tensor("q", q, min_ndim=2)
    check_tensor("k", k, min_ndim=2)
    check_tensor("v", v, min_ndim=2)
    check_same_device(q=q, k=k, v=v)
    check_same_dtype(q=q, k=k, v=v)
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k's last dimension must equal q's head dim d = {q.shape[-1]}, got shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v.shape[-2] must equal k's sequence length Lk = {k.shape[-2]}, got shape {tuple(v.shape)}")
    _broadcast_shape(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = 1.0 / math.sqrt(max(q.shape[-1], 1)) if scale is None else check_finite_number("scale", scale)
    bias = check_finite_number("bias", bias)
    _, fn = resolve(OP_ATTENTION, backend, q.device, q, k, v, scale, bias)
    return fn(q, k, v, scale, bias)


def sigmoid_interface(q: torch.Tensor, v: torch.Tensor, bias: float = 0.0, *, backend: str | None = None
                      ) -> torch.Tensor:
    """FACT's interface operator E = q + σ(q vᵀ/√d + bias) v.

    Args:
        q: [C, d] class queries shared by the batch, or [B, C, d].
        v: [B, M, d] visual tokens.
    Returns:
        [B, C, d] in q.dtype.
    """
    check_tensor("q", q, ndim=(2, 3))
    check_tensor("v", v, ndim=3)
    check_same_device(q=q, v=v)
    check_same_dtype(q=q, v=v)
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(f"v's last dimension must equal q's d = {q.shape[-1]}, got shape {tuple(v.shape)}")
    if q.dim() == 3 and q.shape[0] != v.shape[0]:
        raise ValueError(f"q.shape[0] must equal v's batch size {v.shape[0]}, got shape {tuple(q.shape)}")
    bias = check_finite_number("bias", bias)
    _, fn = resolve(OP_INTERFACE, backend, q.device, q, v, bias)
    return fn(q, v, bias)


register(OP_ATTENTION, "reference")(reference.sigmoid_attention)
register(OP_INTERFACE, "reference")(reference.sigmoid_interface)


# --- shared by the fused backends ------------------------------------------------------------------
#
# Every fused kernel takes 3-D [B, L, D] tensors with arbitrary strides. The broadcast leading
# dimensions are flattened into B with expand + reshape, which stays a view (batch stride 0) for the
# usual patterns — a query shared by the whole batch is read, never copied B times. Gradients come
# back per batch element and autograd's expand backward sums them in a fixed order (deterministic).

def _flatten(t: torch.Tensor, batch: tuple[int, ...], n: int) -> torch.Tensor:
    return t.expand(*batch, *t.shape[-2:]).reshape(n, *t.shape[-2:])


def _attention_via(attn, attn_kv):
    """Front-end of a fused backend given its 3-D ops ``attn(q, k, v, scale, bias)`` and
    ``attn_kv(q, kv, scale, bias, residual)``."""
    def run(q, k, v, scale, bias):
        batch = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
        n = math.prod(batch)
        q3 = _flatten(q, batch, n)
        if k is v:  # keys = values: one tensor read once, one gradient
            out = attn_kv(q3, _flatten(k, batch, n), scale, bias, False)
        else:
            out = attn(q3, _flatten(k, batch, n), _flatten(v, batch, n), scale, bias)
        return out.reshape(*batch, q.shape[-2], v.shape[-1])
    return run


def _interface_via(attn_kv):
    def run(q, v, bias):
        q3 = q.expand(v.shape[0], *q.shape[-2:]) if q.dim() == 2 else q
        return attn_kv(q3, v, 1.0 / math.sqrt(q.shape[-1]), bias, True)
    return run


def _attention_fake(q, k, v, scale, bias):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


def _attention_backward_fake(grad_out, q, k, v, scale, bias):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _kv_fake(q, kv, scale, bias, residual):
    return q.new_empty(q.shape[0], q.shape[1], kv.shape[2])


def _kv_backward_fake(grad_out, q, kv, scale, bias):
    return q.new_empty(q.shape), kv.new_empty(kv.shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])
    ctx.params = [a for a in inputs if not isinstance(a, torch.Tensor)]


def _make_autograd(backward_op, backward_kv_op, skips_dq: bool = False):
    """Autograd backwards for a backend's attention / keys=values ops; with ``skips_dq`` the backward
    ops take a trailing ``need_dq`` flag and return an empty dq without computing it."""
    def need_dq(ctx) -> tuple:
        return (ctx.needs_input_grad[0],) if skips_dq else ()

    def attention_backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        scale, bias = ctx.params
        dq, dk, dv = backward_op(grad_out, q, k, v, scale, bias, *need_dq(ctx))
        return dq if ctx.needs_input_grad[0] else None, dk, dv, None, None

    def kv_backward(ctx, grad_out):
        q, kv = ctx.saved_tensors
        scale, bias, residual = ctx.params
        dq, dkv = backward_kv_op(grad_out, q, kv, scale, bias, *need_dq(ctx))
        if not ctx.needs_input_grad[0]:
            return None, dkv, None, None, None
        if residual:
            dq = dq + grad_out
        return dq, dkv, None, None, None

    return attention_backward, kv_backward


def _head_dims_at_most(limit: int, *tensors: torch.Tensor) -> str | None:
    for t in tensors:
        if t.shape[-1] > limit:
            return f"head dim {t.shape[-1]} exceeds the kernel's limit of {limit}"
    return None


# --- compiled extension (fact_fast._C): cpu and cuda --------------------------------------------

# The CUDA kernels keep a query block and one key/value block in shared memory.
CUDA_MAX_HEAD_DIM = 512

if _extension.load() and _extension.has_kernel("sigmoid_attention", "cpu"):
    for _name, _fake in (("sigmoid_attention", _attention_fake),
                         ("sigmoid_attention_backward", _attention_backward_fake),
                         ("sigmoid_attention_kv", _kv_fake),
                         ("sigmoid_attention_kv_backward", _kv_backward_fake)):
        torch.library.register_fake(f"fact_fast::{_name}")(_fake)
    _compiled_attention_backward, _compiled_kv_backward = _make_autograd(
        torch.ops.fact_fast.sigmoid_attention_backward, torch.ops.fact_fast.sigmoid_attention_kv_backward)
    torch.library.register_autograd("fact_fast::sigmoid_attention", _compiled_attention_backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd("fact_fast::sigmoid_attention_kv", _compiled_kv_backward,
                                    setup_context=_setup_context)


def _compiled_attention(q, k, v, scale, bias):
    return _attention_via(torch.ops.fact_fast.sigmoid_attention, torch.ops.fact_fast.sigmoid_attention_kv)(
        q, k, v, scale, bias)


def _compiled_interface(q, v, bias):
    return _interface_via(torch.ops.fact_fast.sigmoid_attention_kv)(q, v, bias)


def _compiled_supports(device_type: str, op: str):
    def supports(q, *tensors_and_args):
        reason = _support.compiled(device_type, op, q)
        if reason is None and device_type == "cuda":
            reason = _head_dims_at_most(CUDA_MAX_HEAD_DIM, q, *[t for t in tensors_and_args
                                                                if isinstance(t, torch.Tensor)])
        return reason
    return supports


for _device in ("cpu", "cuda"):
    register(OP_ATTENTION, _device, supports=_compiled_supports(_device, "sigmoid_attention"))(_compiled_attention)
    register(OP_INTERFACE, _device, supports=_compiled_supports(_device, "sigmoid_attention_kv"))(
        _compiled_interface)


# --- Triton ----------------------------------------------------------------------------------------

# Each program holds whole query/key rows in registers, so head dims are bounded.
TRITON_MAX_HEAD_DIM = 512


@torch.library.custom_op("fact_fast::sigmoid_attention_triton", mutates_args=())
def _triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: float
                      ) -> torch.Tensor:
    from fact_fast.kernels.attention import attention_forward
    return attention_forward(q, k, v, scale, bias, residual=False)


@torch.library.custom_op("fact_fast::sigmoid_attention_triton_backward", mutates_args=())
def _triton_attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               scale: float, bias: float, need_dq: bool = True
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fact_fast.kernels.attention import attention_backward
    return attention_backward(grad_out, q, k, v, scale, bias, kv_shared=False, need_dq=need_dq)


@torch.library.custom_op("fact_fast::sigmoid_attention_kv_triton", mutates_args=())
def _triton_kv(q: torch.Tensor, kv: torch.Tensor, scale: float, bias: float, residual: bool) -> torch.Tensor:
    from fact_fast.kernels.attention import attention_forward
    return attention_forward(q, kv, kv, scale, bias, residual=residual)


@torch.library.custom_op("fact_fast::sigmoid_attention_kv_triton_backward", mutates_args=())
def _triton_kv_backward(grad_out: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, scale: float, bias: float,
                        need_dq: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    from fact_fast.kernels.attention import attention_backward
    dq, _, dkv = attention_backward(grad_out, q, kv, kv, scale, bias, kv_shared=True, need_dq=need_dq)
    return dq, dkv


def _dq_fake(q, need_dq):
    return q.new_empty(q.shape if need_dq else (0,))


_triton_attention.register_fake(_attention_fake)
_triton_attention_backward.register_fake(
    lambda grad_out, q, k, v, scale, bias, need_dq=True: (_dq_fake(q, need_dq), k.new_empty(k.shape),
                                                          v.new_empty(v.shape)))
_triton_kv.register_fake(_kv_fake)
_triton_kv_backward.register_fake(
    lambda grad_out, q, kv, scale, bias, need_dq=True: (_dq_fake(q, need_dq), kv.new_empty(kv.shape)))
_triton_attention_bwd, _triton_kv_bwd = _make_autograd(_triton_attention_backward, _triton_kv_backward,
                                                       skips_dq=True)
_triton_attention.register_autograd(_triton_attention_bwd, setup_context=_setup_context)
_triton_kv.register_autograd(_triton_kv_bwd, setup_context=_setup_context)


def _triton_supports(q, *tensors_and_args):
    reason = _support.triton(q)
    if reason is None:
        reason = _head_dims_at_most(TRITON_MAX_HEAD_DIM, q, *[t for t in tensors_and_args
                                                              if isinstance(t, torch.Tensor)])
    return reason


register(OP_ATTENTION, "triton", supports=_triton_supports)(_attention_via(_triton_attention, _triton_kv))
register(OP_INTERFACE, "triton", supports=_triton_supports)(_interface_via(_triton_kv))
