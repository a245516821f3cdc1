// vq_nearest on CUDA, simplest correct form: one block per row (grid-stride over rows), threads
// stride over codewords with float accumulation, then a block argmin that prefers the lowest
// index on ties. No N×K buffer. No torch headers here, so nvcc compiles this file quickly.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "vq_kernels.h"

namespace fact_fast {
namespace {

constexpr int kThreads = 256;

template <typename T> __device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

template <typename T, typename Acc>
__global__ void vq_nearest_kernel(const T* __restrict__ z, const T* __restrict__ codebook, int64_t n, int64_t k,
                                  int64_t d, int64_t* __restrict__ index, T* __restrict__ dist) {
  __shared__ Acc best_val[kThreads];
  __shared__ int64_t best_idx[kThreads];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* zr = z + row * d;
    Acc best = Acc(INFINITY);
    int64_t best_j = k;
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      const T* pj = codebook + j * d;
      Acc acc = 0;
      for (int64_t c = 0; c < d; ++c) {
        const Acc diff = Acc(to_float(zr[c])) - Acc(to_float(pj[c]));
        acc += diff * diff;
      }
      if (acc < best) { best = acc; best_j = j; }
    }
    best_val[threadIdx.x] = best;
    best_idx[threadIdx.x] = best_j;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        const Acc ov = best_val[threadIdx.x + s];
        const int64_t oi = best_idx[threadIdx.x + s];
        if (ov < best_val[threadIdx.x] || (ov == best_val[threadIdx.x] && oi < best_idx[threadIdx.x])) {
          best_val[threadIdx.x] = ov;
          best_idx[threadIdx.x] = oi;
        }
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      // A row of NaNs finds no smaller value; report codeword 0 rather than an out-of-range index.
      index[row] = best_idx[0] < k ? best_idx[0] : 0;
      dist[row] = from_float<T>(static_cast<float>(best_val[0]));
    }
    __syncthreads();
  }
}

template <typename T, typename Acc>
cudaError_t launch(const void* z, const void* codebook, int64_t n, int64_t k, int64_t d, int64_t* index, void* dist,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(n < 65535 * 32 ? n : 65535 * 32);
  vq_nearest_kernel<T, Acc><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(z),
                                                            static_cast<const T*>(codebook), n, k, d, index,
                                                            static_cast<T*>(dist));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_vq_nearest(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                              int64_t* index, void* dist, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32: return launch<float, float>(z, codebook, n, k, d, index, dist, stream);
    case DType::Float16: return launch<__half, float>(z, codebook, n, k, d, index, dist, stream);
    case DType::BFloat16: return launch<__nv_bfloat16, float>(z, codebook, n, k, d, index, dist, stream);
    case DType::Float64: return launch<double, double>(z, codebook, n, k, d, index, dist, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fact_fast
