"""Reference normalized GCN propagation: edge-list message passing with explicit normalization."""
from __future__ import annotations

import torch


def gcn_norm_coo(n: int, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None,
                 add_self_loops: bool, normalize: bool, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """COO (row, col, weight) of D̃^{-1/2}(A+I)D̃^{-1/2} (or of A+I / A when not normalizing).

    D̃ holds the weighted row sums of A+I (duplicates add up); rows whose degree is not positive
    get a zero scale, so they propagate nothing.
    """
    device = col.device
    counts = rowptr[1:] - rowptr[:-1]
    row = torch.repeat_interleave(torch.arange(n, device=device), counts)
    col = col.long()
    weight = value.to(dtype) if value is not None else torch.ones(col.numel(), dtype=dtype, device=device)
    if add_self_loops:
        loop = torch.arange(n, device=device)
        row = torch.cat([row, loop])
        col = torch.cat([col, loop])
        weight = torch.cat([weight, torch.ones(n, dtype=dtype, device=device)])
    if normalize:
        deg = torch.zeros(n, dtype=dtype, device=device).index_add(0, row, weight)
        dinv = torch.where(deg > 0, deg.clamp_min(torch.finfo(dtype).tiny).rsqrt(), torch.zeros_like(deg))
        weight = dinv[row] * weight * dinv[col]
    return row, col, weight


def gcn_propagate(x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None = None,
                  add_self_loops: bool = True, normalize: bool = True) -> torch.Tensor:
    """x [n, f], CSR (rowptr [n+1], col [nnz], value [nnz] | None) -> Â x [n, f] in x.dtype."""
    n = x.shape[0]
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    row, col, weight = gcn_norm_coo(n, rowptr, col, value, add_self_loops, normalize, compute)
    messages = x.to(compute)[col] * weight.unsqueeze(1)
    out = torch.zeros(n, x.shape[1], dtype=compute, device=x.device).index_add(0, row, messages)
    return out.to(x.dtype)
