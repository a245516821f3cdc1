"""The comparisons of a fused result with the reference, each giving a :class:`Check`: the worst
error as a fraction of its bound (passes when <= 1). The bounds are :mod:`fact_fast.ops.tolerances`."""
from __future__ import annotations

import dataclasses
import math

import torch

from fact_fast.ops import tolerances

__all__ = ["Check", "close", "flash", "exact", "vq_index", "assert_close"]


@dataclasses.dataclass
class Check:
    """What was compared, the worst error as a fraction of its bound (passes when <= 1; inf for
    a shape mismatch or an unmatched NaN) and the largest absolute error."""

    what: str
    ratio: float
    max_abs: float


def close(what: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
          dtype: torch.dtype = torch.float64, equal_nan: bool = True) -> Check:
    """|actual − expected| ≤ atol + rtol·|expected| elementwise, both of one shape, cast to
    ``dtype`` and compared in float64. NaN matches only NaN (``equal_nan``), or nothing."""
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(f"{what} shape {tuple(actual.shape)} != {tuple(expected.shape)}", math.inf, math.inf)
    if actual.numel() == 0:
        return Check(what, 0.0, 0.0)
    a, b = actual.detach().to("cpu", dtype).double(), expected.detach().to("cpu", dtype).double()
    both_nan = torch.isnan(a) & torch.isnan(b) & equal_nan
    diff = torch.where(both_nan, torch.zeros_like(a), (a - b).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    ratio = (diff / (atol + rtol * b.abs().nan_to_num(0.0))).max().item()
    return Check(what, 0.0 if diff.max().item() == 0 else ratio, diff.max().item())


def flash(what: str, actual: torch.Tensor, ref_lp: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype) -> Check:
    """The attention family's rule: max|actual − ref64| ≤ factor·max|ref_lp − ref64| + atol."""
    if tuple(actual.shape) != tuple(ref64.shape):
        return Check(f"{what} shape {tuple(actual.shape)} != {tuple(ref64.shape)}", math.inf, math.inf)
    ref64 = ref64.detach().cpu()
    err = (actual.detach().cpu().double() - ref64).abs().max().item() if ref64.numel() else 0.0
    err = math.inf if math.isnan(err) else err
    return Check(what, err / tolerances.flash_bound(ref_lp.detach().cpu(), ref64, dtype), err)


def exact(what: str, actual: torch.Tensor, expected: torch.Tensor) -> Check:
    """Same shape and bitwise equal values."""
    ok = tuple(actual.shape) == tuple(expected.shape) and torch.equal(actual.cpu(), expected.cpu())
    return Check(what, 0.0 if ok else math.inf, 0.0 if ok else math.inf)


def vq_index(what: str, z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor) -> Check:
    """Each index (int ``[N]``, any shape) is the exact nearest row of ``codebook [K, d]`` to its
    row of ``z [..., d]``, up to the rounding band of ``tolerances.VQ_INDEX_REL``."""
    index = index.detach().cpu().reshape(-1)
    flat = z.detach().reshape(-1, z.shape[-1])
    if index.numel() == 0:
        return Check(what, 0.0, 0.0)
    if index.min() < 0 or index.max() >= codebook.shape[0]:
        return Check(what + " out of range", math.inf, math.inf)
    dist = (flat.double().cpu()[:, None, :] - codebook.detach().double().cpu()[None]).pow(2).sum(-1)
    excess = dist.gather(1, index[:, None]).squeeze(1) - dist.min(1).values
    band = tolerances.vq_index_band(flat, codebook)
    return Check(what, (excess / band).max().item(), excess.max().item())


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = "",
                 dtype: torch.dtype = torch.float32) -> None:
    """Raise AssertionError unless :func:`close` passes (compared in ``dtype``; a NaN fails)."""
    check = close(what or "values", actual, expected, atol, rtol, dtype, equal_nan=False)
    if not check.ratio <= 1.0:
        raise AssertionError(f"{check.what}: max |actual - expected| = {check.max_abs:.3g}, {check.ratio:.3g} times "
                             f"its bound atol + rtol·|expected| (atol {atol:g}, rtol {rtol:g})")
