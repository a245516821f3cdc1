// Torch-free launcher interface of the VQ CUDA kernels (implemented in vq_kernels.cu).
// Every tensor argument is a contiguous device buffer; dtype is one of Float32, Float16, BFloat16.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../common/dtype.h"

namespace fact_fast {

// Nearest codeword of each row of z [n, d] in codebook [k, d] (k >= 1, ties -> lowest index).
// pnorm: float workspace [k]. Writes index [n]; and, where the pointer is not null, dist [n] (z dtype),
// dist_f32 [n] (exact ‖z − p_index‖² in float) and v [n, d] (= codebook[index], z dtype).
// allow_tensor_cores: fp16/bf16 on sm_80+ use the wmma tile kernel (else the SIMT fallback).
cudaError_t launch_vq_nearest(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                              float* pnorm, int64_t* index, void* dist, float* dist_f32, void* v,
                              bool allow_tensor_cores, cudaStream_t stream);

// grad_z[i] = grad_out[i] (if not null) + z_weight[i * z_weight_stride] * (z[i] − codebook[index[i]]).
cudaError_t launch_vq_grad_z(DType dtype, const void* z, const void* codebook, const int64_t* index,
                             const void* grad_out, const float* z_weight, int64_t z_weight_stride, int64_t n,
                             int64_t k, int64_t d, void* grad_z, cudaStream_t stream);

// acc [k, d] (float, zero-initialized) += w_i * (codebook[index[i]] − z[i]) by atomics (order-dependent).
cudaError_t launch_vq_grad_codebook_atomic(DType dtype, const void* z, const void* codebook, const int64_t* index,
                                           const float* weight, int64_t weight_stride, int64_t n, int64_t k,
                                           int64_t d, float* acc, cudaStream_t stream);

// grad_codebook[j] = Σ_{o in [offsets[j], offsets[j+1])} w_order[o] * (codebook[j] − z[order[o]]), summed in
// order: the rows sorted by index (order), segment bounds offsets [k + 1]. Bitwise reproducible.
cudaError_t launch_vq_grad_codebook_sorted(DType dtype, const void* z, const void* codebook, const int64_t* order,
                                           const int64_t* offsets, const float* weight, int64_t weight_stride,
                                           int64_t n, int64_t k, int64_t d, void* grad_codebook,
                                           cudaStream_t stream);
}  // namespace fact_fast
