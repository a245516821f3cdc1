"""Triton kernels of the VQ family: nearest-codeword search (+ gather) and the residual backward.

Search (``nearest``, tile shape autotuned on GPU): one program per ``BLOCK_M`` rows of z walks the
codebook in tiles of ``BLOCK_N`` codewords; ``tl.dot`` over d in steps of ``BLOCK_D`` gives the tile of
⟨z, p⟩ (fp32 accumulation; fp32 inputs use ``tf32x3``, three TF32 tensor-core products with about fp32
accuracy, not plain TF32), and
a running min/argmin of ‖p‖² − 2⟨z, p⟩ is kept per row (``tl.argmin`` takes the first of equal values
and a later tile must be strictly smaller, so ties go to the lowest index). ‖p‖² is computed once per
call. An epilogue in the same program recomputes the exact ‖z − p_index‖² and, for ``vq_quantize``,
writes z_q = codebook[index]. Nothing of size N×K exists.

Backward (``residual_backward``): grad_z = grad_out + w_z·(z − p_k) elementwise; grad_codebook[k] =
Σ_{i: k_i = k} w_cb,i·(p_k − z_i), either by fp32 atomics (fast, order-dependent) or, deterministic, as
a segmented reduction over the rows sorted by index: one program per (codeword, d-block) sums its
segment in fixed blocks of rows, so the result is bitwise reproducible.

All launchers take CPU tensors under ``TRITON_INTERPRET=1`` (tests) and CUDA tensors otherwise.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _nearest_kernel(z_ptr, cb_ptr, pn_ptr, index_ptr, dist_ptr, dist_f32_ptr, q_ptr,
                    N, K, D, s_zn, s_zd, s_cn, s_cd,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    TO_F32: tl.constexpr, PRECISION: tl.constexpr, WRITE_DIST: tl.constexpr,
                    WRITE_Q: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rmask = rows < N
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_j = tl.zeros([BLOCK_M], tl.int64)  # a row of NaNs never compares smaller: it reports codeword 0
    for n0 in range(0, K, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < K
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)  # ds * s_zd passes 2^31 for a large transposed z
            dmask = ds < D
            a = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd,
                        mask=rmask[:, None] & dmask[None, :], other=0.0)
            b = tl.load(cb_ptr + cols[None, :] * s_cn + ds[:, None] * s_cd,
                        mask=cmask[None, :] & dmask[:, None], other=0.0)
            if TO_F32:  # the interpreter's bf16/fp16 arithmetic is not fp32-accumulated
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        pn = tl.load(pn_ptr + cols, mask=cmask, other=float("inf"))
        val = tl.where(cmask[None, :], pn[None, :] - 2.0 * acc, float("inf"))
        tile_min = tl.min(val, axis=1)
        tile_arg = tl.argmin(val, axis=1, tie_break_left=True)
        better = tile_min < best
        best_j = tl.where(better, n0 + tile_arg.to(tl.int64), best_j)
        best = tl.where(better, tile_min, best)
    tl.store(index_ptr + rows, best_j, mask=rmask)
    exact = tl.zeros([BLOCK_M], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
        m2 = rmask[:, None] & (ds < D)[None, :]
        a = tl.load(z_ptr + rows[:, None] * s_zn + ds[None, :] * s_zd, mask=m2, other=0.0)
        p = tl.load(cb_ptr + best_j[:, None] * s_cn + ds[None, :] * s_cd, mask=m2, other=0.0)
        diff = a.to(tl.float32) - p.to(tl.float32)
        exact += tl.sum(diff * diff, axis=1)
        if WRITE_Q:
            tl.store(q_ptr + rows[:, None] * D + ds[None, :], p, mask=m2)
    if WRITE_DIST:
        tl.store(dist_ptr + rows, exact.to(dist_ptr.dtype.element_ty), mask=rmask)
    if WRITE_Q:
        tl.store(dist_f32_ptr + rows, exact, mask=rmask)


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


# GPU tile shapes tried once per (K, D, dtype, outputs); configs needing more shared memory than the
# device has are skipped by the autotuner. The interpreter runs one small config (autotune fails there).
_SEARCH_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd}, num_warps=w, num_stages=st)
    for bm, bn, bd, w, st in ((64, 64, 64, 4, 3), (128, 64, 64, 4, 3), (64, 128, 64, 4, 3),
                              (128, 128, 64, 8, 3), (128, 128, 32, 8, 4))
]
_nearest_kernel_tuned = triton.autotune(configs=_SEARCH_CONFIGS, key=["K", "D", "WRITE_DIST", "WRITE_Q"])(
    _nearest_kernel)


def nearest(z: torch.Tensor, codebook: torch.Tensor, *, want_dist: bool, want_quantized: bool):
    """z [N, d] (any strides), codebook [K, d] -> (index int64 [N], dist [N] z.dtype | None,
    dist_f32 [N] | None, z_q [N, d] contiguous | None)."""
    n, d = z.shape
    k = codebook.shape[0]
    index = torch.empty(n, dtype=torch.int64, device=z.device)
    dist = torch.empty(n, dtype=z.dtype, device=z.device) if want_dist else None
    dist_f32 = torch.empty(n, dtype=torch.float32, device=z.device) if want_quantized else None
    zq = torch.empty(n, d, dtype=z.dtype, device=z.device) if want_quantized else None
    if n == 0:
        return index, dist, dist_f32, zq
    pn = codebook.float().pow(2).sum(1)
    args = (z, codebook, pn, index, dist if want_dist else index, dist_f32 if want_quantized else index,
            zq if want_quantized else z, n, k, d, z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1))
    flags = dict(PRECISION="tf32x3" if z.dtype == torch.float32 else "tf32", WRITE_DIST=want_dist,
                 WRITE_Q=want_quantized)
    if _interpreting():
        _nearest_kernel[(triton.cdiv(n, 32),)](*args, BLOCK_M=32, BLOCK_N=32, BLOCK_D=32, TO_F32=True, **flags)
    else:
        _nearest_kernel_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)](*args, TO_F32=False, **flags)
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
    bm, bd = (32, 32) if _interpreting() else (32, 128)
    if n == 0:
        return grad_z, torch.zeros_like(codebook, memory_format=torch.contiguous_format)
    go = grad_out if grad_out is not None else z
    _grad_z_kernel[(triton.cdiv(n, bm), triton.cdiv(d, bd))](
        z, codebook, index, go, wz, wz_stride, grad_z, n, k, d, z.stride(0), z.stride(1),
        codebook.stride(0), codebook.stride(1), go.stride(0), go.stride(1),
        HAS_GO=grad_out is not None, BLOCK_M=bm, BLOCK_D=bd)
    if deterministic:
        sorted_index, order = torch.sort(index, stable=True)
        offsets = torch.searchsorted(sorted_index, torch.arange(k + 1, device=z.device, dtype=torch.int64))
        grad_codebook = torch.empty(k, d, dtype=codebook.dtype, device=z.device)
        _grad_codebook_sorted_kernel[(k, triton.cdiv(d, bd))](
            z, codebook, order, offsets, wc, wc_stride, grad_codebook, d, z.stride(0), z.stride(1),
            codebook.stride(0), codebook.stride(1), BLOCK_R=bm, BLOCK_D=bd)
        return grad_z, grad_codebook
    acc = torch.zeros(k, d, dtype=torch.float32, device=z.device)
    _grad_codebook_atomic_kernel[(triton.cdiv(n, bm), triton.cdiv(d, bd))](
        z, codebook, index, wc, wc_stride, acc, n, k, d, z.stride(0), z.stride(1),
        codebook.stride(0), codebook.stride(1), BLOCK_M=bm, BLOCK_D=bd)
    return grad_z, acc.to(codebook.dtype)
