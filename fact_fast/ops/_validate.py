"""Input checks shared by every op front-end.

They run before dispatch, so every backend sees inputs that are already known to be well formed
and a bad call fails the same way whichever backend would have run it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(name: str, t, *, ndim: int | tuple[int, ...] | None = None, min_ndim: int | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = FLOAT_DTYPES) -> torch.Tensor:
    """Raise TypeError/ValueError naming ``name`` unless ``t`` is a tensor of the expected rank/dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({_dtype_names(dtypes)}), got {t.dtype}")
    return t


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    items = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; "
                             "all inputs must be on the same device")
    return first.device


def check_same_dtype(**tensors: torch.Tensor) -> torch.dtype:
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
    return first.dtype


def check_size(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(f"{name}.shape[{dim}] must equal {what} ({expected}), got shape {tuple(t.shape)}")


def check_positive(name: str, value) -> None:
    """For Python numbers only: checking a tensor's value would synchronize the device."""
    if isinstance(value, (int, float)) and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value}")


def check_finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def is_compiling() -> bool:
    """True while torch.compile traces; value-dependent checks are skipped then (they would break the graph)."""
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # torch < 2.3
        return False
