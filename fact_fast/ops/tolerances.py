"""How close a fused backend must come to the reference, per op family and dtype.

One table per family, used by the test suite (``tests/test_*_backends.py``) and by
``python -m fact_fast.selftest``, so a backend passes the same bar in CI and on a user's machine.

* fuzzy, gcn: ``(atol, rtol)`` of the fused result against the reference run on the same inputs
  (both accumulate in float32, float64 for float64 inputs; the slack covers the final rounding to
  fp16/bf16 and the summation order). On a GPU each bound is raised to at least the GPU floor
  (reordered sums across thread blocks).
* vq: ``(atol, rtol)`` against float64 oracles evaluated at the backend's own indices, plus the
  relative rounding band within which a fused index may differ from the exact argmin.
* attention: the flash-attention rule ``max|fused − ref64| ≤ factor·max|ref_lp − ref64| + atol``,
  where ref64 is the reference in float64 and ref_lp the reference in the inputs' dtype.
"""
from __future__ import annotations

import torch

# (atol, rtol) for loss, μ and gradients against the reference in the same dtype, for both point-loss
# logits (f = λ(μ − δ) and λ·log(μ/δ)); the kernels form either from the same float32 dist/τ as the
# reference does
FUZZY = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (1.6e-2, 3e-2),
    torch.float64: (1e-7, 1e-6),  # compared in float32
}
FUZZY_GPU_FLOOR = (1e-5, 2e-4)

# (atol, rtol) for outputs and dX against the reference; d value sums f products per edge, so its
# bound is scaled by GCN_VALUE_GRAD_SCALE (GPU: GCN_VALUE_GRAD_SCALE_GPU).
GCN = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float64: (1e-12, 1e-12),
}
GCN_GPU_FLOOR = (1e-4, 1e-4)
GCN_VALUE_GRAD_SCALE = 10.0
GCN_VALUE_GRAD_SCALE_GPU = 20.0

# (atol, rtol) for dist, loss and gradients against float64 oracles at the backend's indices
VQ = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (1e-1, 1.6e-2),
    torch.float64: (1e-10, 1e-10),
}
# Relative rounding band of the fp32 expanded distance, as a fraction of ‖z‖² + max‖p‖²
VQ_INDEX_REL = 1e-5

# (factor, atol) of the flash-attention rule
ATTENTION = {
    torch.float32: (3.0, 1e-5),
    torch.float16: (3.0, 1e-3),
    torch.bfloat16: (3.0, 1e-2),
    torch.float64: (2.0, 1e-12),
}

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def _floor(tol: tuple[float, float], floor: tuple[float, float], device_type: str) -> tuple[float, float]:
    if device_type == "cuda":
        return max(tol[0], floor[0]), max(tol[1], floor[1])
    return tol


def fuzzy(dtype: torch.dtype, device_type: str = "cpu") -> tuple[float, float]:
    """(atol, rtol) for the fuzzy family on ``device_type``."""
    return _floor(FUZZY[dtype], FUZZY_GPU_FLOOR, device_type)


def gcn(dtype: torch.dtype, device_type: str = "cpu") -> tuple[float, float]:
    """(atol, rtol) for gcn_propagate's output and dX on ``device_type``."""
    return _floor(GCN[dtype], GCN_GPU_FLOOR, device_type)


def gcn_value_grad(dtype: torch.dtype, device_type: str = "cpu") -> tuple[float, float]:
    """(atol, rtol) for gcn_propagate's edge-value gradient on ``device_type``."""
    atol, rtol = gcn(dtype, device_type)
    scale = GCN_VALUE_GRAD_SCALE_GPU if device_type == "cuda" else GCN_VALUE_GRAD_SCALE
    return scale * atol, scale * rtol


def vq_index_band(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Per-row float64 band [N] within which two codewords' exact distances count as tied."""
    z64, p64 = z.detach().double().cpu(), codebook.detach().double().cpu()
    return VQ_INDEX_REL * (z64.pow(2).sum(1) + p64.pow(2).sum(1).max())


def flash_bound(ref_lp: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype) -> float:
    """The attention family's error bound for outputs whose reference in ``dtype`` is ``ref_lp``."""
    factor, atol = ATTENTION[dtype]
    ref_err = (ref_lp.double() - ref64).abs().max().item() if ref64.numel() else 0.0
    return factor * ref_err + atol
