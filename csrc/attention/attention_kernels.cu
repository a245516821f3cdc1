// Sigmoid attention on CUDA: flash-style tiles in shared memory, float accumulation.
//
// Forward: a block owns kBlockM query rows of one batch element (grid-stride over (batch, query
// block) units). It keeps q·scale in shared memory and walks the keys in tiles of kBlockN:
// S = q kᵀ, P = σ(S + bias) into a kBlockM×kBlockN shared tile, then O += P v with the output
// rows held in registers (kBlockM·dv / kThreads accumulators per thread, dv ≤ 512). No Lq×Lk buffer.
//
// Backward recomputes P (sigmoid needs no row statistics) in two kernels that own their outputs,
// so there are no atomics and the summation order is fixed:
//   * key-block kernel: dV = Σ_q Pᵀ dO, dK = Σ_q dSᵀ q (dV + dK into one buffer when keys = values);
//   * query-block kernel: dQ = Σ_k dS k;
// with dS = P(1−P)·(dO vᵀ)·scale.
//
// Two forms of the forward, neither run on a GPU yet (correctness first):
//   * scalar FMA on float tiles (every dtype and head dim ≤ 512); shared tiles are padded by one
//     float per row so that column walks do not hit the same bank;
//   * tensor cores (wmma 16×16×16, sm_80+) for float16/bfloat16 when both head dims are multiples
//     of 16 and the loaded code was compiled for compute_80+ (not merely run on an sm_80+ device):
//     S and O = P v are mma tiles, P is rounded to the input dtype as in flash attention.
// The backward is scalar FMA.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "attention_kernels.h"
#include "../common/arch.cuh"
#include "../common/convert.cuh"

namespace fact_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kBlockM = 16;  // query rows per tile
constexpr int kBlockN = 16;  // keys per tile
// Register accumulators per thread for a 16-row tile of up to kAttentionMaxHeadDim columns.
constexpr int kMaxPerThread = kBlockM * static_cast<int>(kAttentionMaxHeadDim) / kThreads;
static_assert(kBlockM == kBlockN, "the accumulator count assumes square tiles");


__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

template <typename T>
struct Operand {
  const T* data;
  int64_t sb, sl, sd;
  __device__ __forceinline__ float at(int64_t b, int64_t l, int64_t c) const {
    return to_float(data[b * sb + l * sl + c * sd]);
  }
};

template <typename T>
Operand<T> operand(const AttentionOperand& x) {
  return {static_cast<const T*>(x.data), x.stride_b, x.stride_l, x.stride_d};
}

// Rows [r0, r0 + rows) of batch element b into a shared [rows][ld] float tile, times mul; rows at
// or past len are zero, so the tiles at the sequence ends need no further masking in the products.
template <typename T>
__device__ void load_tile(float* tile, int ld, const Operand<T>& x, int64_t b, int64_t r0, int rows, int64_t len,
                          int width, float mul) {
  for (int idx = threadIdx.x; idx < rows * width; idx += blockDim.x) {
    const int r = idx / width, c = idx % width;
    tile[r * ld + c] = r0 + r < len ? x.at(b, r0 + r, c) * mul : 0.f;
  }
}

__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

// acc[t] += Σ_k a[r][k]·b[k][c] over the kBlockN-wide inner dim, for the element (r, c) of a
// rows × width product that this thread owns in slot t (flat index threadIdx.x + t·kThreads);
// a is a [rows][kBlockN] shared tile, b a [kBlockN][ldb] one. Fixed summation order.
__device__ __forceinline__ void accumulate_product(float (&acc)[kMaxPerThread], const float* a, const float* b,
                                                   int ldb, int rows, int width) {
#pragma unroll
  for (int t = 0; t < kMaxPerThread; ++t) {
    const int idx = threadIdx.x + t * kThreads;
    if (idx < rows * width) {
      const int r = idx / width, c = idx % width;
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < kBlockN; ++k) s += a[r * kBlockN + k] * b[k * ldb + c];
      acc[t] += s;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_fwd_kernel(Operand<T> q, Operand<T> k, Operand<T> v, T* __restrict__ out, int64_t batch, int64_t lq,
                         int64_t lk, int d, int dv, float scale, float bias, bool residual) {
  extern __shared__ float smem[];
  const int ldq = d + 1, ldkv = (d > dv ? d : dv) + 1;
  float* qs = smem;                  // [kBlockM][ldq]  q·scale
  float* kvs = qs + kBlockM * ldq;   // [kBlockN][ldkv] a key tile, then the value tile
  float* ps = kvs + kBlockN * ldkv;  // [kBlockM][kBlockN]
  const int64_t q_blocks = (lq + kBlockM - 1) / kBlockM;
  for (int64_t unit = blockIdx.x; unit < batch * q_blocks; unit += gridDim.x) {
    const int64_t b = unit / q_blocks, q0 = (unit % q_blocks) * kBlockM;
    float acc[kMaxPerThread];
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) acc[t] = 0.f;
    __syncthreads();  // the previous unit is done with qs
    load_tile(qs, ldq, q, b, q0, kBlockM, lq, d, scale);
    for (int64_t k0 = 0; k0 < lk; k0 += kBlockN) {
      __syncthreads();  // qs loaded; the previous tile's users of kvs and ps are done
      load_tile(kvs, ldkv, k, b, k0, kBlockN, lk, d, 1.f);
      __syncthreads();
      for (int idx = threadIdx.x; idx < kBlockM * kBlockN; idx += blockDim.x) {
        const int i = idx / kBlockN, j = idx % kBlockN;
        ps[idx] = k0 + j < lk ? sigmoid(dot(qs + i * ldq, kvs + j * ldkv, d) + bias) : 0.f;
      }
      __syncthreads();
      load_tile(kvs, ldkv, v, b, k0, kBlockN, lk, dv, 1.f);
      __syncthreads();
      accumulate_product(acc, ps, kvs, ldkv, kBlockM, dv);
    }
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) {
      const int idx = threadIdx.x + t * kThreads;
      if (idx < kBlockM * dv) {
        const int i = idx / dv, c = idx % dv;
        if (q0 + i < lq) {
          const float o = acc[t] + (residual ? q.at(b, q0 + i, c) : 0.f);
          out[((b * lq) + q0 + i) * dv + c] = from_float<T>(o);
        }
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_kv_kernel(Operand<T> go, Operand<T> q, Operand<T> k, Operand<T> v, T* __restrict__ dk_out,
                            T* __restrict__ dv_out, int64_t batch, int64_t lq, int64_t lk, int d, int dv, float scale,
                            float bias, bool kv_shared) {
  extern __shared__ float smem[];
  const int ldq = d + 1, ldv = dv + 1;
  float* ks = smem;                  // [kBlockN][ldq]
  float* vs = ks + kBlockN * ldq;    // [kBlockN][ldv]
  float* qs = vs + kBlockN * ldv;    // [kBlockM][ldq]
  float* gs = qs + kBlockM * ldq;    // [kBlockM][ldv]  dO
  float* pt = gs + kBlockM * ldv;    // [kBlockN][kBlockM]  Pᵀ
  float* dst = pt + kBlockN * kBlockM;  // [kBlockN][kBlockM]  dSᵀ
  const int64_t k_blocks = (lk + kBlockN - 1) / kBlockN;
  for (int64_t unit = blockIdx.x; unit < batch * k_blocks; unit += gridDim.x) {
    const int64_t b = unit / k_blocks, k0 = (unit % k_blocks) * kBlockN;
    float dk_acc[kMaxPerThread], dv_acc[kMaxPerThread];
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) dk_acc[t] = dv_acc[t] = 0.f;
    __syncthreads();
    load_tile(ks, ldq, k, b, k0, kBlockN, lk, d, 1.f);
    load_tile(vs, ldv, v, b, k0, kBlockN, lk, dv, 1.f);
    for (int64_t q0 = 0; q0 < lq; q0 += kBlockM) {
      __syncthreads();
      load_tile(qs, ldq, q, b, q0, kBlockM, lq, d, 1.f);
      load_tile(gs, ldv, go, b, q0, kBlockM, lq, dv, 1.f);
      __syncthreads();
      for (int idx = threadIdx.x; idx < kBlockN * kBlockM; idx += blockDim.x) {
        const int j = idx / kBlockM, i = idx % kBlockM;
        const bool valid = q0 + i < lq && k0 + j < lk;
        const float p = sigmoid(dot(qs + i * ldq, ks + j * ldq, d) * scale + bias);
        const float dp = dot(gs + i * ldv, vs + j * ldv, dv);
        pt[idx] = valid ? p : 0.f;
        dst[idx] = valid ? p * (1.f - p) * dp * scale : 0.f;
      }
      __syncthreads();
      accumulate_product(dv_acc, pt, gs, ldv, kBlockN, dv);
      accumulate_product(dk_acc, dst, qs, ldq, kBlockN, d);
    }
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) {
      const int idx = threadIdx.x + t * kThreads;
      if (kv_shared) {  // d == dv: the same (row, column) in both accumulators
        if (idx < kBlockN * dv && k0 + idx / dv < lk)
          dv_out[(b * lk + k0) * dv + idx] = from_float<T>(dv_acc[t] + dk_acc[t]);
        continue;
      }
      if (idx < kBlockN * dv && k0 + idx / dv < lk) dv_out[(b * lk + k0) * dv + idx] = from_float<T>(dv_acc[t]);
      if (idx < kBlockN * d && k0 + idx / d < lk) dk_out[(b * lk + k0) * d + idx] = from_float<T>(dk_acc[t]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_q_kernel(Operand<T> go, Operand<T> q, Operand<T> k, Operand<T> v, T* __restrict__ dq_out,
                           int64_t batch, int64_t lq, int64_t lk, int d, int dv, float scale, float bias) {
  extern __shared__ float smem[];
  const int ldq = d + 1, ldv = dv + 1;
  float* qs = smem;                 // [kBlockM][ldq]
  float* gs = qs + kBlockM * ldq;   // [kBlockM][ldv]
  float* ks = gs + kBlockM * ldv;   // [kBlockN][ldq]
  float* vs = ks + kBlockN * ldq;   // [kBlockN][ldv]
  float* ds = vs + kBlockN * ldv;   // [kBlockM][kBlockN]
  const int64_t q_blocks = (lq + kBlockM - 1) / kBlockM;
  for (int64_t unit = blockIdx.x; unit < batch * q_blocks; unit += gridDim.x) {
    const int64_t b = unit / q_blocks, q0 = (unit % q_blocks) * kBlockM;
    float dq_acc[kMaxPerThread];
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) dq_acc[t] = 0.f;
    __syncthreads();
    load_tile(qs, ldq, q, b, q0, kBlockM, lq, d, 1.f);
    load_tile(gs, ldv, go, b, q0, kBlockM, lq, dv, 1.f);
    for (int64_t k0 = 0; k0 < lk; k0 += kBlockN) {
      __syncthreads();
      load_tile(ks, ldq, k, b, k0, kBlockN, lk, d, 1.f);
      load_tile(vs, ldv, v, b, k0, kBlockN, lk, dv, 1.f);
      __syncthreads();
      for (int idx = threadIdx.x; idx < kBlockM * kBlockN; idx += blockDim.x) {
        const int i = idx / kBlockN, j = idx % kBlockN;
        const float p = sigmoid(dot(qs + i * ldq, ks + j * ldq, d) * scale + bias);
        const float dp = dot(gs + i * ldv, vs + j * ldv, dv);
        ds[idx] = q0 + i < lq && k0 + j < lk ? p * (1.f - p) * dp * scale : 0.f;
      }
      __syncthreads();
      accumulate_product(dq_acc, ds, ks, ldq, kBlockM, d);
    }
#pragma unroll
    for (int t = 0; t < kMaxPerThread; ++t) {
      const int idx = threadIdx.x + t * kThreads;
      if (idx < kBlockM * d && q0 + idx / d < lq) dq_out[(b * lq + q0) * d + idx] = from_float<T>(dq_acc[t]);
    }
  }
}

// --- tensor-core forward ---------------------------------------------------------------------------

constexpr int kTcWarps = 4;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcBlockM = 16;               // query rows per block: one wmma row tile
constexpr int kTcBlockN = 16 * kTcWarps;    // keys per tile: one 16-key S fragment per warp
constexpr int kTcMaxFrags = static_cast<int>(kAttentionMaxHeadDim) / 16 / kTcWarps;  // output fragments per warp
constexpr int kTcLdS = kTcBlockN + 4;       // float rows: wmma needs ldm % 4 == 0
constexpr int kTcLdP = kTcBlockN + 8;       // 16-bit rows: ldm % 8 == 0 keeps 32-byte aligned fragments

template <typename T>
__device__ void load_tile_raw(T* tile, int ld, const Operand<T>& x, int64_t b, int64_t r0, int rows, int64_t len,
                              int width) {
  for (int idx = threadIdx.x; idx < rows * width; idx += blockDim.x) {
    const int r = idx / width, c = idx % width;
    tile[r * ld + c] = r0 + r < len ? x.data[b * x.sb + (r0 + r) * x.sl + c * x.sd] : from_float<T>(0.f);
  }
}

// Launched only for T in {__half, __nv_bfloat16}, d % 16 == dv % 16 == 0, and only where the code the
// runtime loaded for it was compiled for compute_80+ (checked on the host with loaded_ptx_at_least);
// for older targets the body compiles to nothing.
template <typename T>
__global__ void __launch_bounds__(kTcThreads)
    attention_fwd_wmma_kernel(Operand<T> q, Operand<T> k, Operand<T> v, T* __restrict__ out, int64_t batch,
                              int64_t lq, int64_t lk, int d, int dv, float scale, float bias, bool residual) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char tc_smem[];
  const int ldq = d + 8, ldkv = (d > dv ? d : dv) + 8, ldo = dv + 4;
  T* qs = reinterpret_cast<T*>(tc_smem);                       // [16][ldq]
  T* kvs = qs + kTcBlockM * ldq;                               // [64][ldkv] keys, then values
  float* ss = reinterpret_cast<float*>(kvs + kTcBlockN * ldkv);  // [16][kTcLdS] scores
  T* ps = reinterpret_cast<T*>(ss + kTcBlockM * kTcLdS);       // [16][kTcLdP] probabilities
  float* os = reinterpret_cast<float*>(kvs);                   // [16][ldo] output staging (after the loop)
  const int warp = threadIdx.x / 32;
  const int out_frags = dv / 16;
  const int64_t q_blocks = (lq + kTcBlockM - 1) / kTcBlockM;
  for (int64_t unit = blockIdx.x; unit < batch * q_blocks; unit += gridDim.x) {
    const int64_t b = unit / q_blocks, q0 = (unit % q_blocks) * kTcBlockM;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTcMaxFrags];
#pragma unroll
    for (int f = 0; f < kTcMaxFrags; ++f) wmma::fill_fragment(acc[f], 0.f);
    __syncthreads();  // the previous unit is done with qs and os
    load_tile_raw(qs, ldq, q, b, q0, kTcBlockM, lq, d);
    for (int64_t k0 = 0; k0 < lk; k0 += kTcBlockN) {
      __syncthreads();  // the previous tile's readers of kvs and ps are done
      load_tile_raw(kvs, ldkv, k, b, k0, kTcBlockN, lk, d);
      __syncthreads();
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
      wmma::fill_fragment(s, 0.f);
      for (int c = 0; c < d; c += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kt;  // kᵀ = k read column-major
        wmma::load_matrix_sync(a, qs + c, ldq);
        wmma::load_matrix_sync(kt, kvs + warp * 16 * ldkv + c, ldkv);
        wmma::mma_sync(s, a, kt, s);
      }
      wmma::store_matrix_sync(ss + warp * 16, s, kTcLdS, wmma::mem_row_major);
      __syncthreads();  // every warp has its scores and is done reading the keys
      for (int idx = threadIdx.x; idx < kTcBlockM * kTcBlockN; idx += blockDim.x) {
        const int i = idx / kTcBlockN, j = idx % kTcBlockN;
        ps[i * kTcLdP + j] = from_float<T>(k0 + j < lk ? sigmoid(ss[i * kTcLdS + j] * scale + bias) : 0.f);
      }
      load_tile_raw(kvs, ldkv, v, b, k0, kTcBlockN, lk, dv);
      __syncthreads();
#pragma unroll
      for (int f = 0; f < kTcMaxFrags; ++f) {
        const int col = (warp + f * kTcWarps) * 16;
        if (col < out_frags * 16) {
          for (int kk = 0; kk < kTcBlockN; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
            wmma::load_matrix_sync(p, ps + kk, kTcLdP);
            wmma::load_matrix_sync(vf, kvs + kk * ldkv + col, ldkv);
            wmma::mma_sync(acc[f], p, vf, acc[f]);
          }
        }
      }
    }
    __syncthreads();  // kvs is free: stage the output rows there
#pragma unroll
    for (int f = 0; f < kTcMaxFrags; ++f) {
      const int col = (warp + f * kTcWarps) * 16;
      if (col < out_frags * 16) wmma::store_matrix_sync(os + col, acc[f], ldo, wmma::mem_row_major);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTcBlockM * dv; idx += blockDim.x) {
      const int i = idx / dv, c = idx % dv;
      if (q0 + i < lq) {
        const float o = os[i * ldo + c] + (residual ? q.at(b, q0 + i, c) : 0.f);
        out[((b * lq) + q0 + i) * dv + c] = from_float<T>(o);
      }
    }
  }
#endif
}

template <typename T> constexpr bool kHasTensorCorePath = false;
template <> constexpr bool kHasTensorCorePath<__half> = true;
template <> constexpr bool kHasTensorCorePath<__nv_bfloat16> = true;

unsigned grid_for(int64_t units) {
  constexpr int64_t kMaxBlocks = 65535LL * 32;
  return static_cast<unsigned>(units < kMaxBlocks ? units : kMaxBlocks);
}

// Opt in to more than 48 KiB of dynamic shared memory when the head dims need it.
template <typename Kernel>
cudaError_t prepare(Kernel kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

template <typename T>
cudaError_t forward(AttentionOperand q, AttentionOperand k, AttentionOperand v, void* out, int64_t batch, int64_t lq,
                    int64_t lk, int d, int dv, float scale, float bias, bool residual, cudaStream_t stream) {
  if (batch * lq == 0 || dv == 0) return cudaSuccess;
  if constexpr (kHasTensorCorePath<T>) {
    bool tensor_cores = false;
    if (d > 0 && d % 16 == 0 && dv % 16 == 0) {
      const cudaError_t err = loaded_ptx_at_least(attention_fwd_wmma_kernel<T>, 80, tensor_cores);
      if (err != cudaSuccess) return err;
    }
    if (tensor_cores) {
      const int64_t units = batch * ((lq + kTcBlockM - 1) / kTcBlockM);
      const int ldkv = (d > dv ? d : dv) + 8;
      const size_t smem = sizeof(T) * (kTcBlockM * (d + 8) + kTcBlockN * ldkv + kTcBlockM * kTcLdP) +
                          sizeof(float) * kTcBlockM * kTcLdS;
      cudaError_t err = prepare(attention_fwd_wmma_kernel<T>, smem);
      if (err != cudaSuccess) return err;
      attention_fwd_wmma_kernel<T><<<grid_for(units), kTcThreads, smem, stream>>>(
          operand<T>(q), operand<T>(k), operand<T>(v), static_cast<T*>(out), batch, lq, lk, d, dv, scale, bias,
          residual);
      return cudaGetLastError();
    }
  }
  const int64_t units = batch * ((lq + kBlockM - 1) / kBlockM);
  const int ldkv = (d > dv ? d : dv) + 1;
  const size_t smem = sizeof(float) * (kBlockM * (d + 1) + kBlockN * ldkv + kBlockM * kBlockN);
  cudaError_t err = prepare(attention_fwd_kernel<T>, smem);
  if (err != cudaSuccess) return err;
  attention_fwd_kernel<T><<<grid_for(units), kThreads, smem, stream>>>(
      operand<T>(q), operand<T>(k), operand<T>(v), static_cast<T*>(out), batch, lq, lk, d, dv, scale, bias, residual);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(AttentionOperand go, AttentionOperand q, AttentionOperand k, AttentionOperand v, void* dq,
                     void* dk, void* dv_out, int64_t batch, int64_t lq, int64_t lk, int d, int dv, float scale,
                     float bias, bool kv_shared, cudaStream_t stream) {
  const size_t tiles = sizeof(float) * ((kBlockM + kBlockN) * (d + 1) + (kBlockM + kBlockN) * (dv + 1));
  const int64_t kv_units = batch * ((lk + kBlockN - 1) / kBlockN);
  if (kv_units > 0) {
    const size_t smem = tiles + sizeof(float) * 2 * kBlockN * kBlockM;
    cudaError_t err = prepare(attention_bwd_kv_kernel<T>, smem);
    if (err != cudaSuccess) return err;
    attention_bwd_kv_kernel<T><<<grid_for(kv_units), kThreads, smem, stream>>>(
        operand<T>(go), operand<T>(q), operand<T>(k), operand<T>(v), static_cast<T*>(dk), static_cast<T*>(dv_out),
        batch, lq, lk, d, dv, scale, bias, kv_shared);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int64_t q_units = batch * ((lq + kBlockM - 1) / kBlockM);
  if (q_units > 0 && d > 0) {
    const size_t smem = tiles + sizeof(float) * kBlockM * kBlockN;
    cudaError_t err = prepare(attention_bwd_q_kernel<T>, smem);
    if (err != cudaSuccess) return err;
    attention_bwd_q_kernel<T><<<grid_for(q_units), kThreads, smem, stream>>>(
        operand<T>(go), operand<T>(q), operand<T>(k), operand<T>(v), static_cast<T*>(dq), batch, lq, lk, d, dv,
        scale, bias);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_sigmoid_attention_forward(DType dtype, AttentionOperand q, AttentionOperand k, AttentionOperand v,
                                             void* out, int64_t batch, int64_t lq, int64_t lk, int64_t d,
                                             int64_t dv, float scale, float bias, bool residual,
                                             cudaStream_t stream) {
  if (d > kAttentionMaxHeadDim || dv > kAttentionMaxHeadDim) return cudaErrorInvalidValue;
  const int di = static_cast<int>(d), dvi = static_cast<int>(dv);
  switch (dtype) {
    case DType::Float32: return forward<float>(q, k, v, out, batch, lq, lk, di, dvi, scale, bias, residual, stream);
    case DType::Float16: return forward<__half>(q, k, v, out, batch, lq, lk, di, dvi, scale, bias, residual, stream);
    case DType::BFloat16:
      return forward<__nv_bfloat16>(q, k, v, out, batch, lq, lk, di, dvi, scale, bias, residual, stream);
    case DType::Float64: break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_sigmoid_attention_backward(DType dtype, AttentionOperand grad_out, AttentionOperand q,
                                              AttentionOperand k, AttentionOperand v, void* dq, void* dk, void* dv,
                                              int64_t batch, int64_t lq, int64_t lk, int64_t d, int64_t dv_dim,
                                              float scale, float bias, bool kv_shared, cudaStream_t stream) {
  if (d > kAttentionMaxHeadDim || dv_dim > kAttentionMaxHeadDim) return cudaErrorInvalidValue;
  const int di = static_cast<int>(d), dvi = static_cast<int>(dv_dim);
  switch (dtype) {
    case DType::Float32:
      return backward<float>(grad_out, q, k, v, dq, dk, dv, batch, lq, lk, di, dvi, scale, bias, kv_shared, stream);
    case DType::Float16:
      return backward<__half>(grad_out, q, k, v, dq, dk, dv, batch, lq, lk, di, dvi, scale, bias, kv_shared, stream);
    case DType::BFloat16:
      return backward<__nv_bfloat16>(grad_out, q, k, v, dq, dk, dv, batch, lq, lk, di, dvi, scale, bias, kv_shared,
                                     stream);
    case DType::Float64: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace fact_fast
