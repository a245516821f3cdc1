"""Triton kernels of the VQ family: nearest-codeword search (+ gather) and the residual backward.

Search (``nearest``; tile shapes autotuned on GPU). A program owns ``BLOCK_M`` rows of z and walks
the codebook in tiles of ``BLOCK_N`` codewords; ``tl.dot`` gives each tile of ⟨z, p⟩ with fp32
accumulation, and a running min/argmin of the estimate ‖p‖² − 2⟨z, p⟩ is kept per row
(``tl.argmin`` takes the first of equal values and a later tile must be strictly smaller, so ties
go to the lowest index). ‖p‖² is computed once per call. Nothing of size N×K exists.

* float32 inputs take one TF32 tensor-core pass (10-bit mantissa operands, fp32 accumulation)
  instead of three (``tf32x3``, which ran three serialized MMAs per step at ~250 registers with
  spills on sm_90). TF32 estimates can misorder codewords whose distances are close, so each
  row keeps its two best candidates and the epilogue re-ranks them on exact fp32 ‖z − p‖²
  (ties to the lower index). The result is the exact argmin unless two other codewords both
  beat the true nearest one in the TF32 estimate. float16/bfloat16 products are exact in
  fp32, so those rows keep one candidate.
* When the z tile fits (``BLOCK_M`` × next_pow2(d) ≤ 64 KiB), it is loaded once and stays
  resident across the codebook sweep, one ``tl.dot`` over the whole of d per codebook tile;
  wider rows walk d in ``BLOCK_D`` chunks and re-read the z chunk per codebook tile.
* When N is small (FACT: N = 6272 gives 98 row blocks of 64 for 132 SMs), the codebook is split
  over a second grid axis into ``SPLITS`` contiguous ranges; each program writes its candidates
  (estimate, index), and a merge kernel picks each row's best by estimate (ties: lower index)
  and re-ranks as above.

The epilogue (in the search kernel, or in the merge kernel after a split) writes the index, the
exact ‖z − p_index‖² and, for ``vq_quantize``, z_q = codebook[index].

Backward (``residual_backward``): grad_z = grad_out + w_z·(z − p_k) elementwise; grad_codebook[k] =
Σ_{i: k_i = k} w_cb,i·(p_k − z_i), either by fp32 atomics (fast, order-dependent) or, deterministic, as
a segmented reduction over the rows sorted by index: one program per (codeword, d-block) sums its
segment in fixed blocks of rows, so the result is bitwise reproducible.

All launchers take CPU tensors under ``TRITON_INTERPRET=1`` (tests) and CUDA tensors otherwise. The
interpreter's fp32 ``tl.dot`` is exact; there the search drops the 13 low mantissa bits of its
fp32 operands (``ROUND_TF32``) so that tests see TF32-like estimates.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import interpreting, launch, multiprocessors

MAX_SPLITS = 8
RESIDENT_Z_BYTES = 64 * 1024  # largest z tile (BLOCK_M × next_pow2(d) elements) kept resident


@triton.jit
def _operand(x, TO_F32: tl.constexpr, ROUND_TF32: tl.constexpr):
    if TO_F32:  # the interpreter's bf16/fp16 arithmetic is not fp32-accumulated
        x = x.to(tl.float32)
    if ROUND_TF32:  # what a TF32 tensor-core product reads of an fp32 operand (truncation)
        x = (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    return x


@triton.jit
def _finish(z_ptr, cb_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr, rows, rmask, j1, j2, K, D,
            s_zn, s_zd, s_cn, s_cd, RERANK: tl.constexpr, WRITE_DIST: tl.constexpr, WRITE_Q: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Epilogue for candidate indices j1 (best estimate) and, with RERANK, j2 (an index ≥ K: none).
    Keeps the one with the smaller exact fp32 ‖z − p‖² (equal distances: the lower index; a NaN
    distance never replaces j1) and writes it, its exact distance and, with WRITE_Q, z_q."""
    ok1 = rmask & (j1 < K)
    d1 = tl.zeros([BLOCK_M], tl.float32)
    if RERANK:
        ok2 = rmask & (j2 < K)
        d2 = tl.zeros([BLOCK_M], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
            dm = (ds < D)[None, :]
            a = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd, mask=rmask[:, None] & dm,
                        other=0.0).to(tl.float32)
            p1 = tl.load(cb_ptr + j1[:, None] * s_cn + ds[None, :] * s_cd, mask=ok1[:, None] & dm, other=0.0)
            p2 = tl.load(cb_ptr + j2[:, None] * s_cn + ds[None, :] * s_cd, mask=ok2[:, None] & dm, other=0.0)
            diff1 = a - p1.to(tl.float32)
            diff2 = a - p2.to(tl.float32)
            d1 += tl.sum(diff1 * diff1, axis=1)
            d2 += tl.sum(diff2 * diff2, axis=1)
        pick2 = ok2 & ((d2 < d1) | ((d2 == d1) & (j2 < j1)))
        j = tl.where(pick2, j2, j1)
        exact = tl.where(pick2, d2, d1)
        if WRITE_Q:
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
                m2 = rmask[:, None] & (ds < D)[None, :]
                p = tl.load(cb_ptr + j[:, None] * s_cn + ds[None, :] * s_cd, mask=m2, other=0.0)
                tl.store(q_ptr + rows[:, None] * D + ds[None, :], p, mask=m2)
    else:
        j = j1
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
            m2 = rmask[:, None] & (ds < D)[None, :]
            a = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd, mask=m2, other=0.0)
            p = tl.load(cb_ptr + j[:, None] * s_cn + ds[None, :] * s_cd, mask=ok1[:, None] & m2, other=0.0)
            diff = a.to(tl.float32) - p.to(tl.float32)
            d1 += tl.sum(diff * diff, axis=1)
            if WRITE_Q:
                tl.store(q_ptr + rows[:, None] * D + ds[None, :], p, mask=m2)
        exact = d1
    tl.store(index_ptr + rows, j, mask=rmask)
    if WRITE_DIST:
        tl.store(dist_ptr + rows, exact.to(dist_ptr.dtype.element_ty), mask=rmask)
    if WRITE_Q:
        tl.store(dist_f32_ptr + rows, exact, mask=rmask)


@triton.jit
def _search_kernel(z_ptr, cb_ptr, pn_ptr, cand_val_ptr, cand_idx_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr,
                   N, K, D, N_BUCKET, s_zn, s_zd, s_cn, s_cd,
                   SPLITS: tl.constexpr, WIDTH: tl.constexpr, TOP2: tl.constexpr, Z_RESIDENT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   TO_F32: tl.constexpr, ROUND_TF32: tl.constexpr, PRECISION: tl.constexpr,
                   WRITE_DIST: tl.constexpr, WRITE_Q: tl.constexpr, EPILOGUE_D: tl.constexpr):
    """Grid (row blocks, SPLITS). With SPLITS > 1 each row's candidates go to columns
    [split·WIDTH/SPLITS, ...) of cand_val / cand_idx [N, WIDTH]. N_BUCKET (next_pow2(N)) is only
    read by the autotuner's key."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rmask = rows < N
    split = tl.program_id(1).to(tl.int64)
    span = tl.cdiv(tl.cdiv(K, SPLITS), BLOCK_N) * BLOCK_N  # codewords per split, whole tiles
    lo = split * span
    hi = tl.minimum(lo + span, K)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    # A row of NaNs keeps the split's first codeword (codeword 0 overall), as torch.argmin reports.
    best_j = tl.zeros([BLOCK_M], tl.int64) + lo
    second = tl.full([BLOCK_M], float("inf"), tl.float32)
    second_j = tl.zeros([BLOCK_M], tl.int64) + K  # none yet
    if Z_RESIDENT:  # BLOCK_D covers d: the z tile is read once for the whole sweep
        dz = tl.arange(0, BLOCK_D).to(tl.int64)
        zt = tl.load(z_ptr + rows[:, None] * s_zn + dz[None, :] * s_zd,
                     mask=rmask[:, None] & (dz < D)[None, :], other=0.0)
        zt = _operand(zt, TO_F32, ROUND_TF32)
    for n0 in range(lo, hi, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < hi
        if Z_RESIDENT:
            b = tl.load(cb_ptr + cols[None, :] * s_cn + dz[:, None] * s_cd,
                        mask=cmask[None, :] & (dz < D)[:, None], other=0.0)
            acc = tl.dot(zt, _operand(b, TO_F32, ROUND_TF32), input_precision=PRECISION)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)  # ds * s_zd passes 2^31 for a large transposed z
                dmask = ds < D
                a = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd,
                            mask=rmask[:, None] & dmask[None, :], other=0.0)
                b = tl.load(cb_ptr + cols[None, :] * s_cn + ds[:, None] * s_cd,
                            mask=cmask[None, :] & dmask[:, None], other=0.0)
                acc = tl.dot(_operand(a, TO_F32, ROUND_TF32), _operand(b, TO_F32, ROUND_TF32), acc,
                             input_precision=PRECISION)
        pn = tl.load(pn_ptr + cols, mask=cmask, other=float("inf"))
        est = pn[None, :] - 2.0 * acc
        # NaN estimates (NaNs in z or p) count as +inf, so a row of NaNs keeps its first candidate
        # on every device (the interpreter's argmin would reject an all-NaN row).
        val = tl.where(cmask[None, :] & (est == est), est, float("inf"))
        t1 = tl.min(val, axis=1)
        a1 = tl.argmin(val, axis=1, tie_break_left=True)
        j1 = n0 + a1.to(tl.int64)
        take = t1 < best
        if TOP2:  # merge the tile's two best into the row's two best; on equal estimates the
            # earlier (lower-index) candidate stays ahead
            val2 = tl.where(tl.arange(0, BLOCK_N)[None, :] == a1[:, None], float("inf"), val)
            t2 = tl.min(val2, axis=1)
            j2 = n0 + tl.argmin(val2, axis=1, tie_break_left=True).to(tl.int64)
            keep_old = t2 >= best
            new_second = tl.where(take, tl.where(keep_old, best, t2), tl.where(t1 < second, t1, second))
            new_second_j = tl.where(take, tl.where(keep_old, best_j, j2), tl.where(t1 < second, j1, second_j))
            second = new_second
            second_j = new_second_j
        best_j = tl.where(take, j1, best_j)
        best = tl.where(take, t1, best)
    if SPLITS == 1:
        _finish(z_ptr, cb_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr, rows, rmask, best_j, second_j, K, D,
                s_zn, s_zd, s_cn, s_cd, TOP2, WRITE_DIST, WRITE_Q, BLOCK_M, EPILOGUE_D)
    else:
        col = rows * WIDTH + split * (WIDTH // SPLITS)
        tl.store(cand_val_ptr + col, best, mask=rmask)
        tl.store(cand_idx_ptr + col, best_j, mask=rmask)
        if TOP2:
            tl.store(cand_val_ptr + col + 1, second, mask=rmask)
            tl.store(cand_idx_ptr + col + 1, second_j, mask=rmask)


@triton.jit
def _merge_kernel(z_ptr, cb_ptr, cand_val_ptr, cand_idx_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr,
                  N, K, D, s_zn, s_zd, s_cn, s_cd, WIDTH: tl.constexpr, TOP2: tl.constexpr,
                  WRITE_DIST: tl.constexpr, WRITE_Q: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_W: tl.constexpr, EPILOGUE_D: tl.constexpr):
    """The best one (TOP2: two) of each row's WIDTH split candidates by estimate, then the epilogue."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rmask = rows < N
    w = tl.arange(0, BLOCK_W)
    m2 = rmask[:, None] & (w < WIDTH)[None, :]
    val = tl.load(cand_val_ptr + rows[:, None] * WIDTH + w[None, :], mask=m2, other=float("inf"))
    idx = tl.load(cand_idx_ptr + rows[:, None] * WIDTH + w[None, :], mask=m2, other=K)
    t1 = tl.min(val, axis=1)
    j1 = tl.min(tl.where(val == t1[:, None], idx, K), axis=1)
    j2 = j1
    if TOP2:
        val = tl.where(idx == j1[:, None], float("inf"), val)
        t2 = tl.min(val, axis=1)
        j2 = tl.min(tl.where((val == t2[:, None]) & (idx != j1[:, None]), idx, K), axis=1)
    _finish(z_ptr, cb_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr, rows, rmask, j1, j2, K, D,
            s_zn, s_zd, s_cn, s_cd, TOP2, WRITE_DIST, WRITE_Q, BLOCK_M, EPILOGUE_D)


@triton.jit
def _residual_tile(z_ptr, cb_ptr, index_ptr, w_ptr, w_stride, N, K, D, s_zn, s_zd, s_cn, s_cd,
                   BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (BLOCK_M rows × BLOCK_D features) tile of this program: rows, ds, in-bounds mask, index j,
    row weight w and w·(z − p_j) in fp32. Rows whose index is outside [0, K) (only possible on a
    direct op call) contribute 0 and read no codeword, as in the CUDA kernels."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    ds = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    rmask = rows < N
    m2 = rmask[:, None] & (ds < D)[None, :]
    j = tl.load(index_ptr + rows, mask=rmask, other=0)
    jok = m2 & ((j >= 0) & (j < K))[:, None]
    w = tl.load(w_ptr + rows * w_stride, mask=rmask, other=0.0)
    zt = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd, mask=jok, other=0.0).to(tl.float32)
    p = tl.load(cb_ptr + j[:, None] * s_cn + ds[None, :] * s_cd, mask=jok, other=0.0).to(tl.float32)
    return rows, ds, m2, jok, j, w[:, None] * (zt - p)


@triton.jit
def _grad_z_kernel(z_ptr, cb_ptr, index_ptr, go_ptr, w_ptr, w_stride, gz_ptr,
                   N, K, D, s_zn, s_zd, s_cn, s_cd, s_gn, s_gd,
                   HAS_GO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, ds, m2, jok, j, g = _residual_tile(z_ptr, cb_ptr, index_ptr, w_ptr, w_stride, N, K, D,
                                             s_zn, s_zd, s_cn, s_cd, BLOCK_M, BLOCK_D)
    if HAS_GO:
        g += tl.load(go_ptr + rows[:, None] * s_gn + ds[None, :] * s_gd, mask=m2, other=0.0).to(tl.float32)
    tl.store(gz_ptr + rows[:, None] * D + ds[None, :], g.to(gz_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _grad_codebook_atomic_kernel(z_ptr, cb_ptr, index_ptr, w_ptr, w_stride, acc_ptr,
                                 N, K, D, s_zn, s_zd, s_cn, s_cd,
                                 BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, ds, m2, jok, j, g = _residual_tile(z_ptr, cb_ptr, index_ptr, w_ptr, w_stride, N, K, D,
                                             s_zn, s_zd, s_cn, s_cd, BLOCK_M, BLOCK_D)
    # Relaxed: the accumulator is only read after the kernel, so no ordering with other memory is needed.
    tl.atomic_add(acc_ptr + j[:, None] * D + ds[None, :], -g, mask=jok, sem="relaxed")


@triton.jit
def _grad_codebook_sorted_kernel(z_ptr, cb_ptr, order_ptr, offsets_ptr, w_ptr, w_stride, gc_ptr,
                                 D, s_zn, s_zd, s_cn, s_cd,
                                 BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    ds = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    dmask = ds < D
    start = tl.load(offsets_ptr + j)
    end = tl.load(offsets_ptr + j + 1)
    p = tl.load(cb_ptr + j * s_cn + ds * s_cd, mask=dmask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for o0 in range(start, end, BLOCK_R):
        offs = o0 + tl.arange(0, BLOCK_R).to(tl.int64)
        omask = offs < end
        i = tl.load(order_ptr + offs, mask=omask, other=0)
        w = tl.load(w_ptr + i * w_stride, mask=omask, other=0.0)
        zt = tl.load(z_ptr + i[:, None] * s_zn + ds[None, :] * s_zd,
                     mask=omask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(tl.where(omask[:, None], w[:, None] * (p[None, :] - zt), 0.0), axis=0)
    tl.store(gc_ptr + j * D + ds, acc.to(gc_ptr.dtype.element_ty), mask=dmask)


# GPU tile shapes (BLOCK_M, BLOCK_N, BLOCK_D, num_warps, num_stages) tried once per
# (N bucket, K, d, dtype, splits, outputs); configs needing more shared memory than the device has
# are skipped by the autotuner, and the first of each list fits an A100. The interpreter runs one
# small config. The float32 chunked search is register-bound: ptxas (sm_80) spills 48 B per thread
# with the first config, 0.1-0.7 KB with the others (16-bit: none), so the order is by spills.
_CHUNKED_CONFIGS = ((128, 64, 32, 8, 3), (64, 64, 64, 8, 3), (64, 64, 32, 4, 3), (64, 128, 64, 8, 3),
                    (128, 128, 32, 8, 4))
# Resident z: BLOCK_D = next_pow2(d) is fixed by the launcher; each stage holds a BLOCK_N × BLOCK_D
# codebook tile beside the z tile.
_RESIDENT_CONFIGS = ((64, 32, 8, 2), (64, 64, 8, 2), (128, 64, 8, 2), (64, 32, 4, 2), (128, 32, 8, 3))
_INTERPRETER_BLOCK = 32
_MERGE_ROWS = 32
# Elements of one [BLOCK_M, EPILOGUE_D] tile of the exact re-rank, which holds a z tile and two
# codeword tiles at once: 64 × 64 pushed the resident float32 search to 255 registers and ~1 KB of
# spills per thread (ptxas, sm_80/sm_90), 2048 elements leave it at 118-158 registers with 8 warps.
_EPILOGUE_TILE = 2048


def _epilogue_d(block_m: int) -> int:
    return max(16, _EPILOGUE_TILE // block_m)


def _z_tile_bytes(rows: int, d: int, dtype: torch.dtype) -> int:
    return rows * max(16, triton.next_power_of_2(d)) * torch.empty(0, dtype=dtype).element_size()


def resident(d: int, dtype: torch.dtype) -> bool:
    """The search keeps a 64-row z tile resident for rows of d features of this dtype."""
    return _z_tile_bytes(64, d, dtype) <= RESIDENT_Z_BYTES


def search_configs(d: int, dtype: torch.dtype) -> list:
    """Autotune candidates of the search kernel as (block sizes, num_warps, num_stages)."""
    if resident(d, dtype):
        block_d = max(16, triton.next_power_of_2(d))
        return [({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_D": block_d, "EPILOGUE_D": _epilogue_d(m)}, w, st)
                for m, n, w, st in _RESIDENT_CONFIGS if _z_tile_bytes(m, d, dtype) <= RESIDENT_Z_BYTES]
    return [({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_D": bd, "EPILOGUE_D": _epilogue_d(m)}, w, st)
            for m, n, bd, w, st in _CHUNKED_CONFIGS]


def codebook_splits(n: int, k: int, multiprocessors: int, min_codewords: int) -> int:
    """Codebook ranges per row block: enough programs to fill the device when N is small, each range
    at least ``min_codewords`` long, at most MAX_SPLITS."""
    row_blocks = triton.cdiv(n, 64)
    if row_blocks >= multiprocessors:
        return 1
    return max(1, min(triton.cdiv(multiprocessors, row_blocks), k // min_codewords, MAX_SPLITS))


def nearest(z: torch.Tensor, codebook: torch.Tensor, *, want_dist: bool, want_quantized: bool,
            splits: int | None = None):
    """z [N, d] (any strides), codebook [K, d] -> (index int64 [N], dist [N] z.dtype | None,
    dist_f32 [N] | None, z_q [N, d] contiguous | None). ``splits`` overrides the codebook split
    count (tests)."""
    n, d = z.shape
    k = codebook.shape[0]
    index = torch.empty(n, dtype=torch.int64, device=z.device)
    dist = torch.empty(n, dtype=z.dtype, device=z.device) if want_dist else None
    dist_f32 = torch.empty(n, dtype=torch.float32, device=z.device) if want_quantized else None
    zq = torch.empty(n, d, dtype=z.dtype, device=z.device) if want_quantized else None
    if n == 0:
        return index, dist, dist_f32, zq
    interp = interpreting()
    fp32 = z.dtype == torch.float32
    if splits is None:
        splits = codebook_splits(n, k, multiprocessors(z.device), 32 if interp else 256)
    width = splits * (2 if fp32 else 1)
    cand_val = torch.empty(n, width if splits > 1 else 0, dtype=torch.float32, device=z.device)
    cand_idx = torch.empty(n, width if splits > 1 else 0, dtype=torch.int64, device=z.device)
    pn = codebook.float().pow(2).sum(1)
    outputs = (index, dist if want_dist else index, dist_f32 if want_quantized else index,
               zq if want_quantized else z)
    strides = (z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1))
    configs = search_configs(d, z.dtype)
    if interp:
        block = configs[0][0]
        configs = [({"BLOCK_M": _INTERPRETER_BLOCK, "BLOCK_N": _INTERPRETER_BLOCK, "EPILOGUE_D": _INTERPRETER_BLOCK,
                     "BLOCK_D": block["BLOCK_D"] if resident(d, z.dtype) else _INTERPRETER_BLOCK}, 4, 1)]
    fused_epilogue = splits == 1
    launch(_search_kernel, lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), splits),
           z, codebook, pn, cand_val, cand_idx, *outputs, n, k, d, triton.next_power_of_2(n), *strides,
           SPLITS=splits, WIDTH=width, TOP2=fp32, Z_RESIDENT=resident(d, z.dtype), TO_F32=interp,
           ROUND_TF32=interp and fp32, PRECISION="tf32", WRITE_DIST=want_dist and fused_epilogue,
           WRITE_Q=want_quantized and fused_epilogue, configs=configs,
           key=("N_BUCKET", "K", "D", "SPLITS", "WRITE_DIST", "WRITE_Q"))
    if not fused_epilogue:
        launch(_merge_kernel, (triton.cdiv(n, _MERGE_ROWS),), z, codebook, cand_val, cand_idx, *outputs,
               n, k, d, *strides, WIDTH=width, TOP2=fp32, WRITE_DIST=want_dist, WRITE_Q=want_quantized,
               BLOCK_M=_MERGE_ROWS, BLOCK_W=triton.next_power_of_2(width), EPILOGUE_D=_epilogue_d(_MERGE_ROWS),
               configs=[({}, 4, 1)])
    return index, dist, dist_f32, zq


def residual_backward(z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor, grad_out: torch.Tensor | None,
                      z_weight: torch.Tensor, codebook_weight: torch.Tensor, deterministic: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_z [N, d] = grad_out + w_z·(z − p_index); grad_codebook [K, d] = Σ_rows w_cb·(p_index − z).

    z_weight / codebook_weight: float tensors with 1 (broadcast) or N elements.
    """
    n, d = z.shape
    k = codebook.shape[0]
    wz = z_weight.reshape(-1).to(device=z.device, dtype=torch.float32).contiguous()
    wc = codebook_weight.reshape(-1).to(device=z.device, dtype=torch.float32).contiguous()
    wz_stride, wc_stride = (0 if w.numel() == 1 else 1 for w in (wz, wc))
    grad_z = torch.empty(n, d, dtype=z.dtype, device=z.device)
    bm, bd = (32, 32) if interpreting() else (32, 128)
    if n == 0:
        return grad_z, torch.zeros_like(codebook, memory_format=torch.contiguous_format)
    go = grad_out if grad_out is not None else z
    strides = (z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1))
    one_config = [({}, 4, 3)]
    launch(_grad_z_kernel, (triton.cdiv(n, bm), triton.cdiv(d, bd)), z, codebook, index, go, wz, wz_stride, grad_z,
           n, k, d, *strides, go.stride(0), go.stride(1), HAS_GO=grad_out is not None, BLOCK_M=bm, BLOCK_D=bd,
           configs=one_config)
    if deterministic:
        sorted_index, order = torch.sort(index, stable=True)
        offsets = torch.searchsorted(sorted_index, torch.arange(k + 1, device=z.device, dtype=torch.int64))
        grad_codebook = torch.empty(k, d, dtype=codebook.dtype, device=z.device)
        launch(_grad_codebook_sorted_kernel, (k, triton.cdiv(d, bd)), z, codebook, order, offsets, wc, wc_stride,
               grad_codebook, d, *strides, BLOCK_R=bm, BLOCK_D=bd, configs=one_config)
        return grad_z, grad_codebook
    acc = torch.zeros(k, d, dtype=torch.float32, device=z.device)
    launch(_grad_codebook_atomic_kernel, (triton.cdiv(n, bm), triton.cdiv(d, bd)), z, codebook, index, wc, wc_stride,
           acc, n, k, d, *strides, BLOCK_M=bm, BLOCK_D=bd, configs=one_config)
    return grad_z, acc.to(codebook.dtype)
