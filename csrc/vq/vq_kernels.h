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

// pnorm [k] (float) = ‖codebook[j]‖², computed in float.
cudaError_t launch_vq_codeword_norms(DType dtype, const void* codebook, int64_t k, int64_t d, float* pnorm,
                                     cudaStream_t stream);

// The exact re-rank that closes the CUTLASS search: scores (float) and candidates (int32), each
// [n, num_candidates] (a candidate < 0 is an empty slot). Per row, the two candidates of least
// (score, index) are compared on their exact float distance ‖z_i − p_j‖²; index[i] = the lower
// (ties → lowest index; no usable candidate → 0); dist / dist_f32 / v as in launch_vq_nearest.
cudaError_t launch_vq_rerank(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                             const float* scores, const int* candidates, int num_candidates, int64_t* index,
                             void* dist, float* dist_f32, void* v, cudaStream_t stream);

#ifdef FACT_FAST_WITH_CUTLASS
// The CuTe tensor-core search (vq_cutlass.cu, compiled when setup.py finds the CUTLASS headers).
// splits = codebook splits for z [n, d] and k codewords on the current device (1 ≤ splits ≤ ⌈k/128⌉;
// more when n alone cannot fill the GPU).
cudaError_t vq_cutlass_splits(DType dtype, int64_t n, int64_t k, int64_t d, int& splits);
// ok = the search can run these inputs on the current device: float32 (TF32 tensor cores), float16 or
// bfloat16; d > 0 a multiple of 16 bytes' worth of elements (4 for float32, 8 otherwise); z and
// codebook 16-byte aligned; n, k, d below 2^31 − 256; code loaded for compute_80+.
cudaError_t vq_cutlass_supported(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                                 bool& ok);
// Writes scores (float) and candidates (int32), [n, 2·splits] each: per codebook split, the two
// codewords of least approximate ‖p‖² − 2⟨z, p⟩ (pnorm from launch_vq_codeword_norms) and those
// values; launch_vq_rerank then picks among them.
cudaError_t launch_vq_nearest_cutlass(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k,
                                      int64_t d, const float* pnorm, int splits, float* scores, int* candidates,
                                      cudaStream_t stream);
#endif

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
