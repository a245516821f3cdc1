"""Triton kernels of sigmoid attention: σ(q kᵀ·scale + bias) v, flash style.

Tensors are 3-D [B, L, D] with arbitrary strides (a batch stride of 0 is a broadcast operand).
Sigmoid needs no running row max or row sum, so the forward is a plain tiled loop over the keys:
S = q kᵀ (``tl.dot``), P = σ(S·scale + bias), O += P v with float32 accumulation; no Lq×Lk buffer.
The backward recomputes P tile by tile in two kernels that own their outputs (no atomics):
one program per key block accumulates dV = Pᵀ dO and dK = dSᵀ q over all query blocks, one
program per query block accumulates dQ = dS k, with dS = P(1−P)·(dO vᵀ)·scale.

A program keeps whole head-dim rows in registers (head dims up to 512); the block sizes shrink as
the head dims grow.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fact_fast.ops._support import triton_interpreting


@triton.jit
def _load_tile(ptr, rows, n_rows, cols, n_cols, s_row, s_col, UPCAST: tl.constexpr):
    """Tile [len(rows), len(cols)] of a strided matrix; rows ≥ n_rows and cols ≥ n_cols read as 0.

    Offsets in int64: an input view may have a large stride on either axis (e.g. a transposed k).
    """
    x = tl.load(ptr + rows.to(tl.int64)[:, None] * s_row + cols.to(tl.int64)[None, :] * s_col,
                mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0)
    if UPCAST:  # the interpreter's bf16 arithmetic is wrong: compute in float32 there
        x = x.to(tl.float32)
    return x


@triton.jit
def _program_tile(n_rows, BLOCK: tl.constexpr):
    """(batch index, first row) of this program in the flat grid batch × cdiv(n_rows, BLOCK).

    One grid axis: gridDim.y/z stop at 65535, the x axis does not (long sequences, large B).
    """
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(n_rows, BLOCK)
    return pid // blocks, (pid % blocks) * BLOCK


@triton.jit
def _attention_fwd_kernel(Q, K, V, Out, Lq, Lk, D, DV, scale, bias,
                          s_qb, s_qm, s_qd, s_kb, s_kn, s_kd, s_vb, s_vn, s_vd, s_ob, s_om, s_od,
                          RESIDUAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          BLOCK_DV: tl.constexpr):
    b, m0 = _program_tile(Lq, BLOCK_M)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)
    q = _load_tile(Q + b * s_qb, offs_m, Lq, offs_d, D, s_qm, s_qd, UPCAST)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for start in range(0, Lk, BLOCK_N):
        n = start + offs_n.to(tl.int64)
        kt = _load_tile(K + b * s_kb, offs_d, D, n, Lk, s_kd, s_kn, UPCAST)  # kᵀ [BLOCK_D, BLOCK_N]
        v = _load_tile(V + b * s_vb, n, Lk, offs_dv, DV, s_vn, s_vd, UPCAST)
        s = tl.dot(q, kt, input_precision=PRECISION)
        p = tl.sigmoid(s * scale + bias)
        # Keys past Lk meet zero rows of v, so their P needs no mask.
        acc += tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    if RESIDUAL:  # FACT's interface: E = q + attention (here D == DV)
        acc += q.to(tl.float32)
    tl.store(Out + b * s_ob + offs_m[:, None] * s_om + offs_dv[None, :] * s_od, acc.to(Out.dtype.element_ty),
             mask=(offs_m[:, None] < Lq) & (offs_dv[None, :] < DV))


@triton.jit
def _attention_bwd_kv_kernel(Q, K, V, GO, DK, DV_OUT, Lq, Lk, D, DV, scale, bias,
                             s_qb, s_qm, s_qd, s_kb, s_kn, s_kd, s_vb, s_vn, s_vd, s_gb, s_gm, s_gd,
                             s_dkb, s_dkn, s_dkd, s_dvb, s_dvn, s_dvd,
                             KV_SHARED: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_DV: tl.constexpr):
    b, n0 = _program_tile(Lk, BLOCK_N)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_m = tl.arange(0, BLOCK_M)
    k = _load_tile(K + b * s_kb, offs_n, Lk, offs_d, D, s_kn, s_kd, UPCAST)
    v = _load_tile(V + b * s_vb, offs_n, Lk, offs_dv, DV, s_vn, s_vd, UPCAST)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    for start in range(0, Lq, BLOCK_M):
        m = start + offs_m.to(tl.int64)
        q = _load_tile(Q + b * s_qb, m, Lq, offs_d, D, s_qm, s_qd, UPCAST)
        go = _load_tile(GO + b * s_gb, m, Lq, offs_dv, DV, s_gm, s_gd, UPCAST)
        # Transposed tiles [BLOCK_N, BLOCK_M]; query rows past Lq have q = dO = 0 and add nothing.
        pt = tl.sigmoid(tl.dot(k, tl.trans(q), input_precision=PRECISION) * scale + bias)
        dv += tl.dot(pt.to(go.dtype), go, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(go), input_precision=PRECISION)
        dst = pt * (1.0 - pt) * dpt * scale
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    key_ok = offs_n[:, None] < Lk
    if KV_SHARED:  # keys = values: both paths add into one gradient (D == DV)
        dv += dk
    else:
        tl.store(DK + b * s_dkb + offs_n[:, None] * s_dkn + offs_d[None, :] * s_dkd, dk.to(DK.dtype.element_ty),
                 mask=key_ok & (offs_d[None, :] < D))
    tl.store(DV_OUT + b * s_dvb + offs_n[:, None] * s_dvn + offs_dv[None, :] * s_dvd,
             dv.to(DV_OUT.dtype.element_ty), mask=key_ok & (offs_dv[None, :] < DV))


@triton.jit
def _attention_bwd_q_kernel(Q, K, V, GO, DQ, Lq, Lk, D, DV, scale, bias,
                            s_qb, s_qm, s_qd, s_kb, s_kn, s_kd, s_vb, s_vn, s_vd, s_gb, s_gm, s_gd,
                            s_dqb, s_dqm, s_dqd,
                            UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            BLOCK_DV: tl.constexpr):
    b, m0 = _program_tile(Lq, BLOCK_M)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)
    q = _load_tile(Q + b * s_qb, offs_m, Lq, offs_d, D, s_qm, s_qd, UPCAST)
    go = _load_tile(GO + b * s_gb, offs_m, Lq, offs_dv, DV, s_gm, s_gd, UPCAST)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, Lk, BLOCK_N):
        n = start + offs_n.to(tl.int64)
        k = _load_tile(K + b * s_kb, n, Lk, offs_d, D, s_kn, s_kd, UPCAST)
        v = _load_tile(V + b * s_vb, n, Lk, offs_dv, DV, s_vn, s_vd, UPCAST)
        p = tl.sigmoid(tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale + bias)
        dp = tl.dot(go, tl.trans(v), input_precision=PRECISION)
        ds = p * (1.0 - p) * dp * scale  # keys past Lk meet zero rows of k below
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(DQ + b * s_dqb + offs_m[:, None] * s_dqm + offs_d[None, :] * s_dqd, dq.to(DQ.dtype.element_ty),
             mask=(offs_m[:, None] < Lq) & (offs_d[None, :] < D))


def _block_dims(d: int, dv: int) -> tuple[int, int]:
    return max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))


def _config(block_d: int, block_dv: int, backward: bool, rows: int, dtype: torch.dtype) -> dict:
    """Tile sizes by head dim and dtype (every tl.dot dim ≥ 16, as GPUs require).

    The register footprint grows with BLOCK_M × (BLOCK_D + BLOCK_DV). float32 runs its products
    as exact FMA dots ("ieee"), which stage both operands in shared memory: its tiles are smaller
    and unpipelined (num_stages=1) so that every kernel stays under A100's 163 KiB of shared
    memory per block (sm_90 compiles: ≤ 132 KiB at head dim 512; 16-bit: ≤ 104 KiB).
    ``rows`` is Lq: short query sequences (FACT's 40 classes) get a smaller BLOCK_M instead of
    mostly masked rows.
    """
    widest = max(block_d, block_dv)
    if dtype == torch.float32:
        if widest <= 64:
            m, n, warps = (32, 32, 4) if backward else (64, 32, 4)
        elif widest <= 128:
            m, n, warps = 32, 32, 4
        elif widest <= 256:
            m, n, warps = (16, 16, 8) if backward else (16, 32, 8)
        else:
            m, n, warps = 16, 16, 8
        stages = 1
    else:
        if widest <= 64:
            m, n, warps = (64, 64, 4) if backward else (128, 64, 4)
        elif widest <= 128:
            m, n, warps = (32, 64, 4) if backward else (128, 64, 8)
        elif widest <= 256:
            m, n, warps = 32, 32, 8
        else:
            m, n, warps = 16, 32, 8
        stages = 3
    m = min(m, max(16, triton.next_power_of_2(rows)))
    return {"BLOCK_M": m, "BLOCK_N": n, "num_warps": warps, "num_stages": stages}


def _common(q: torch.Tensor) -> dict:
    return {"UPCAST": triton_interpreting(), "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32"}


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: float,
                      residual: bool) -> torch.Tensor:
    """q [B, Lq, d], k [B, Lk, d], v [B, Lk, dv] (any strides) -> [B, Lq, dv] (+ q when ``residual``)."""
    batch, lq, d = q.shape
    lk, dv = v.shape[1], v.shape[2]
    out = q.new_empty(batch, lq, dv)
    if out.numel() == 0:
        return out
    block_d, block_dv = _block_dims(d, dv)
    cfg = _config(block_d, block_dv, backward=False, rows=lq, dtype=q.dtype)
    grid = (batch * triton.cdiv(lq, cfg["BLOCK_M"]),)
    _attention_fwd_kernel[grid](q, k, v, out, lq, lk, d, dv, scale, bias, *q.stride(), *k.stride(), *v.stride(),
                                *out.stride(), RESIDUAL=residual, BLOCK_D=block_d, BLOCK_DV=block_dv,
                                **_common(q), **cfg)
    return out


def attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                       bias: float, kv_shared: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each shaped like its input; with ``kv_shared`` (k is v) dv holds dk + dv and
    dk is returned empty."""
    batch, lq, d = q.shape
    lk, dv = v.shape[1], v.shape[2]
    dq = q.new_empty(q.shape)
    dk = q.new_empty(0) if kv_shared else k.new_empty(k.shape)
    dvo = v.new_empty(v.shape)
    block_d, block_dv = _block_dims(d, dv)
    cfg = _config(block_d, block_dv, backward=True, rows=lq, dtype=q.dtype)
    common = dict(BLOCK_D=block_d, BLOCK_DV=block_dv, **_common(q), **cfg)
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    if dvo.numel() > 0:
        dk_strides = dvo.stride() if kv_shared else dk.stride()
        _attention_bwd_kv_kernel[(batch * triton.cdiv(lk, cfg["BLOCK_N"]),)](
            q, k, v, grad_out, dvo if kv_shared else dk, dvo, lq, lk, d, dv, scale, bias, *strides, *dk_strides,
            *dvo.stride(), KV_SHARED=kv_shared, **common)
    elif not kv_shared and dk.numel() > 0:  # dv is empty but d is not (dv = 0): dK = 0
        dk.zero_()
    if dq.numel() > 0:
        _attention_bwd_q_kernel[(batch * triton.cdiv(lq, cfg["BLOCK_M"]),)](
            q, k, v, grad_out, dq, lq, lk, d, dv, scale, bias, *strides, *dq.stride(), **common)
    return dq, dk, dvo
