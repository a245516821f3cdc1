// Torch-free launcher interface of the sigmoid attention CUDA kernels (attention_kernels.cu).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../common/dtype.h"

namespace fact_fast {

// A [B, L, D] operand: data pointer and element strides (batch stride 0 = broadcast over the batch).
struct AttentionOperand {
  const void* data;
  int64_t stride_b, stride_l, stride_d;
};

// Head dims the kernels accept (a query block and a key/value block live in shared memory).
constexpr int64_t kAttentionMaxHeadDim = 512;

// out [B, Lq, dv] contiguous = σ(q kᵀ·scale + bias) v (+ q when residual, which needs dv == d).
cudaError_t launch_sigmoid_attention_forward(DType dtype, AttentionOperand q, AttentionOperand k, AttentionOperand v,
                                             void* out, int64_t batch, int64_t lq, int64_t lk, int64_t d,
                                             int64_t dv, float scale, float bias, bool residual,
                                             cudaStream_t stream);

// dq [B, Lq, d], dk [B, Lk, d], dv [B, Lk, dv], all contiguous. With kv_shared (k and v are the same
// tensor, d == dv) dk is unused (may be null) and dv receives dK + dV.
cudaError_t launch_sigmoid_attention_backward(DType dtype, AttentionOperand grad_out, AttentionOperand q,
                                              AttentionOperand k, AttentionOperand v, void* dq, void* dk, void* dv,
                                              int64_t batch, int64_t lq, int64_t lk, int64_t d, int64_t dv_dim,
                                              float scale, float bias, bool kv_shared, cudaStream_t stream);

#ifdef FACT_FAST_WITH_CUTLASS
// The CuTe FlashAttention-2-style forward (attention_cutlass.cu, compiled when setup.py finds the
// CUTLASS headers). ok = it can run these inputs on the current device: float16/bfloat16,
// d = dv ∈ {64, 128}, every operand with a contiguous head dim, row and batch strides a multiple of 8
// elements and a 16-byte aligned base, batch ≤ 65535, code loaded for compute_80+.
cudaError_t sigmoid_attention_cutlass_supported(DType dtype, AttentionOperand q, AttentionOperand k,
                                                AttentionOperand v, int64_t batch, int64_t lq, int64_t lk, int64_t d,
                                                int64_t dv, bool& ok);
// out [B, Lq, d] contiguous = σ(q kᵀ·scale + bias) v (+ q when residual), like
// launch_sigmoid_attention_forward (σ through the approximate tanh, P rounded to the input dtype).
cudaError_t launch_sigmoid_attention_forward_cutlass(DType dtype, AttentionOperand q, AttentionOperand k,
                                                     AttentionOperand v, void* out, int64_t batch, int64_t lq,
                                                     int64_t lk, int64_t d, float scale, float bias, bool residual,
                                                     cudaStream_t stream);
#endif

}  // namespace fact_fast
