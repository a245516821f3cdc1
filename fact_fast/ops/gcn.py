"""Normalized sparse GCN propagation: ``gcn_propagate`` (SPEC §3).

Front-end (validation + dispatch) and backend registrations of the GCN family.
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import register, resolve
from ._validate import INDEX_DTYPES, check_same_device, check_size, check_tensor, is_compiling

OP_PROPAGATE = "gcn_propagate"


def check_csr(n: int, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None,
              device: torch.device) -> None:
    """Raise unless (rowptr, col, value) is a well-formed CSR graph with n rows and n columns."""
    check_tensor("rowptr", rowptr, ndim=1, dtypes=INDEX_DTYPES)
    check_tensor("col", col, ndim=1, dtypes=INDEX_DTYPES)
    check_same_device(x=torch.empty(0, device=device), rowptr=rowptr, col=col)
    if rowptr.shape[0] != n + 1:
        raise ValueError(f"rowptr must have n + 1 = {n + 1} entries for x with n = {n} rows, "
                         f"got {rowptr.shape[0]}")
    if value is not None:
        check_tensor("value", value, ndim=1)
        check_same_device(col=col, value=value)
        check_size("value", value, 0, col.shape[0], "the number of edges nnz = len(col)")
    if is_compiling():
        return  # the checks below read values, which would break the compiled graph
    nnz = col.shape[0]
    if rowptr[0].item() != 0 or rowptr[-1].item() != nnz:
        raise ValueError(f"rowptr must start at 0 and end at nnz = len(col) = {nnz}, "
                         f"got rowptr[0] = {rowptr[0].item()}, rowptr[-1] = {rowptr[-1].item()}")
    if n > 0 and bool((rowptr[1:] < rowptr[:-1]).any()):
        raise ValueError("rowptr must be non-decreasing (a malformed CSR row pointer)")
    if nnz > 0 and bool(((col < 0) | (col >= n)).any()):
        raise ValueError(f"col has entries outside [0, {n}) (out-of-range column indices)")


def gcn_propagate(x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None = None,
                  add_self_loops: bool = True, normalize: bool = True, *, backend: str | None = None
                  ) -> torch.Tensor:
    """D̃^{-1/2}(A+I)D̃^{-1/2} x with the normalization applied on the fly.

    Args:
        x: [n, f] float16/bfloat16/float32/float64 node features.
        rowptr: int64/int32 [n + 1] CSR row pointer of A (need not be symmetric).
        col: int64/int32 [nnz] column indices; duplicates add up.
        value: optional [nnz] edge weights (gradient flows to it when it requires grad).
        add_self_loops: use A + I (a self loop is added even where A has one).
        normalize: scale by D̃^{-1/2} on both sides, D̃ = weighted row sums; rows of zero degree give 0.
    Returns:
        [n, f] in x.dtype.
    """
    check_tensor("x", x, ndim=2)
    check_csr(x.shape[0], rowptr, col, value, x.device)
    _, fn = resolve(OP_PROPAGATE, backend, x.device, x, rowptr, col, value, add_self_loops, normalize)
    return fn(x, rowptr, col, value, add_self_loops, normalize)


register(OP_PROPAGATE, "reference")(reference.gcn_propagate)
