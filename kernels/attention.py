"""Triton kernels of sigmoid attention: σ(q kᵀ·scale + bias) v, flash style.

Tensors are 3-D [B, L, D] with arbitrary strides (a batch stride of 0 is a broadcast operand).
Sigmoid needs no running row max or row sum, so the forward is a plain tiled loop over the keys:
S = q kᵀ (``tl.dot``), P = σ(S·scale + bias), O += P v with float32 accumulation; no Lq×Lk buffer.
The backward recomputes P tile by tile in two kernels that own their outputs (no atomics):
one program per key block accumulates dV = Pᵀ dO and dK = dSᵀ q over all query blocks, one
program per query block accumulates dQ = dS k, with dS = P(1−P)·(dO vᵀ)·scale. The dQ kernel is
not launched when q needs no gradient.

The sigmoid. ``tl.sigmoid`` costs two special-function (MUFU) instructions per score, exp and a
reciprocal; at d = 128 that is as much time as both tensor-core products. Here
σ(x) = ½ + ½·tanh(x/2), with the ½ folded into the score's scale and bias (t = s·scale/2 + bias/2,
one FMA; scale is not folded into the 16-bit q tile, which would round q once more to save that
FMA), and for float16/bfloat16 tanh is the one-instruction ``tanh.approx.f32`` (inline PTX; max
relative error about 2⁻¹¹, the size of the float16 rounding P gets before P·v anyway). float32
keeps the exact sigmoid, and so does the interpreter, which cannot run PTX.

Tiles. A program keeps whole head-dim rows in registers (head dims up to 512). For 16-bit inputs
the tiles and warp counts are autotuned on the GPU, once per (Lq, Lk, d, dv, dtype): up to
d = 128 the forward tries BLOCK_N ∈ {64, 128} with 64- or 128-row query tiles and 4 or 8 warps;
the dQ kernel uses 64-row query tiles up to d = 256 and the dK/dV kernel 64-key tiles up to
d = 128, so both run Hopper warpgroup MMAs. float32, whose exact products are FMA dots staged in
shared memory, has one fixed configuration per head dim. See ``_forward_configs`` /
``_backward_configs``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import interpreting, launch


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
def _probability(s, half_scale, half_bias, FAST_TANH: tl.constexpr):
    """σ(s·scale + bias) = ½ + ½·tanh(s·scale/2 + bias/2), in float32."""
    t = s * half_scale + half_bias
    if FAST_TANH:
        th = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [t], dtype=tl.float32, is_pure=True,
                                       pack=1)
        return 0.5 + 0.5 * th
    else:
        return tl.sigmoid(t + t)


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
                          FAST_TANH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    b, m0 = _program_tile(Lq, BLOCK_M)
    half_scale = 0.5 * scale
    half_bias = 0.5 * bias
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
        p = _probability(tl.dot(q, kt, input_precision=PRECISION), half_scale, half_bias, FAST_TANH)
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
                             FAST_TANH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    b, n0 = _program_tile(Lk, BLOCK_N)
    half_scale = 0.5 * scale
    half_bias = 0.5 * bias
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
        pt = _probability(tl.dot(k, tl.trans(q), input_precision=PRECISION), half_scale, half_bias, FAST_TANH)
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
                            UPCAST: tl.constexpr, PRECISION: tl.constexpr, FAST_TANH: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            BLOCK_DV: tl.constexpr):
    b, m0 = _program_tile(Lq, BLOCK_M)
    half_scale = 0.5 * scale
    half_bias = 0.5 * bias
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
        p = _probability(tl.dot(q, tl.trans(k), input_precision=PRECISION), half_scale, half_bias, FAST_TANH)
        dp = tl.dot(go, tl.trans(v), input_precision=PRECISION)
        ds = p * (1.0 - p) * dp * scale  # keys past Lk meet zero rows of k below
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(DQ + b * s_dqb + offs_m[:, None] * s_dqm + offs_d[None, :] * s_dqd, dq.to(DQ.dtype.element_ty),
             mask=(offs_m[:, None] < Lq) & (offs_d[None, :] < D))


def _block_dims(d: int, dv: int) -> tuple[int, int]:
    return max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))


def _rows_cap(block: int, rows: int) -> int:
    """A short sequence (FACT's 40 classes) gets a smaller block instead of mostly masked rows."""
    return min(block, max(16, triton.next_power_of_2(rows)))


def _unique(configs: list) -> list:
    """Configs with their first occurrence kept (capping BLOCK_M by Lq can make two equal)."""
    seen, out = set(), []
    for block, warps, stages in configs:
        key = (tuple(sorted(block.items())), warps, stages)
        if key not in seen:
            seen.add(key)
            out.append((block, warps, stages))
    return out


def _forward_configs(widest: int, dtype: torch.dtype, lq: int) -> list:
    """Candidate ({"BLOCK_M", "BLOCK_N"}, num_warps, num_stages) configs of the forward.

    The register footprint grows with BLOCK_M × (BLOCK_D + BLOCK_DV). float32 runs its products
    as exact FMA dots ("ieee") that stage both operands in shared memory: smaller, unpipelined
    tiles keep every kernel under A100's 163 KiB per block (sm_90 compiles: ≤ 132 KiB at
    d = 512). 16-bit tiles of 64+ query rows use Hopper's warpgroup MMA. Every tl.dot dim is ≥ 16.
    """
    if dtype == torch.float32:
        m, n, warps = (64, 32, 4) if widest <= 64 else (32, 32, 4) if widest <= 128 else \
            (16, 32, 8) if widest <= 256 else (16, 16, 8)
        return [({"BLOCK_M": _rows_cap(m, lq), "BLOCK_N": n}, warps, 1)]
    if widest <= 64:
        cands = ((128, 64, 8), (128, 64, 4), (128, 128, 8), (64, 64, 4))
    elif widest <= 128:
        cands = ((128, 64, 8), (128, 128, 8), (64, 64, 4), (64, 128, 4))
    elif widest <= 256:
        cands = ((32, 32, 8), (64, 32, 8), (32, 64, 8))
    else:
        cands = ((16, 32, 8),)
    return _unique([({"BLOCK_M": _rows_cap(m, lq), "BLOCK_N": n}, warps, 3) for m, n, warps in cands])


def _backward_configs(widest: int, dtype: torch.dtype, lq: int) -> tuple[tuple[int, list], tuple[int, list]]:
    """((BLOCK_M, configs over BLOCK_N) of the dQ kernel, (BLOCK_N, configs over BLOCK_M) of the dK/dV
    kernel): the dimension a kernel's grid is split over is fixed, the inner loop's tile is tuned."""
    if dtype == torch.float32:
        m, n, warps = (32, 32, 4) if widest <= 128 else (16, 16, 8)
        return (_rows_cap(m, lq), [({"BLOCK_N": n}, warps, 1)]), (n, [({"BLOCK_M": _rows_cap(m, lq)}, warps, 1)])
    if widest <= 128:  # 64-row tiles: one warpgroup MMA on Hopper for dQ, and for dK/dV
        q_side = (_rows_cap(64, lq), [({"BLOCK_N": n}, w, 3) for n, w in ((64, 4), (32, 4), (64, 8))])
        kv_side = (64, [({"BLOCK_M": _rows_cap(m, lq)}, w, 3) for m, w in ((32, 4), (64, 4), (64, 8))])
    elif widest <= 256:
        q_side = (_rows_cap(64, lq), [({"BLOCK_N": n}, 8, 2) for n in (32, 16)])
        kv_side = (32, [({"BLOCK_M": _rows_cap(32, lq)}, 8, 3)])
    else:
        q_side = (_rows_cap(16, lq), [({"BLOCK_N": 32}, 8, 3)])
        kv_side = (32, [({"BLOCK_M": _rows_cap(16, lq)}, 8, 3)])
    return q_side, kv_side


def _common(q: torch.Tensor) -> dict:
    interp = interpreting()
    return {"UPCAST": interp, "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
            "FAST_TANH": q.dtype != torch.float32 and not interp}


_KEY = ("Lq", "Lk", "D", "DV")


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: float,
                      residual: bool) -> torch.Tensor:
    """q [B, Lq, d], k [B, Lk, d], v [B, Lk, dv] (any strides) -> [B, Lq, dv] (+ q when ``residual``)."""
    batch, lq, d = q.shape
    lk, dv = v.shape[1], v.shape[2]
    out = q.new_empty(batch, lq, dv)
    if out.numel() == 0:
        return out
    block_d, block_dv = _block_dims(d, dv)
    launch(_attention_fwd_kernel, lambda meta: (batch * triton.cdiv(lq, meta["BLOCK_M"]),), q, k, v, out, lq, lk,
           d, dv, scale, bias, *q.stride(), *k.stride(), *v.stride(), *out.stride(), RESIDUAL=residual,
           BLOCK_D=block_d, BLOCK_DV=block_dv, **_common(q), configs=_forward_configs(max(block_d, block_dv),
                                                                                       q.dtype, lq), key=_KEY)
    return out


def attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                       bias: float, kv_shared: bool, need_dq: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each shaped like its input; with ``kv_shared`` (k is v) dv holds dk + dv and
    dk is returned empty. Without ``need_dq`` dq is returned empty and its kernel does not run."""
    batch, lq, d = q.shape
    lk, dv = v.shape[1], v.shape[2]
    dq = q.new_empty(q.shape if need_dq else (0,))
    dk = q.new_empty(0) if kv_shared else k.new_empty(k.shape)
    dvo = v.new_empty(v.shape)
    block_d, block_dv = _block_dims(d, dv)
    (block_m, q_configs), (block_n, kv_configs) = _backward_configs(max(block_d, block_dv), q.dtype, lq)
    common = dict(BLOCK_D=block_d, BLOCK_DV=block_dv, **_common(q))
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    if dvo.numel() > 0:
        dk_strides = dvo.stride() if kv_shared else dk.stride()
        launch(_attention_bwd_kv_kernel, (batch * triton.cdiv(lk, block_n),), q, k, v, grad_out,
               dvo if kv_shared else dk, dvo, lq, lk, d, dv, scale, bias, *strides, *dk_strides, *dvo.stride(),
               KV_SHARED=kv_shared, BLOCK_N=block_n, **common, configs=_unique(kv_configs), key=_KEY)
    elif not kv_shared and dk.numel() > 0:  # dv is empty but d is not (dv = 0): dK = 0
        dk.zero_()
    if dq.numel() > 0:
        launch(_attention_bwd_q_kernel, (batch * triton.cdiv(lq, block_m),), q, k, v, grad_out, dq, lq, lk, d, dv,
               scale, bias, *strides, *dq.stride(), BLOCK_M=block_m, **common, configs=q_configs, key=_KEY)
    return dq, dk, dvo
