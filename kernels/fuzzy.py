"""Triton kernels of the fuzzy family: Gaussian membership fused with FACT's point + set loss.

Forward (``_fuzzy_fwd_kernel``), one program per SAMPLES consecutive samples, classes in tiles of
BLOCK_C. A program loads each [BLOCK_C, d] tile of s once and uses it for all its samples (a
[SAMPLES, BLOCK_C, d] tile of e), so s is read B/SAMPLES times instead of B times:
    dist_c = Σ_k (e_bck − s_ck)² (fp32), μ_c = exp(−dist_c/τ), and the point loss's logit
    f_c = λ(μ_c − δ)                      (LOG_LOGIT off: logit="scaled")
    f_c = λ(−dist_c/τ − log δ) = λ·log(μ_c/δ)   (LOG_LOGIT on: logit="log"; from dist, not from
                                          log μ, so an underflowed μ keeps a finite logit);
    ``shift`` is δ or log δ (computed on the host in double precision);
    point loss = logsumexp([0, f_neg...]) + logsumexp([0, −f_pos...]) with an online max
    (the 0 term starts the running max, so any λ and μ → 0 are stable);
    fuzzy Jaccard J = (Σ yμ + ε) / (Σ y + (1−y)μ + ε).
    It writes μ [B, C], the per-sample loss and per-sample stats [B, 4] = (lse_neg, lse_pos,
    Jaccard numerator, Jaccard denominator): all the backward needs besides e, s, y and τ.
    The batch sum is deterministic without a second kernel: every program bumps a counter and
    the last one to arrive sums the per-sample losses in index order.

Backward (``_fuzzy_bwd_kernel``), one program per class c, samples in tiles of BLOCK_B:
    recompute dist, μ and f (cheaper than storing them, and bit-for-bit what the forward used up
    to reduction order). The loss depends on dist and τ only through u = dist/τ, so everything
    follows from K_bc = −τ·∂L/∂dist_bc. With the point part P = g_b·∂L_point/∂f_bc,
        P = g·exp(f − lse_neg) (y = 0),   P = −g·exp(−f − lse_pos) (y = 1),
    and the set part plus the direct μ gradient M = g_b·∂L_set/∂μ_bc + grad_μ_bc,
        ∂L_set/∂μ = α·num/den² (y = 0),   −α/den (y = 1)   (Jaccard numerator / denominator),
    K = μ·(λP + M)   for f = λ(μ − δ)     (∂f/∂dist = −λμ/τ),
    K = λP + μ·M     for f = λ(−dist/τ − log δ)   (∂f/∂dist = −λ/τ: no μ factor, so the point
                     loss still pulls a positive whose μ underflowed);
    then de_bc = −2K/τ·(e_bc − s_c), ds_c = −Σ_b de_bc: the program that owns class c adds each
    [BLOCK_B, d] tile of de into a 2-D register accumulator and reduces it over rows once at the
    end (no cross-warp reduction per tile; deterministic, no atomics), and dτ = Σ K·dist/τ² from
    per-class partials summed in class order by the last program. The upstream gradient g is
    multiplied in-kernel (one FMA per (b, c)); with an autograd tensor there is no free way to
    know that it equals 1.

The last-program counter is a fresh zeroed int32 per launch (one 4-byte memset): a counter cached
across calls would be allocated inside a CUDA graph's private pool when first met during capture,
and a launch that never finished would leave it non-zero, so the next loss and dτ would never be
written. Both kernels also serve ``fuzzy_membership`` (COMPUTE_LOSS / HAS_LOSS off).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._launch import launch, multiprocessors

# Register tile budget (elements of one [rows, BLOCK_D] tile) and the largest feature size one
# tile row can hold; beyond it the op falls back to another backend (see ops/fuzzy.py).
TILE_ELEMENTS = 4096
MAX_D = 8192  # fact_fast.ops.fuzzy.TRITON_MAX_D mirrors it
MAX_SAMPLES = 8  # samples per forward program


@triton.jit
def _take_ticket(counter_ptr):
    """Arrival number of this program at the last-program reduction (the CUDA threadfence pattern).

    The barrier orders every thread's earlier stores before the atomic, whichever thread Triton
    lets issue a scalar store; the atomic (acq_rel, gpu scope by default) releases them to the
    program that draws the last ticket, and acquires the others' for it. Its result reaches all
    threads through shared memory behind a barrier, so the last program's loads (.cg, from L2)
    come after the acquire. (sm_90 PTX: bar.sync; atom.global.gpu.acq_rel.add; bar.sync.)
    """
    tl.debug_barrier()
    return tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")


@triton.jit
def _fuzzy_fwd_kernel(e_ptr, s_ptr, y_ptr, tau_ptr, mu_ptr, stats_ptr, loss_ptr, out_ptr, counter_ptr,
                      B, C, D, alpha, logit_scale, shift, smooth, out_scale,
                      COMPUTE_LOSS: tl.constexpr, REDUCE: tl.constexpr, LOG_LOGIT: tl.constexpr,
                      SAMPLES: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    offs_b = tl.program_id(0).to(tl.int64) * SAMPLES + tl.arange(0, SAMPLES).to(tl.int64)
    mask_b = offs_b < B
    tau = tl.load(tau_ptr).to(tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    # Per sample: running max / scaled sum of exp over {0} ∪ {f_c : y_c = 0} (neg) and over
    # {0} ∪ {−f_c : y_c = 1} (pos), and the Jaccard sums.
    m_neg = tl.zeros([SAMPLES], dtype=tl.float32)
    s_neg = tl.full([SAMPLES], 1.0, dtype=tl.float32)
    m_pos = tl.zeros([SAMPLES], dtype=tl.float32)
    s_pos = tl.full([SAMPLES], 1.0, dtype=tl.float32)
    num = tl.zeros([SAMPLES], dtype=tl.float32)
    den = tl.zeros([SAMPLES], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mask_c = offs_c < C
        s = tl.load(s_ptr + offs_c[:, None] * D + offs_d[None, :], mask=mask_c[:, None] & mask_d[None, :],
                    other=0.0).to(tl.float32)
        cell = offs_b[:, None] * C + offs_c[None, :]  # [SAMPLES, BLOCK_C] index of (b, c)
        mask_bc = mask_b[:, None] & mask_c[None, :]
        e = tl.load(e_ptr + cell[:, :, None] * D + offs_d[None, None, :],
                    mask=mask_bc[:, :, None] & mask_d[None, None, :], other=0.0).to(tl.float32)
        diff = e - s[None, :, :]
        dist = tl.sum(diff * diff, axis=2)
        mu = tl.exp(-dist / tau)
        tl.store(mu_ptr + cell, mu.to(mu_ptr.dtype.element_ty), mask=mask_bc)
        if COMPUTE_LOSS:
            y = tl.load(y_ptr + cell, mask=mask_bc, other=0).to(tl.float32)
            pos = y > 0.5
            if LOG_LOGIT:
                f = logit_scale * (-dist / tau - shift)
            else:
                f = logit_scale * (mu - shift)
            x_neg = tl.where(mask_bc & (~pos), f, float("-inf"))
            x_pos = tl.where(mask_bc & pos, -f, float("-inf"))
            m_new = tl.maximum(m_neg, tl.max(x_neg, axis=1))
            s_neg = s_neg * tl.exp(m_neg - m_new) + tl.sum(tl.exp(x_neg - m_new[:, None]), axis=1)
            m_neg = m_new
            m_new = tl.maximum(m_pos, tl.max(x_pos, axis=1))
            s_pos = s_pos * tl.exp(m_pos - m_new) + tl.sum(tl.exp(x_pos - m_new[:, None]), axis=1)
            m_pos = m_new
            yb = tl.where(pos, 1.0, 0.0)
            num += tl.sum(tl.where(mask_bc, yb * mu, 0.0), axis=1)
            den += tl.sum(tl.where(mask_bc, yb + (1.0 - yb) * mu, 0.0), axis=1)
    if COMPUTE_LOSS:
        lse_neg = m_neg + tl.log(s_neg)
        lse_pos = m_pos + tl.log(s_pos)
        num += smooth
        den += smooth
        tl.store(stats_ptr + offs_b * 4 + 0, lse_neg, mask=mask_b)
        tl.store(stats_ptr + offs_b * 4 + 1, lse_pos, mask=mask_b)
        tl.store(stats_ptr + offs_b * 4 + 2, num, mask=mask_b)
        tl.store(stats_ptr + offs_b * 4 + 3, den, mask=mask_b)
        tl.store(loss_ptr + offs_b, lse_neg + lse_pos + alpha * (1.0 - num / den), mask=mask_b)
        if REDUCE:
            ticket = _take_ticket(counter_ptr)
            if ticket == tl.num_programs(0) - 1:
                acc = tl.zeros([BLOCK_R], dtype=tl.float32)
                for r0 in range(0, B, BLOCK_R):
                    offs_r = r0 + tl.arange(0, BLOCK_R)
                    acc += tl.load(loss_ptr + offs_r, mask=offs_r < B, other=0.0, cache_modifier=".cg")
                tl.store(out_ptr, tl.sum(acc, axis=0) * out_scale)


@triton.jit
def _fuzzy_bwd_kernel(e_ptr, s_ptr, y_ptr, tau_ptr, stats_ptr, g_ptr, gmu_ptr, de_ptr, ds_ptr, part_ptr,
                      counter_ptr, dtau_ptr, B, C, D, g_stride, g_scale, alpha, logit_scale, shift,
                      HAS_LOSS: tl.constexpr, HAS_GMU: tl.constexpr, LOG_LOGIT: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    tau = tl.load(tau_ptr).to(tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    s = tl.load(s_ptr + c * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    de_sum = tl.zeros([BLOCK_B, BLOCK_D], dtype=tl.float32)
    dtau_acc = tl.zeros([BLOCK_B], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        mask_b = offs_b < B
        mask = mask_b[:, None] & mask_d[None, :]
        row = (offs_b * C + c)[:, None] * D + offs_d[None, :]
        e = tl.load(e_ptr + row, mask=mask, other=0.0).to(tl.float32)
        diff = tl.where(mask, e - s[None, :], 0.0)
        dist = tl.sum(diff * diff, axis=1)
        mu = tl.exp(-dist / tau)
        # kdist = K = −τ·∂L/∂dist (see the module docstring) from the point part
        # pt = λ·g·∂L_point/∂f and the μ side ms = g·∂L_set/∂μ + grad_μ, kept apart because the
        # log logit's K does not scale pt by μ.
        pt = tl.zeros([BLOCK_B], dtype=tl.float32)
        ms = tl.zeros([BLOCK_B], dtype=tl.float32)
        if HAS_LOSS:
            y = tl.load(y_ptr + offs_b * C + c, mask=mask_b, other=0).to(tl.float32)
            lse_neg = tl.load(stats_ptr + offs_b * 4 + 0, mask=mask_b, other=0.0)
            lse_pos = tl.load(stats_ptr + offs_b * 4 + 1, mask=mask_b, other=0.0)
            num = tl.load(stats_ptr + offs_b * 4 + 2, mask=mask_b, other=1.0)
            den = tl.load(stats_ptr + offs_b * 4 + 3, mask=mask_b, other=1.0)
            if LOG_LOGIT:
                f = logit_scale * (-dist / tau - shift)
            else:
                f = logit_scale * (mu - shift)
            pos = y > 0.5
            # one exp of an argument ≤ 0 (each lse bounds its terms), not two: the branch not
            # taken would overflow for a far negative's −f under the log logit
            sign = tl.where(pos, -1.0, 1.0)
            h_point = sign * logit_scale * tl.exp(tl.where(pos, -f - lse_pos, f - lse_neg))
            h_set = tl.where(pos, -alpha / den, alpha * num / (den * den))
            g = tl.load(g_ptr + offs_b * g_stride, mask=mask_b, other=0.0).to(tl.float32) * g_scale
            pt = g * h_point
            ms = g * h_set
        if HAS_GMU:
            ms += tl.load(gmu_ptr + offs_b * C + c, mask=mask_b, other=0.0).to(tl.float32)
        if LOG_LOGIT:
            kdist = pt + ms * mu
        else:
            kdist = (pt + ms) * mu
        kdist = tl.where(mask_b, kdist, 0.0)
        coef = -2.0 * kdist / tau
        de = coef[:, None] * diff  # 0 outside the tile's valid rows and columns (diff is)
        tl.store(de_ptr + row, de.to(de_ptr.dtype.element_ty), mask=mask)
        de_sum += de
        # (K·dist/τ)/τ: a vanishing K (μ → 0 on the μ side, exp(f − lse) → 0 on the point side)
        # zeroes the product before any division can overflow.
        dtau_acc += kdist * dist / tau / tau
    tl.store(ds_ptr + c * D + offs_d, (-tl.sum(de_sum, axis=0)).to(ds_ptr.dtype.element_ty), mask=mask_d)
    tl.store(part_ptr + c, tl.sum(dtau_acc, axis=0))
    ticket = _take_ticket(counter_ptr)
    if ticket == C - 1:
        acc = tl.zeros([BLOCK_R], dtype=tl.float32)
        for r0 in range(0, C, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            acc += tl.load(part_ptr + offs_r, mask=offs_r < C, other=0.0, cache_modifier=".cg")
        tl.store(dtau_ptr, tl.sum(acc, axis=0))


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _rows(d: int, n: int) -> int:
    """Rows per tile: fill TILE_ELEMENTS, but no more than the (power-of-2 rounded) row count."""
    return max(1, min(TILE_ELEMENTS // _block_d(d), triton.next_power_of_2(max(n, 1))))


def _num_warps(elements: int) -> int:
    return 8 if elements >= 4096 else 4


def _forward_tiles(bsz: int, c: int, d: int, sms: int) -> tuple[int, int]:
    """(SAMPLES, BLOCK_C) of the forward: share each s tile among as many samples as keep at
    least two programs per multiprocessor, within the register tile budget."""
    block_d = _block_d(d)
    samples = 1
    while (samples < MAX_SAMPLES and triton.cdiv(bsz, 2 * samples) >= 2 * sms
           and 2 * samples * block_d <= TILE_ELEMENTS):
        samples *= 2
    block_c = max(1, min(TILE_ELEMENTS // (samples * block_d), triton.next_power_of_2(max(c, 1))))
    return samples, block_c


LOGITS = ("scaled", "log")  # fact_fast.ops.fuzzy.LOGITS


def _logit_mode(logit: str, threshold: float) -> tuple[bool, float]:
    """(LOG_LOGIT, shift) of the kernels: f = λ(μ − shift) with shift = δ, or f = λ(−dist/τ − shift)
    with shift = log δ, taken in double precision here as the reference does (math.log)."""
    if logit not in LOGITS:
        raise ValueError(f"logit must be one of {LOGITS}, got {logit!r}")
    if logit == "scaled":
        return False, threshold
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 for logit='log' (f = λ·log(μ/δ)), got {threshold}")
    return True, math.log(threshold)


def fuzzy_forward(e: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None, tau: torch.Tensor, alpha: float,
                  logit_scale: float, threshold: float, smooth: float, reduction: str, logit: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """e [B, C, d], s [C, d] contiguous, y [B, C] (any real dtype) or None, tau 0-d float32;
    ``logit`` "scaled" (f = λ(μ − δ)) or "log" (f = λ·log(μ/δ), threshold δ > 0).

    Returns ``(loss, mu, stats)``: loss float32 ([B] for "none", else 0-d; empty when y is None),
    mu [B, C] in e.dtype, stats float32 [B, 4] (empty when y is None).
    """
    bsz, c, d = e.shape
    mu = torch.empty(bsz, c, dtype=e.dtype, device=e.device)
    compute_loss = y is not None
    per_sample = torch.empty(bsz if compute_loss else 0, dtype=torch.float32, device=e.device)
    stats = torch.empty(per_sample.shape[0], 4, dtype=torch.float32, device=e.device)
    reduce = compute_loss and reduction != "none"
    log_logit, shift = _logit_mode(logit, threshold)
    if bsz == 0:  # nothing to launch; the reduced loss of an empty batch is 0
        out = torch.zeros((), dtype=torch.float32, device=e.device) if reduce else per_sample
        return out, mu, stats
    out = torch.empty((), dtype=torch.float32, device=e.device) if reduce else per_sample
    counter = torch.zeros(1, dtype=torch.int32, device=e.device) if reduce else per_sample
    samples, block_c = _forward_tiles(bsz, c, d, multiprocessors(e.device))
    block_d = _block_d(d)
    launch(_fuzzy_fwd_kernel, (triton.cdiv(bsz, samples),),
           e, s, y if compute_loss else e, tau, mu, stats, per_sample, out, counter, bsz, c, d,
           alpha, logit_scale, shift, smooth, 1.0 / bsz if reduction == "mean" else 1.0,
           COMPUTE_LOSS=compute_loss, REDUCE=reduce, LOG_LOGIT=log_logit, SAMPLES=samples, BLOCK_C=block_c, BLOCK_D=block_d,
           BLOCK_R=1024, configs=[({}, _num_warps(samples * block_c * block_d), 3)])
    return out, mu, stats


def fuzzy_backward(grad_loss: torch.Tensor | None, grad_mu: torch.Tensor | None, e: torch.Tensor,
                   s: torch.Tensor, y: torch.Tensor | None, tau: torch.Tensor, stats: torch.Tensor | None,
                   alpha: float, logit_scale: float, threshold: float, reduction: str, logit: str
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(de [B, C, d] e.dtype, ds [C, d] s.dtype, dtau 0-d float32)``.

    grad_loss: upstream gradient of the loss (0-d, or [B] for "none"), or None when the loss
    does not need one (``fuzzy_membership``, or the loss unused); grad_mu [B, C] or None;
    ``logit`` as in :func:`fuzzy_forward` (the forward's).
    """
    bsz, c, d = e.shape
    de = torch.empty_like(e)
    ds = torch.empty_like(s)
    if c == 0:
        return de, ds, torch.zeros((), dtype=torch.float32, device=e.device)
    dtau = torch.empty((), dtype=torch.float32, device=e.device)
    has_loss = grad_loss is not None and y is not None
    has_gmu = grad_mu is not None
    log_logit, shift = _logit_mode(logit, threshold)
    if has_gmu:
        grad_mu = grad_mu.contiguous()  # autograd hands out expanded (stride-0) gradients
    if has_loss:
        grad_loss = grad_loss.contiguous()
        g_stride = 1 if reduction == "none" else 0
        g_scale = 1.0 / bsz if reduction == "mean" and bsz > 0 else 1.0
    else:
        g_stride, g_scale = 0, 1.0
    partial = torch.empty(c, dtype=torch.float32, device=e.device)
    counter = torch.zeros(1, dtype=torch.int32, device=e.device)
    block_d = _block_d(d)
    block_b = _rows(d, bsz)
    launch(_fuzzy_bwd_kernel, (c,),
           e, s, y if has_loss else e, tau, stats if has_loss else partial, grad_loss if has_loss else partial,
           grad_mu if has_gmu else partial, de, ds, partial, counter, dtau, bsz, c, d, g_stride, g_scale,
           alpha, logit_scale, shift, HAS_LOSS=has_loss, HAS_GMU=has_gmu, LOG_LOGIT=log_logit,
           BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_R=1024, configs=[({}, _num_warps(block_b * block_d), 3)])
    return de, ds, dtau
