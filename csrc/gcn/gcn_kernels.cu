// gcn_spmm and its edge-value gradient on CUDA. One warp per row (grid-stride over rows), so a
// row's sum is computed by one warp in a fixed order: deterministic, no atomics.
//
// SpMM: each lane owns VEC contiguous features (16-byte vector loads when f and the pointer
// allow), so a warp reads a neighbour's feature row in coalesced 512-byte pieces. The row's edges
// are loaded 32 at a time, one per lane, with their weights w_e * dinv[col_e] already applied,
// and broadcast by shuffles. Every index is clamped or skipped when out of range, so even a
// malformed CSR passed directly to the op never reads out of bounds.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gcn_kernels.h"

namespace fact_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <typename T> __device__ __forceinline__ T from_acc(double v) { return v; }  // double -> double

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename I>
__device__ __forceinline__ void row_bounds(const I* rowptr, int64_t row, int64_t nnz, int64_t& e0, int64_t& e1) {
  e0 = static_cast<int64_t>(rowptr[row]);
  e1 = static_cast<int64_t>(rowptr[row + 1]);
  e0 = e0 < 0 ? 0 : (e0 > nnz ? nnz : e0);
  e1 = e1 < e0 ? e0 : (e1 > nnz ? nnz : e1);
}

// Calls body(row, e0, e1, dinv[row]) for each row of this warp (grid-stride). Rows are warp-uniform,
// so every lane of the warp runs the body with the same row and may take part in shuffles.
template <typename I, typename Acc, typename Body>
__device__ __forceinline__ void for_each_warp_row(const I* rowptr, const Acc* dinv, int64_t n, int64_t nnz,
                                                  Body&& body) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; row < n; row += stride) {
    int64_t e0, e1;
    row_bounds(rowptr, row, nnz, e0, e1);
    body(row, e0, e1, dinv[row]);
  }
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename T, typename Acc, typename I, int VEC>
__global__ void __launch_bounds__(kThreads)
    spmm_kernel(const T* __restrict__ x, const I* __restrict__ rowptr, const I* __restrict__ col,
                const Acc* __restrict__ value, const Acc* __restrict__ dinv, int64_t n, int64_t nnz, int64_t f,
                bool self_loop, T* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  for_each_warp_row(rowptr, dinv, n, nnz, [&](int64_t row, int64_t e0, int64_t e1, Acc di) {
    // Feature chunks are warp-uniform so every lane takes part in the shuffles below.
    for (int64_t base = 0; base < f; base += 32 * VEC) {
      const int64_t f0 = base + lane * VEC;
      const bool active = f0 < f;  // f % VEC == 0, so an active lane owns VEC valid features
      Acc acc[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[v] = Acc(0);
      for (int64_t eb = e0; eb < e1; eb += 32) {
        long long c = -1;
        Acc w = Acc(0);
        if (eb + lane < e1) {
          const int64_t cc = static_cast<int64_t>(col[eb + lane]);
          if (cc >= 0 && cc < n) {
            c = cc;
            w = (value ? value[eb + lane] : Acc(1)) * dinv[cc];
          }
        }
        const int count = e1 - eb < 32 ? static_cast<int>(e1 - eb) : 32;
        for (int j = 0; j < count; ++j) {
          const long long cj = __shfl_sync(kFull, c, j);
          const Acc wj = __shfl_sync(kFull, w, j);
          if (cj < 0 || !active) continue;
          const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + cj * f + f0);
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[v] += wj * to_acc(p.v[v]);
        }
      }
      if (active) {
        if (self_loop) {
          const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + row * f + f0);
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[v] += di * to_acc(p.v[v]);
        }
        Pack<T, VEC> o;
#pragma unroll
        for (int v = 0; v < VEC; ++v) o.v[v] = from_acc<T>(di * acc[v]);
        *reinterpret_cast<Pack<T, VEC>*>(out + row * f + f0) = o;
      }
    }
  });
}

template <typename T, typename Acc>
__device__ __forceinline__ Acc warp_dot(const T* a, const T* b, int64_t f, int lane) {
  Acc s = Acc(0);
  for (int64_t k = lane; k < f; k += 32) s += to_acc(a[k]) * to_acc(b[k]);
  return warp_sum(s);
}

// d value_e = dinv_r dinv_c <g_r, x_c> + t_r with
// t_r = -1/2 dinv_r^2 (dinv_r a_r + <dx_r, x_r> + s dinv_r^2 <g_r, x_r>),  a_r = sum_e w_e dinv_c <g_r, x_c>.
template <typename T, typename Acc, typename I>
__global__ void __launch_bounds__(kThreads)
    value_grad_kernel(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ dx,
                      const I* __restrict__ rowptr, const I* __restrict__ col, const Acc* __restrict__ value,
                      const Acc* __restrict__ dinv, int64_t n, int64_t nnz, int64_t f, bool self_loop,
                      bool normalize, Acc* __restrict__ dvalue) {
  const int lane = threadIdx.x & 31;
  for_each_warp_row(rowptr, dinv, n, nnz, [&](int64_t row, int64_t e0, int64_t e1, Acc di) {
    const T* gr = grad + row * f;
    Acc a = Acc(0);
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t c = static_cast<int64_t>(col[e]);
      const bool valid = c >= 0 && c < n;
      const Acc p = valid ? warp_dot<T, Acc>(gr, x + c * f, f, lane) : Acc(0);
      const Acc dc = valid ? dinv[c] : Acc(0);
      if (lane == 0) dvalue[e] = di * dc * p;
      a += (value ? value[e] : Acc(1)) * dc * p;
    }
    if (!normalize || di == Acc(0)) return;
    Acc inner = di * a + warp_dot<T, Acc>(dx + row * f, x + row * f, f, lane);
    if (self_loop) inner += di * di * warp_dot<T, Acc>(gr, x + row * f, f, lane);
    const Acc t = Acc(-0.5) * di * di * inner;
    __syncwarp();  // lane 0's stores above are visible to the whole warp
    for (int64_t e = e0 + lane; e < e1; e += 32) dvalue[e] += t;
  });
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kWarps - 1) / kWarps;
  return static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : (int64_t{1} << 20));
}

template <typename T, typename Acc, typename I>
cudaError_t spmm_typed(const void* x, const void* rowptr, const void* col, const void* value, const void* dinv,
                       int64_t n, int64_t nnz, int64_t f, bool self_loop, void* out, cudaStream_t stream) {
  if (n == 0 || f == 0) return cudaSuccess;
  constexpr int kVec = static_cast<int>(16 / sizeof(T));  // 16-byte loads
  const bool vec_ok = f % kVec == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const auto* xp = static_cast<const T*>(x);
  const auto* rp = static_cast<const I*>(rowptr);
  const auto* cp = static_cast<const I*>(col);
  const auto* vp = static_cast<const Acc*>(value);
  const auto* dp = static_cast<const Acc*>(dinv);
  auto* op = static_cast<T*>(out);
  if (vec_ok) {
    spmm_kernel<T, Acc, I, kVec><<<grid_for(n), kThreads, 0, stream>>>(xp, rp, cp, vp, dp, n, nnz, f, self_loop, op);
  } else {
    spmm_kernel<T, Acc, I, 1><<<grid_for(n), kThreads, 0, stream>>>(xp, rp, cp, vp, dp, n, nnz, f, self_loop, op);
  }
  return cudaGetLastError();
}

template <typename T, typename Acc, typename I>
cudaError_t value_grad_typed(const void* grad, const void* x, const void* dx, const void* rowptr, const void* col,
                             const void* value, const void* dinv, int64_t n, int64_t nnz, int64_t f,
                             bool self_loop, bool normalize, void* dvalue, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  value_grad_kernel<T, Acc, I><<<grid_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const T*>(dx),
      static_cast<const I*>(rowptr), static_cast<const I*>(col), static_cast<const Acc*>(value),
      static_cast<const Acc*>(dinv), n, nnz, f, self_loop, normalize, static_cast<Acc*>(dvalue));
  return cudaGetLastError();
}

template <typename I>
cudaError_t spmm_dispatch(DType dtype, const void* x, const void* rowptr, const void* col, const void* value,
                          const void* dinv, int64_t n, int64_t nnz, int64_t f, bool self_loop, void* out,
                          cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32: return spmm_typed<float, float, I>(x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream);
    case DType::Float16: return spmm_typed<__half, float, I>(x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream);
    case DType::BFloat16: return spmm_typed<__nv_bfloat16, float, I>(x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream);
    case DType::Float64: return spmm_typed<double, double, I>(x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename I>
cudaError_t value_grad_dispatch(DType dtype, const void* grad, const void* x, const void* dx, const void* rowptr,
                                const void* col, const void* value, const void* dinv, int64_t n, int64_t nnz,
                                int64_t f, bool self_loop, bool normalize, void* dvalue, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32:
      return value_grad_typed<float, float, I>(grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop, normalize, dvalue, stream);
    case DType::Float16:
      return value_grad_typed<__half, float, I>(grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop, normalize, dvalue, stream);
    case DType::BFloat16:
      return value_grad_typed<__nv_bfloat16, float, I>(grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop, normalize, dvalue, stream);
    case DType::Float64:
      return value_grad_typed<double, double, I>(grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop, normalize, dvalue, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_gcn_spmm(DType dtype, bool index64, const void* x, const void* rowptr, const void* col,
                            const void* value, const void* dinv, int64_t n, int64_t nnz, int64_t f, bool self_loop,
                            void* out, cudaStream_t stream) {
  return index64 ? spmm_dispatch<int64_t>(dtype, x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream)
                 : spmm_dispatch<int32_t>(dtype, x, rowptr, col, value, dinv, n, nnz, f, self_loop, out, stream);
}

cudaError_t launch_gcn_value_grad(DType dtype, bool index64, const void* grad, const void* x, const void* dx,
                                  const void* rowptr, const void* col, const void* value, const void* dinv,
                                  int64_t n, int64_t nnz, int64_t f, bool self_loop, bool normalize, void* dvalue,
                                  cudaStream_t stream) {
  return index64 ? value_grad_dispatch<int64_t>(dtype, grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop,
                                                normalize, dvalue, stream)
                 : value_grad_dispatch<int32_t>(dtype, grad, x, dx, rowptr, col, value, dinv, n, nnz, f, self_loop,
                                                normalize, dvalue, stream);
}

}  // namespace fact_fast
