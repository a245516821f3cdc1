// fuzzy_loss / fuzzy_membership on CUDA: one forward and one backward kernel, float accumulation.
//
// Forward: one block per sample (grid-stride); warp w takes classes w, w+8, …; the lanes stride
// over d and a butterfly shuffle gives every lane the same distance, so each warp keeps its own
// online log-sum-exp state (running max and scaled sum, empty at start) for the negative and the
// positive classes plus the Jaccard sums. Thread 0 merges the 8 warp states in warp order with
// the log(1 + ·) zero term, writes the per-sample stats and loss. The batch sum is done by the
// last block to finish (threadfence + atomic ticket), in sample order: deterministic, one kernel.
//
// The point loss's logit is f = λ(μ − δ) or, with p.log_logit, f = λ(−dist/τ − log δ) (see
// FuzzyLossParams); both kernels take it as a run-time flag, uniform across the grid.
//
// Backward: one block per class (grid-stride), warp w takes samples w, w+8, …: recompute dist,
// μ and f, K = −τ·∂L/∂dist from the saved stats (the loss depends on dist and τ only through
// dist/τ), write de = −2K/τ·(e − s), and accumulate −de into the warp's own row of a
// global fp32 workspace [blocks, 8, D] (only that lane touches an element, so no atomics); the 8
// rows are summed in warp order into ds. dτ partials per block are summed in block order by the
// last block (dτ = Σ K·dist/τ²). Results do not depend on scheduling.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "fuzzy_kernels.h"
#include "../common/convert.cuh"

namespace fact_fast {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int64_t kMaxForwardBlocks = 65535LL * 32;
constexpr int64_t kMaxBackwardBlocks = 1024;


// Butterfly sum: every lane ends with the same value (float addition is commutative).
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ float row_sq_dist(const T* __restrict__ er, const T* __restrict__ sr, int64_t D, int lane) {
  float acc = 0.f;
  for (int64_t k = lane; k < D; k += 32) {
    const float t = to_float(er[k]) - to_float(sr[k]);
    acc += t * t;
  }
  return warp_sum(acc);
}

__device__ __forceinline__ bool positive(FuzzyLabels y, int64_t i) {
  return y.bytes ? static_cast<const unsigned char*>(y.data)[i] != 0 : static_cast<const float*>(y.data)[i] > 0.5f;
}

__device__ __forceinline__ float point_logit(const FuzzyLossParams& p, float dist, float tau, float mu) {
  return p.log_logit ? p.logit_scale * (-dist / tau - p.shift) : p.logit_scale * (mu - p.shift);
}

// Online log-sum-exp state: m = running max, s = Σ exp(x − m); empty is (−inf, 0).
__device__ __forceinline__ void lse_add(float& m, float& s, float x) {
  const float m_new = fmaxf(m, x);
  s = s * expf(m - m_new) + expf(x - m_new);
  m = m_new;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
fuzzy_forward_kernel(const T* __restrict__ e, const T* __restrict__ s, FuzzyLabels y,
                     const float* __restrict__ tau_ptr, int64_t B, int64_t C, int64_t D, FuzzyLossParams p,
                     bool reduce, float out_scale, T* __restrict__ mu, float* __restrict__ stats,
                     float* __restrict__ per_sample, float* __restrict__ out, unsigned* __restrict__ counter) {
  __shared__ float warp_state[kWarps][6];
  __shared__ float block_sum[kThreads];
  __shared__ bool is_last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float tau = *tau_ptr;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    float m_neg = -INFINITY, s_neg = 0.f, m_pos = -INFINITY, s_pos = 0.f, num = 0.f, den = 0.f;
    for (int64_t c = warp; c < C; c += kWarps) {
      const int64_t bc = b * C + c;
      const float dist = row_sq_dist(e + bc * D, s + c * D, D, lane);
      const float m = expf(-dist / tau);
      if (lane == 0) mu[bc] = from_float<T>(m);
      if (y.data != nullptr) {
        const float f = point_logit(p, dist, tau, m);
        if (positive(y, bc)) {
          lse_add(m_pos, s_pos, -f);
          num += m;
          den += 1.f;
        } else {
          lse_add(m_neg, s_neg, f);
          den += m;
        }
      }
    }
    if (y.data == nullptr) continue;
    if (lane == 0) {
      float* st = warp_state[warp];
      st[0] = m_neg; st[1] = s_neg; st[2] = m_pos; st[3] = s_pos; st[4] = num; st[5] = den;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // Start from the zero term of log(1 + Σ exp), then merge the warps in order.
      float mn = 0.f, sn = 1.f, mp = 0.f, sp = 1.f, a = p.smooth, d = p.smooth;
      for (int w = 0; w < kWarps; ++w) {
        const float* st = warp_state[w];
        if (st[1] > 0.f) {
          const float m_new = fmaxf(mn, st[0]);
          sn = sn * expf(mn - m_new) + st[1] * expf(st[0] - m_new);
          mn = m_new;
        }
        if (st[3] > 0.f) {
          const float m_new = fmaxf(mp, st[2]);
          sp = sp * expf(mp - m_new) + st[3] * expf(st[2] - m_new);
          mp = m_new;
        }
        a += st[4];
        d += st[5];
      }
      const float lse_neg = mn + logf(sn), lse_pos = mp + logf(sp);
      float* out_st = stats + b * 4;
      out_st[0] = lse_neg; out_st[1] = lse_pos; out_st[2] = a; out_st[3] = d;
      per_sample[b] = lse_neg + lse_pos + p.alpha * (1.f - a / d);
    }
    __syncthreads();  // warp_state is reused by the next sample
  }
  if (y.data == nullptr || !reduce) return;
  // Last-block batch sum (the CUDA threadFenceReduction pattern).
  __threadfence();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < B; i += kThreads) acc += __ldcg(per_sample + i);
  block_sum[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) block_sum[threadIdx.x] += block_sum[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = block_sum[0] * out_scale;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
fuzzy_backward_kernel(const T* __restrict__ e, const T* __restrict__ s, FuzzyLabels y,
                      const float* __restrict__ tau_ptr, const float* __restrict__ stats, const float* __restrict__ g,
                      int64_t g_stride, float g_scale, const float* __restrict__ gmu, int64_t B, int64_t C,
                      int64_t D, FuzzyLossParams p, T* __restrict__ de, T* __restrict__ ds,
                      float* __restrict__ workspace, float* __restrict__ partial, unsigned* __restrict__ counter,
                      float* __restrict__ dtau) {
  __shared__ float warp_dtau[kWarps];
  __shared__ bool is_last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float tau = *tau_ptr;
  float* block_ws = workspace + static_cast<int64_t>(blockIdx.x) * kWarps * D;
  float* warp_ws = block_ws + warp * D;
  float dtau_acc = 0.f;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const T* sr = s + c * D;
    for (int64_t k = lane; k < D; k += 32) warp_ws[k] = 0.f;
    for (int64_t b = warp; b < B; b += kWarps) {
      const int64_t bc = b * C + c;
      const T* er = e + bc * D;
      const float dist = row_sq_dist(er, sr, D, lane);
      const float m = expf(-dist / tau);
      // kdist = K = −τ·∂L/∂dist from the point part pt = λ·g·∂L_point/∂f and the μ side
      // ms = g·∂L_set/∂μ + grad_μ: f = λ(μ − δ) gives K = μ(pt + ms); the log logit's
      // ∂f/∂dist = −λ/τ has no μ factor, so K = pt + μ·ms (a positive whose μ underflowed is
      // still pulled towards its anchor).
      float pt = 0.f, ms = 0.f;
      if (g != nullptr) {
        const float* st = stats + b * 4;
        const float f = point_logit(p, dist, tau, m);
        const float gb = g[b * g_stride] * g_scale;
        const bool is_pos = positive(y, bc);
        pt = gb * (is_pos ? -p.logit_scale * expf(-f - st[1]) : p.logit_scale * expf(f - st[0]));
        ms = gb * (is_pos ? -p.alpha / st[3] : p.alpha * st[2] / (st[3] * st[3]));
      }
      if (gmu != nullptr) ms += gmu[bc];
      const float kdist = p.log_logit ? pt + ms * m : (pt + ms) * m;
      const float coef = -2.f * kdist / tau;
      T* der = de + bc * D;
      for (int64_t k = lane; k < D; k += 32) {
        const float v = coef * (to_float(er[k]) - to_float(sr[k]));
        der[k] = from_float<T>(v);
        warp_ws[k] -= v;
      }
      dtau_acc += kdist * dist / tau / tau;  // K first: a vanishing K zeroes it before τ² can overflow
    }
    __syncthreads();
    for (int64_t k = threadIdx.x; k < D; k += kThreads) {
      float acc = 0.f;
      for (int w = 0; w < kWarps; ++w) acc += block_ws[w * D + k];
      ds[c * D + k] = from_float<T>(acc);
    }
    __syncthreads();  // the workspace is zeroed for the next class
  }
  if (lane == 0) warp_dtau[warp] = dtau_acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.f;
    for (int w = 0; w < kWarps; ++w) acc += warp_dtau[w];
    partial[blockIdx.x] = acc;
    __threadfence();
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    float acc = 0.f;
    for (unsigned i = 0; i < gridDim.x; ++i) acc += __ldcg(partial + i);
    *dtau = acc;
  }
}

template <typename T>
cudaError_t forward(const void* e, const void* s, FuzzyLabels y, const float* tau, int64_t B, int64_t C, int64_t D,
                    FuzzyLossParams p, bool reduce, float out_scale, void* mu, float* stats, float* per_sample,
                    float* out, unsigned* counter, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  if (y.data != nullptr && reduce) {
    const cudaError_t err = cudaMemsetAsync(counter, 0, sizeof(unsigned), stream);
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = static_cast<unsigned>(B < kMaxForwardBlocks ? B : kMaxForwardBlocks);
  fuzzy_forward_kernel<T><<<blocks, kThreads, 0, stream>>>(
      static_cast<const T*>(e), static_cast<const T*>(s), y, tau, B, C, D, p, reduce, out_scale, static_cast<T*>(mu),
      stats, per_sample, out, counter);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(const void* e, const void* s, FuzzyLabels y, const float* tau, const float* stats,
                     const float* g, int64_t g_stride, float g_scale, const float* gmu, int64_t B, int64_t C,
                     int64_t D, FuzzyLossParams p, void* de, void* ds, float* workspace, float* partial,
                     unsigned* counter, float* dtau, cudaStream_t stream) {
  if (C == 0) return cudaSuccess;
  const cudaError_t err = cudaMemsetAsync(counter, 0, sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  fuzzy_backward_kernel<T><<<static_cast<unsigned>(fuzzy_backward_blocks(C)), kThreads, 0, stream>>>(
      static_cast<const T*>(e), static_cast<const T*>(s), y, tau, stats, g, g_stride, g_scale, gmu, B, C, D, p,
      static_cast<T*>(de), static_cast<T*>(ds), workspace, partial, counter, dtau);
  return cudaGetLastError();
}

}  // namespace

int64_t fuzzy_backward_blocks(int64_t C) { return C < kMaxBackwardBlocks ? C : kMaxBackwardBlocks; }

int64_t fuzzy_backward_workspace_per_block(int64_t D) { return kWarps * D; }

cudaError_t launch_fuzzy_forward(DType dtype, const void* e, const void* s, FuzzyLabels y, const float* tau,
                                 int64_t B, int64_t C, int64_t D, FuzzyLossParams p, bool reduce, float out_scale,
                                 void* mu, float* stats, float* per_sample, float* out, unsigned* counter,
                                 cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32:
      return forward<float>(e, s, y, tau, B, C, D, p, reduce, out_scale, mu, stats, per_sample, out, counter, stream);
    case DType::Float16:
      return forward<__half>(e, s, y, tau, B, C, D, p, reduce, out_scale, mu, stats, per_sample, out, counter, stream);
    case DType::BFloat16:
      return forward<__nv_bfloat16>(e, s, y, tau, B, C, D, p, reduce, out_scale, mu, stats, per_sample, out, counter,
                                    stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fuzzy_backward(DType dtype, const void* e, const void* s, FuzzyLabels y, const float* tau,
                                  const float* stats, const float* g, int64_t g_stride, float g_scale,
                                  const float* gmu, int64_t B, int64_t C, int64_t D, FuzzyLossParams p, void* de,
                                  void* ds, float* workspace, float* partial, unsigned* counter, float* dtau,
                                  cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32:
      return backward<float>(e, s, y, tau, stats, g, g_stride, g_scale, gmu, B, C, D, p, de, ds, workspace, partial,
                             counter, dtau, stream);
    case DType::Float16:
      return backward<__half>(e, s, y, tau, stats, g, g_stride, g_scale, gmu, B, C, D, p, de, ds, workspace, partial,
                              counter, dtau, stream);
    case DType::BFloat16:
      return backward<__nv_bfloat16>(e, s, y, tau, stats, g, g_stride, g_scale, gmu, B, C, D, p, de, ds, workspace,
                                     partial, counter, dtau, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace fact_fast
