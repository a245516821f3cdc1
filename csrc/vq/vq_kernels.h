// Torch-free launcher interface of the VQ CUDA kernels (implemented in vq_kernels.cu).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../common/dtype.h"

namespace fact_fast {
// z [n, d] and codebook [k, d] contiguous, k >= 1; writes index [n] (int64) and dist [n] (input dtype).
cudaError_t launch_vq_nearest(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                              int64_t* index, void* dist, cudaStream_t stream);
}  // namespace fact_fast
