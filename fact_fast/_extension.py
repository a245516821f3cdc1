"""Loads the compiled extension ``fact_fast._C`` once and answers which compiled kernels exist.

The package works without it: ops fall back to Triton or the reference, and a single warning
says why the compiled backends are missing. The kernel table is computed once, at load, so that
torch.compile sees plain constants when an op resolves its backend.
"""
from __future__ import annotations

import warnings

import torch

NAMESPACE = "fact_fast"
_state: dict = {"loaded": None, "kernels": frozenset(), "with_cuda": False}


def _kernel_table() -> frozenset[tuple[str, str]]:
    table = set()
    for schema in torch._C._dispatch_get_all_op_names():
        if not schema.startswith(f"{NAMESPACE}::"):
            continue
        op = schema.split("::", 1)[1].split(".", 1)[0]
        for device_type, key in (("cpu", "CPU"), ("cuda", "CUDA")):
            if torch._C._dispatch_has_kernel_for_dispatch_key(schema, key):
                table.add((op, device_type))
    return frozenset(table)


def load() -> bool:
    """Import ``fact_fast._C`` (which registers its ops with torch.library); False if it is missing."""
    if _state["loaded"] is None:
        try:
            from fact_fast import _C
        except ImportError as err:
            warnings.warn(
                f"fact_fast._C is not available ({err}); the 'cpu' and 'cuda' backends are disabled and ops "
                "fall back to Triton/reference. Build it with `pip install -e . --no-build-isolation`.",
                RuntimeWarning, stacklevel=2)
            _state["loaded"] = False
        else:
            _state.update(loaded=True, kernels=_kernel_table(), with_cuda=bool(getattr(_C, "WITH_CUDA", 0)))
    return _state["loaded"]


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``fact_fast::op`` has a compiled kernel for ``device_type`` ("cpu" or "cuda")."""
    return (op, device_type) in _state["kernels"]


def built_with_cuda() -> bool:
    """True when the extension contains CUDA kernels (it was compiled with a CUDA toolkit)."""
    return _state["with_cuda"]
