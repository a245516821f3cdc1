// VQ kernels on CUDA. No torch headers here, so nvcc compiles this file quickly.
//
// Search (no N×K buffer): ‖p‖² once per call (pnorm_kernel); then each block takes 64 rows of z and
// walks the codebook in tiles of 64 codewords, computing the 64×64 tile of ⟨z, p⟩ through shared
// memory, and keeps a running min/argmin of ‖p‖² − 2⟨z, p⟩ in registers. Every thread visits its
// codewords in increasing order and keeps the first of equal values; the final cross-thread reduce
// orders by (value, index), so ties go to the lowest index. Two tile kernels:
//   - nearest_simt_kernel: float FMA on fp32 copies of the tiles, any dtype, any GPU (the fallback);
//   - nearest_wmma_kernel: fp16/bf16 tensor cores (wmma 16×16×16, fp32 accumulation), compiled only
//     for __CUDA_ARCH__ >= 800 and chosen at run time where the loaded code is compute_80+.
// An epilogue (one warp per row) recomputes the exact ‖z − p_index‖² in float and gathers z_q. The
// same kernel, given candidate lists, is the exact re-rank that closes the CuTe search
// (vq_cutlass.cu, launch_vq_rerank).
//
// Backward: grad_z elementwise; grad_codebook either by float atomics (fast, order-dependent) or by a
// segmented reduction over rows sorted by index (one block per codeword, rows summed in order).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cfloat>
#include <climits>

#include "vq_kernels.h"
#include "../common/arch.cuh"
#include "../common/convert.cuh"

namespace fact_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kTileRows = 64;   // rows of z per block
constexpr int kTileCodes = 64;  // codewords per tile


__device__ __forceinline__ void keep_min(float& best, long long& best_j, float v, long long j) {
  if (v < best || (v == best && j < best_j)) {
    best = v;
    best_j = j;
  }
}

// (value, index) minimum over groups of `width` consecutive lanes (width a power of two <= 32).
__device__ __forceinline__ void group_argmin(float& best, long long& best_j, int width) {
  for (int off = width / 2; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off, width);
    const long long oj = __shfl_xor_sync(0xffffffffu, best_j, off, width);
    keep_min(best, best_j, ov, oj);
  }
}

unsigned grid_for(int64_t work, int64_t per_block) {
  const int64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

template <typename T>
__global__ void pnorm_kernel(const T* __restrict__ cb, int64_t k, int64_t d, float* __restrict__ pnorm) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; j < k; j += warps) {
    float s = 0.f;
    for (int64_t c = lane; c < d; c += 32) {
      const float x = to_float(cb[j * d + c]);
      s = fmaf(x, x, s);
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) pnorm[j] = s;
  }
}

// 256 threads: thread (ty = tid / 16, tx = tid % 16) owns rows ty*4..ty*4+3 of the block and codewords
// tx, tx+16, tx+32, tx+48 of each tile (a 4×4 register tile).
template <typename T>
__global__ void __launch_bounds__(kThreads)
nearest_simt_kernel(const T* __restrict__ z, const T* __restrict__ cb, const float* __restrict__ pnorm, int64_t n,
                    int64_t k, int64_t d, int64_t* __restrict__ index) {
  constexpr int kDepth = 16;
  __shared__ float zs[kDepth][kTileRows + 4];
  __shared__ float ps[kDepth][kTileCodes + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t row_blocks = (n + kTileRows - 1) / kTileRows;
  for (int64_t rb = blockIdx.x; rb < row_blocks; rb += gridDim.x) {
    const int64_t r0 = rb * kTileRows;
    float best[4];
    long long best_j[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      best[i] = INFINITY;
      best_j[i] = 0;  // a row of NaNs never compares smaller: it reports codeword 0
    }
    for (int64_t j0 = 0; j0 < k; j0 += kTileCodes) {
      float acc[4][4] = {};
      for (int64_t c0 = 0; c0 < d; c0 += kDepth) {
        for (int e = tid; e < kTileRows * kDepth; e += kThreads) {
          const int rr = e / kDepth, cc = e % kDepth;
          const int64_t col = c0 + cc, row = r0 + rr, j = j0 + rr;
          zs[cc][rr] = (row < n && col < d) ? to_float(z[row * d + col]) : 0.f;
          ps[cc][rr] = (j < k && col < d) ? to_float(cb[j * d + col]) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int cc = 0; cc < kDepth; ++cc) {
          float a[4], b[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) a[i] = zs[cc][ty * 4 + i];
#pragma unroll
          for (int c = 0; c < 4; ++c) b[c] = ps[cc][tx + 16 * c];
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][c] = fmaf(a[i], b[c], acc[i][c]);
        }
        __syncthreads();
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t j = j0 + tx + 16 * c;
        if (j < k) {
          const float pj = pnorm[j];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float v = pj - 2.f * acc[i][c];
            if (v < best[i]) {
              best[i] = v;
              best_j[i] = j;
            }
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      group_argmin(best[i], best_j[i], 16);
      const int64_t row = r0 + ty * 4 + i;
      if (tx == 0 && row < n) index[row] = best_j[i];
    }
  }
}

// Tensor-core tile: 8 warps; warp w computes rows (w/2)*16..+16 × codewords (w%2)*32..+32 of the 64×64
// tile with two 16×16 fp32 accumulators over d in steps of 32. The tile goes through shared memory
// (ss); then thread t scans row t/4, codewords t%4 + 4c (c = 0..15) of it. Zero padding makes any d,
// n, k valid; codewords past k are skipped in the scan.
template <typename T>
__global__ void __launch_bounds__(kThreads)
nearest_wmma_kernel(const T* __restrict__ z, const T* __restrict__ cb, const float* __restrict__ pnorm, int64_t n,
                    int64_t k, int64_t d, int64_t* __restrict__ index) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int kDepth = 32, kLd = kDepth + 8, kLdS = kTileCodes + 4;
  __shared__ __align__(32) T zs[kTileRows * kLd];
  __shared__ __align__(32) T ps[kTileCodes * kLd];
  __shared__ __align__(32) float ss[kTileRows * kLdS];
  const int tid = threadIdx.x, warp = tid / 32, wr = warp / 2, wc = warp % 2;
  const int sr = tid / 4, sq = tid % 4;
  const T zero = from_float<T>(0.f);
  const int64_t row_blocks = (n + kTileRows - 1) / kTileRows;
  for (int64_t rb = blockIdx.x; rb < row_blocks; rb += gridDim.x) {
    const int64_t r0 = rb * kTileRows;
    float best = INFINITY;
    long long best_j = 0;
    for (int64_t j0 = 0; j0 < k; j0 += kTileCodes) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
      wmma::fill_fragment(acc[0], 0.f);
      wmma::fill_fragment(acc[1], 0.f);
      for (int64_t c0 = 0; c0 < d; c0 += kDepth) {
        for (int e = tid; e < kTileRows * kDepth; e += kThreads) {
          const int rr = e / kDepth, cc = e % kDepth;
          const int64_t col = c0 + cc, row = r0 + rr, j = j0 + rr;
          zs[rr * kLd + cc] = (row < n && col < d) ? z[row * d + col] : zero;
          ps[rr * kLd + cc] = (j < k && col < d) ? cb[j * d + col] : zero;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kDepth; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::load_matrix_sync(a, zs + wr * 16 * kLd + kk, kLd);
#pragma unroll
          for (int f = 0; f < 2; ++f) {
            // B = Pᵀ (d × codewords): ps holds P row-major, i.e. B column-major with leading dim kLd.
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(b, ps + (wc * 32 + f * 16) * kLd + kk, kLd);
            wmma::mma_sync(acc[f], a, b, acc[f]);
          }
        }
        __syncthreads();
      }
#pragma unroll
      for (int f = 0; f < 2; ++f)
        wmma::store_matrix_sync(ss + wr * 16 * kLdS + wc * 32 + f * 16, acc[f], kLdS, wmma::mem_row_major);
      __syncthreads();
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        const int jj = sq + 4 * c;
        const int64_t j = j0 + jj;
        if (j < k) {
          const float v = pnorm[j] - 2.f * ss[sr * kLdS + jj];
          if (v < best) {
            best = v;
            best_j = j;
          }
        }
      }
      __syncthreads();
    }
    group_argmin(best, best_j, 4);
    const int64_t row = r0 + sr;
    if (sq == 0 && row < n) index[row] = best_j;
  }
#endif
}

// Exact ‖z_row − p_j‖² in float, summed over the lanes of a warp; every lane returns the total.
template <typename T>
__device__ __forceinline__ float warp_sq_dist(const T* __restrict__ zr, const T* __restrict__ pj, int64_t d, int lane) {
  float s = 0.f;
  for (int64_t c = lane; c < d; c += 32) {
    const float diff = to_float(zr[c]) - to_float(pj[c]);
    s = fmaf(diff, diff, s);
  }
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// One warp per row. With candidates (scores float and candidates int32, [n, num_candidates]; a
// candidate < 0 or ≥ k is an empty slot): the two candidates of least (score, index) are compared on
// their exact distance, the lower (ties → lowest index; no usable candidate → 0) is written to index;
// without candidates, index is read. Then the optional outputs: dist (T) and dist_f32 = exact
// ‖z − p_index‖², v = p_index.
template <typename T>
__global__ void epilogue_kernel(const T* __restrict__ z, const T* __restrict__ cb, const float* __restrict__ scores,
                                const int* __restrict__ candidates, int num_candidates, int64_t* __restrict__ index,
                                int64_t n, int64_t k, int64_t d, T* __restrict__ dist, float* __restrict__ dist_f32,
                                T* __restrict__ v) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < n;
       row += warps) {
    const T* zr = z + row * d;
    int64_t j;
    float s;
    if (candidates != nullptr) {
      // Every lane walks the same few slots (broadcast reads) and so holds the same top-2.
      float s1 = INFINITY, s2 = INFINITY;
      long long j1 = LLONG_MAX, j2 = LLONG_MAX;
      for (int c = 0; c < num_candidates; ++c) {
        const long long cj = candidates[row * num_candidates + c];
        if (cj < 0 || cj >= k) continue;
        const float sc = scores[row * num_candidates + c];
        if (sc < s2 || (sc == s2 && cj < j2)) {
          if (sc < s1 || (sc == s1 && cj < j1)) {
            s2 = s1;
            j2 = j1;
            s1 = sc;
            j1 = cj;
          } else {
            s2 = sc;
            j2 = cj;
          }
        }
      }
      float best = INFINITY;
      long long best_j = LLONG_MAX;
      if (j1 != LLONG_MAX) keep_min(best, best_j, warp_sq_dist(zr, cb + j1 * d, d, lane), j1);
      if (j2 != LLONG_MAX) keep_min(best, best_j, warp_sq_dist(zr, cb + j2 * d, d, lane), j2);
      j = best_j != LLONG_MAX ? best_j : 0;
      s = best_j != LLONG_MAX ? best : warp_sq_dist(zr, cb + j * d, d, lane);
      if (lane == 0) index[row] = j;
    } else {
      j = index[row];
      s = warp_sq_dist(zr, cb + j * d, d, lane);
    }
    if (v != nullptr)
      for (int64_t c = lane; c < d; c += 32) v[row * d + c] = cb[j * d + c];
    if (lane == 0) {
      if (dist != nullptr) dist[row] = from_float<T>(s);
      if (dist_f32 != nullptr) dist_f32[row] = s;
    }
  }
}

template <typename T>
__global__ void grad_z_kernel(const T* __restrict__ z, const T* __restrict__ cb, const int64_t* __restrict__ index,
                              const T* __restrict__ grad_out, const float* __restrict__ w, int64_t w_stride,
                              int64_t n, int64_t k, int64_t d, T* __restrict__ grad_z) {
  const int64_t total = n * d;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, c = e % d, j = index[i];
    float g = grad_out != nullptr ? to_float(grad_out[e]) : 0.f;
    if (j >= 0 && j < k) g += w[i * w_stride] * (to_float(z[e]) - to_float(cb[j * d + c]));
    grad_z[e] = from_float<T>(g);
  }
}

template <typename T>
__global__ void grad_codebook_atomic_kernel(const T* __restrict__ z, const T* __restrict__ cb,
                                            const int64_t* __restrict__ index, const float* __restrict__ w,
                                            int64_t w_stride, int64_t n, int64_t k, int64_t d,
                                            float* __restrict__ acc) {
  const int64_t total = n * d;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, c = e % d, j = index[i];
    if (j < 0 || j >= k) continue;
    atomicAdd(acc + j * d + c, w[i * w_stride] * (to_float(cb[j * d + c]) - to_float(z[e])));
  }
}

template <typename T>
__global__ void grad_codebook_sorted_kernel(const T* __restrict__ z, const T* __restrict__ cb,
                                            const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                                            const float* __restrict__ w, int64_t w_stride, int64_t n, int64_t k,
                                            int64_t d, T* __restrict__ grad_cb) {
  for (int64_t j = blockIdx.x; j < k; j += gridDim.x) {
    const int64_t begin = offsets[j], end = offsets[j + 1];
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float p = to_float(cb[j * d + c]);
      float s = 0.f;
      for (int64_t o = begin; o < end; ++o) {
        const int64_t i = order[o];
        if (i < 0 || i >= n) continue;
        s = fmaf(w[i * w_stride], p - to_float(z[i * d + c]), s);
      }
      grad_cb[j * d + c] = from_float<T>(s);
    }
  }
}

template <typename T> constexpr bool kHasTensorCores = false;
template <> constexpr bool kHasTensorCores<__half> = true;
template <> constexpr bool kHasTensorCores<__nv_bfloat16> = true;

template <typename T>
cudaError_t norms(const void* cb, int64_t k, int64_t d, float* pnorm, cudaStream_t stream) {
  pnorm_kernel<T><<<grid_for(k, kThreads / 32), kThreads, 0, stream>>>(static_cast<const T*>(cb), k, d, pnorm);
  return cudaGetLastError();
}

template <typename T>
cudaError_t nearest(const void* z_, const void* cb_, int64_t n, int64_t k, int64_t d, float* pnorm, int64_t* index,
                    void* dist, float* dist_f32, void* v, bool allow_tensor_cores, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const T* z = static_cast<const T*>(z_);
  const T* cb = static_cast<const T*>(cb_);
  const cudaError_t norms_err = norms<T>(cb, k, d, pnorm, stream);
  if (norms_err != cudaSuccess) return norms_err;
  const unsigned tiles = grid_for(n, kTileRows);
  bool tensor_cores = false;
  if constexpr (kHasTensorCores<T>) {
    if (allow_tensor_cores) {
      // The wmma body is empty in code compiled for older targets (see loaded_ptx_at_least).
      const cudaError_t err = loaded_ptx_at_least(nearest_wmma_kernel<T>, 80, tensor_cores);
      if (err != cudaSuccess) return err;
    }
    if (tensor_cores) nearest_wmma_kernel<T><<<tiles, kThreads, 0, stream>>>(z, cb, pnorm, n, k, d, index);
  }
  if (!tensor_cores) nearest_simt_kernel<T><<<tiles, kThreads, 0, stream>>>(z, cb, pnorm, n, k, d, index);
  epilogue_kernel<T><<<grid_for(n, kThreads / 32), kThreads, 0, stream>>>(
      z, cb, nullptr, nullptr, 0, index, n, k, d, static_cast<T*>(dist), dist_f32, static_cast<T*>(v));
  return cudaGetLastError();
}

template <typename T>
cudaError_t rerank(const void* z, const void* cb, int64_t n, int64_t k, int64_t d, const float* scores,
                   const int* candidates, int num_candidates, int64_t* index, void* dist, float* dist_f32, void* v,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  epilogue_kernel<T><<<grid_for(n, kThreads / 32), kThreads, 0, stream>>>(
      static_cast<const T*>(z), static_cast<const T*>(cb), scores, candidates, num_candidates, index, n, k, d,
      static_cast<T*>(dist), dist_f32, static_cast<T*>(v));
  return cudaGetLastError();
}

}  // namespace

#define FF_VQ_DISPATCH(dtype, CALL)                                  \
  switch (dtype) {                                                   \
    case DType::Float32: { using T = float; return CALL; }           \
    case DType::Float16: { using T = __half; return CALL; }          \
    case DType::BFloat16: { using T = __nv_bfloat16; return CALL; }  \
    default: return cudaErrorInvalidValue;                           \
  }

cudaError_t launch_vq_nearest(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                              float* pnorm, int64_t* index, void* dist, float* dist_f32, void* v,
                              bool allow_tensor_cores, cudaStream_t stream) {
  FF_VQ_DISPATCH(dtype, nearest<T>(z, codebook, n, k, d, pnorm, index, dist, dist_f32, v, allow_tensor_cores,
                                   stream))
}

cudaError_t launch_vq_codeword_norms(DType dtype, const void* codebook, int64_t k, int64_t d, float* pnorm,
                                     cudaStream_t stream) {
  FF_VQ_DISPATCH(dtype, norms<T>(codebook, k, d, pnorm, stream))
}

cudaError_t launch_vq_rerank(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                             const float* scores, const int* candidates, int num_candidates, int64_t* index,
                             void* dist, float* dist_f32, void* v, cudaStream_t stream) {
  FF_VQ_DISPATCH(dtype, rerank<T>(z, codebook, n, k, d, scores, candidates, num_candidates, index, dist, dist_f32, v,
                                  stream))
}

cudaError_t launch_vq_grad_z(DType dtype, const void* z, const void* codebook, const int64_t* index,
                             const void* grad_out, const float* z_weight, int64_t z_weight_stride, int64_t n,
                             int64_t k, int64_t d, void* grad_z, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  FF_VQ_DISPATCH(dtype, (grad_z_kernel<T><<<grid_for(n * d, kThreads), kThreads, 0, stream>>>(
                             static_cast<const T*>(z), static_cast<const T*>(codebook), index,
                             static_cast<const T*>(grad_out), z_weight, z_weight_stride, n, k, d,
                             static_cast<T*>(grad_z)),
                         cudaGetLastError()))
}

cudaError_t launch_vq_grad_codebook_atomic(DType dtype, const void* z, const void* codebook, const int64_t* index,
                                           const float* weight, int64_t weight_stride, int64_t n, int64_t k,
                                           int64_t d, float* acc, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  FF_VQ_DISPATCH(dtype, (grad_codebook_atomic_kernel<T><<<grid_for(n * d, kThreads), kThreads, 0, stream>>>(
                             static_cast<const T*>(z), static_cast<const T*>(codebook), index, weight,
                             weight_stride, n, k, d, acc),
                         cudaGetLastError()))
}

cudaError_t launch_vq_grad_codebook_sorted(DType dtype, const void* z, const void* codebook, const int64_t* order,
                                           const int64_t* offsets, const float* weight, int64_t weight_stride,
                                           int64_t n, int64_t k, int64_t d, void* grad_codebook,
                                           cudaStream_t stream) {
  const int threads = d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32));
  FF_VQ_DISPATCH(dtype, (grad_codebook_sorted_kernel<T><<<grid_for(k, 1), threads, 0, stream>>>(
                             static_cast<const T*>(z), static_cast<const T*>(codebook), order, offsets, weight,
                             weight_stride, n, k, d, static_cast<T*>(grad_codebook)),
                         cudaGetLastError()))
}

}  // namespace fact_fast
