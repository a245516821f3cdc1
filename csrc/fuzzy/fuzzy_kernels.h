// Torch-free launcher interface of the fuzzy CUDA kernels (implemented in fuzzy_kernels.cu).
// All pointers are device pointers to contiguous buffers; float32 accumulation throughout.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../common/dtype.h"

namespace fact_fast {

// The point loss's logit: f = λ(μ − shift) with shift = δ, or, when log_logit, f = λ(−dist/τ − shift)
// with shift = log δ (= λ·log(μ/δ), taken from dist so an underflowed μ keeps a finite logit).
struct FuzzyLossParams {
  float alpha, logit_scale, shift, smooth;
  bool log_logit;
};

// Labels are read as they come when they are float32 or one byte (bool / uint8), so the usual
// label tensors need no conversion kernel; a label is positive when > 0.5 (float) or != 0 (byte).
struct FuzzyLabels {
  const void* data;  // nullptr: no labels (membership only, or no loss gradient)
  bool bytes;
};

// e [B, C, D], s [C, D] in `dtype`; y [B, C] labels (data nullptr: membership only); tau one float.
// Writes mu [B, C] (dtype) and, with y: stats [B, 4], per_sample [B] and, when `reduce`, out[0] =
// out_scale · Σ_b per_sample[b] summed in index order by the last block to finish. counter: one
// unsigned of scratch (zeroed here with a memset). B == 0 launches nothing.
cudaError_t launch_fuzzy_forward(DType dtype, const void* e, const void* s, FuzzyLabels y, const float* tau,
                                 int64_t B, int64_t C, int64_t D, FuzzyLossParams p, bool reduce, float out_scale,
                                 void* mu, float* stats, float* per_sample, float* out, unsigned* counter,
                                 cudaStream_t stream);

// Blocks of the backward launch for C classes; the caller sizes `workspace` to
// fuzzy_backward_blocks(C) * fuzzy_backward_workspace_per_block(D) floats and `partial` to
// fuzzy_backward_blocks(C) floats.
int64_t fuzzy_backward_blocks(int64_t C);
int64_t fuzzy_backward_workspace_per_block(int64_t D);

// Gradients de [B, C, D], ds [C, D] (dtype) and dtau[0] (float). g: upstream loss gradient read at
// g[b * g_stride] · g_scale, or nullptr (then y and stats are unused); gmu [B, C] float or nullptr.
// C == 0 launches nothing.
cudaError_t launch_fuzzy_backward(DType dtype, const void* e, const void* s, FuzzyLabels y, const float* tau,
                                  const float* stats, const float* g, int64_t g_stride, float g_scale,
                                  const float* gmu, int64_t B, int64_t C, int64_t D, FuzzyLossParams p, void* de,
                                  void* ds, float* workspace, float* partial, unsigned* counter, float* dtau,
                                  cudaStream_t stream);

}  // namespace fact_fast
