"""Autocast (AMP) behaviour of the fused ops.

Under ``torch.autocast`` a custom op without an autocast rule is called with whatever mix of
dtypes its caller produced, and the ATen calls inside its C++ kernels are autocast again, so
the kernels' float32 accumulators meet bfloat16 operands ("mat1 and mat2 must have the same
dtype"). Every ``fact_fast::`` op therefore runs in float32 under autocast: its floating inputs
are cast to float32 and autocast is off inside it. FACT's four operations are small next to the
backbone, which keeps its reduced-precision convolutions; they accumulate in float32 anyway, and the
loss and the VQ argmin are precision-sensitive.
"""
from __future__ import annotations

import torch

__all__ = ["register_autocast_float32"]

_done: set = set()


def register_autocast_float32(namespace: str = "fact_fast") -> list:
    """Give every registered ``<namespace>::`` op a float32 autocast rule on CPU and CUDA;
    returns the op names newly covered (idempotent)."""
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(namespace + "::"))
    new = []
    for name in names:
        if name in _done:
            continue
        for device in ("cpu", "cuda"):
            torch.library.register_autocast(name, device, torch.float32)
        _done.add(name)
        new.append(name)
    return new
