"""Sigmoid attention and FACT's semantic interface operator (SPEC §3).

Front-end (validation + dispatch) and backend registrations of the attention family.
"""
from __future__ import annotations

import math

import torch

from . import reference
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
