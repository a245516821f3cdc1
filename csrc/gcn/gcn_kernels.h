// Torch-free launcher interface of the GCN CUDA kernels (implemented in gcn_kernels.cu).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../common/dtype.h"

namespace fact_fast {
// x, out [n, f] contiguous in dtype; rowptr [n + 1] and col [nnz] int64 (index64) or int32;
// value (nullable) [nnz] and dinv [n] in the accumulation type (double for Float64, else float).
// out_i = dinv_i (sum_e value_e dinv_{col_e} x_{col_e} + self_loop * dinv_i x_i).
cudaError_t launch_gcn_spmm(DType dtype, bool index64, const void* x, const void* rowptr, const void* col,
                            const void* value, const void* dinv, int64_t n, int64_t nnz, int64_t f, bool self_loop,
                            void* out, cudaStream_t stream);

// dvalue [nnz] (accumulation type) = dinv_r dinv_c <grad_r, x_c> (+ the degree term when normalize).
cudaError_t launch_gcn_value_grad(DType dtype, bool index64, const void* grad, const void* x, const void* dx,
                                  const void* rowptr, const void* col, const void* value, const void* dinv,
                                  int64_t n, int64_t nnz, int64_t f, bool self_loop, bool normalize, void* dvalue,
                                  cudaStream_t stream);
}  // namespace fact_fast
