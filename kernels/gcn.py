"""Triton kernels of gcn_propagate: the normalized CSR SpMM and the edge-value gradient.

One program per (ROWS consecutive rows, feature block); for each of its rows the loop over the
row's edges takes its bounds from rowptr and gathers a [BLOCK_E, BLOCK_F] tile of neighbour
features per step, accumulating in float32. Several rows per program amortize a program's start
over the short rows of sparse graphs (1M rows of ~10 edges in docs/design.md §4's large case). No atomics,
so results are deterministic. Every loaded index is masked against [0, nnz) / [0, n), so a
malformed CSR never reads out of bounds (the front-end has already rejected it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import interpreting, launch, multiprocessors

MAX_ROWS = 8  # rows per program


@triton.jit
def _row_bounds(rowptr_ptr, row, n, nnz):
    """Edge range [start, end) of ``row``, clamped to [0, nnz); empty for a row ≥ n."""
    ok = row < n
    start = tl.load(rowptr_ptr + row, mask=ok, other=0).to(tl.int64)
    end = tl.load(rowptr_ptr + row + 1, mask=ok, other=0).to(tl.int64)
    start = tl.minimum(tl.maximum(start, 0), nnz)
    end = tl.minimum(tl.maximum(end, start), nnz)
    return start, end


@triton.jit
def _spmm_kernel(x_ptr, rowptr_ptr, col_ptr, value_ptr, dinv_ptr, out_ptr, n, f, nnz,
                 HAS_VALUE: tl.constexpr, SELF_LOOP: tl.constexpr, ROWS: tl.constexpr, BLOCK_E: tl.constexpr,
                 BLOCK_F: tl.constexpr):
    offs_f = tl.program_id(1).to(tl.int64) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = offs_f < f
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        start, end = _row_bounds(rowptr_ptr, row, n, nnz)
        acc = tl.zeros([BLOCK_F], dtype=tl.float32)
        for e0 in range(start, end, BLOCK_E):
            offs_e = e0 + tl.arange(0, BLOCK_E)
            emask = offs_e < end
            c = tl.load(col_ptr + offs_e, mask=emask, other=0).to(tl.int64)
            valid = emask & (c >= 0) & (c < n)
            w = tl.load(dinv_ptr + c, mask=valid, other=0.0)
            if HAS_VALUE:
                w = w * tl.load(value_ptr + offs_e, mask=valid, other=0.0)
            xv = tl.load(x_ptr + c[:, None] * f + offs_f[None, :], mask=valid[:, None] & fmask[None, :],
                         other=0.0).to(tl.float32)
            acc += tl.sum(xv * w[:, None], axis=0)
        rmask = fmask & (row + 0 * offs_f < n)  # a vector test: the interpreter rejects tensor & scalar masks
        di = tl.load(dinv_ptr + row, mask=row < n, other=0.0)
        if SELF_LOOP:
            acc += di * tl.load(x_ptr + row * f + offs_f, mask=rmask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * f + offs_f, (di * acc).to(out_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _row_dot(a_ptr, b_ptr, f, row, n, BLOCK_F: tl.constexpr):
    """⟨a, b⟩ over f elements in float32 (0 for a row ≥ n)."""
    s = tl.zeros([BLOCK_F], dtype=tl.float32)
    for f0 in range(0, f, BLOCK_F):
        offs = f0 + tl.arange(0, BLOCK_F)
        m = (offs < f) & (row + 0 * offs < n)
        s += tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32) * tl.load(b_ptr + offs, mask=m,
                                                                                other=0.0).to(tl.float32)
    return tl.sum(s, axis=0)


@triton.jit
def _value_grad_kernel(grad_ptr, x_ptr, dx_ptr, rowptr_ptr, col_ptr, value_ptr, dinv_ptr, dvalue_ptr, n, f, nnz,
                       HAS_VALUE: tl.constexpr, SELF_LOOP: tl.constexpr, NORMALIZE: tl.constexpr,
                       ROWS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    # d value_e = dinv_r dinv_c <g_r, x_c> + t_r, t_r = -1/2 dinv_r^2 (dinv_r a_r + <dx_r, x_r> + s dinv_r^2 <g_r, x_r>)
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        start, end = _row_bounds(rowptr_ptr, row, n, nnz)
        di = tl.load(dinv_ptr + row, mask=row < n, other=0.0)
        a = tl.zeros([BLOCK_E], dtype=tl.float32)  # per-lane partial sums of a_r
        for e0 in range(start, end, BLOCK_E):
            offs_e = e0 + tl.arange(0, BLOCK_E)
            emask = offs_e < end
            c = tl.load(col_ptr + offs_e, mask=emask, other=0).to(tl.int64)
            valid = emask & (c >= 0) & (c < n)
            dc = tl.load(dinv_ptr + c, mask=valid, other=0.0)
            p = tl.zeros([BLOCK_E], dtype=tl.float32)
            for f0 in range(0, f, BLOCK_F):
                offs_f = f0 + tl.arange(0, BLOCK_F)
                fmask = offs_f < f
                g = tl.load(grad_ptr + row * f + offs_f, mask=fmask, other=0.0).to(tl.float32)
                xv = tl.load(x_ptr + c[:, None] * f + offs_f[None, :], mask=valid[:, None] & fmask[None, :],
                             other=0.0).to(tl.float32)
                p += tl.sum(xv * g[None, :], axis=1)
            tl.store(dvalue_ptr + offs_e, di * dc * p, mask=emask)
            if HAS_VALUE:
                w = tl.load(value_ptr + offs_e, mask=valid, other=0.0)
                a += w * dc * p
            else:
                a += dc * p
        if NORMALIZE:
            inner = di * tl.sum(a, axis=0) + _row_dot(dx_ptr + row * f, x_ptr + row * f, f, row, n, BLOCK_F)
            if SELF_LOOP:
                inner += di * di * _row_dot(grad_ptr + row * f, x_ptr + row * f, f, row, n, BLOCK_F)
            t = -0.5 * di * di * inner
            tl.debug_barrier()  # the stores above, possibly by other threads of this program, are visible
            for e0 in range(start, end, BLOCK_E):
                offs_e = e0 + tl.arange(0, BLOCK_E)
                emask = offs_e < end
                tl.store(dvalue_ptr + offs_e, tl.load(dvalue_ptr + offs_e, mask=emask, other=0.0) + t, mask=emask)


def _blocks(f: int) -> tuple[int, int]:
    block_f = min(128, triton.next_power_of_2(max(f, 1)))
    block_e = 16 if interpreting() else max(8, 2048 // block_f)
    return block_e, block_f


def _rows_per_program(n: int, feature_blocks: int, device: torch.device) -> int:
    """Rows per program: up to MAX_ROWS while the grid keeps ≥ 8 programs per multiprocessor."""
    rows, target = 1, 8 * multiprocessors(device)
    while rows < MAX_ROWS and triton.cdiv(n, 2 * rows) * feature_blocks >= target:
        rows *= 2
    return rows


def spmm(x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None, dinv: torch.Tensor,
         add_self_loops: bool) -> torch.Tensor:
    """out [n, f] (x.dtype) = dinv ⊙ ((A ⊙ dinv_col) x + s · dinv ⊙ x); value and dinv float32."""
    x, rowptr, col, dinv = x.contiguous(), rowptr.contiguous(), col.contiguous(), dinv.contiguous()
    n, f = x.shape
    out = torch.empty_like(x)
    if n == 0 or f == 0:
        return out
    block_e, block_f = _blocks(f)
    feature_blocks = triton.cdiv(f, block_f)
    rows = _rows_per_program(n, feature_blocks, x.device)
    value_arg = value.contiguous() if value is not None else dinv
    launch(_spmm_kernel, (triton.cdiv(n, rows), feature_blocks), x, rowptr, col, value_arg, dinv, out, n, f,
           col.shape[0], HAS_VALUE=value is not None, SELF_LOOP=add_self_loops, ROWS=rows, BLOCK_E=block_e,
           BLOCK_F=block_f, configs=[({}, 4, 3)])
    return out


def value_grad(grad: torch.Tensor, x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor,
               value: torch.Tensor | None, dinv: torch.Tensor, dx: torch.Tensor, add_self_loops: bool,
               normalize: bool) -> torch.Tensor:
    """d value [nnz] (float32), including the degree-normalization terms when ``normalize``."""
    grad, x, dx = grad.contiguous(), x.contiguous(), dx.contiguous()
    rowptr, col, dinv = rowptr.contiguous(), col.contiguous(), dinv.contiguous()
    n, f = x.shape
    dvalue = torch.zeros(col.shape[0], dtype=dinv.dtype, device=x.device)
    if n == 0:
        return dvalue
    block_e, block_f = _blocks(f)
    block_e = min(block_e, 64)
    rows = _rows_per_program(n, 1, x.device)
    value_arg = value.contiguous() if value is not None else dinv
    launch(_value_grad_kernel, (triton.cdiv(n, rows),), grad, x, dx, rowptr, col, value_arg, dinv, dvalue, n, f,
           col.shape[0], HAS_VALUE=value is not None, SELF_LOOP=add_self_loops, NORMALIZE=normalize, ROWS=rows,
           BLOCK_E=block_e, BLOCK_F=block_f, configs=[({}, 4, 3)])
    return dvalue
