// Argument checks and output allocation shared by the CPU and CUDA glue of the fuzzy ops.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <optional>
#include <string>

#include "../common/check.h"

namespace fact_fast {
namespace fuzzy {

enum Reduction : int { kNone = 0, kSum = 1, kMean = 2 };

inline Reduction parse_reduction(const std::string& reduction) {
  if (reduction == "none") return kNone;
  if (reduction == "sum") return kSum;
  TORCH_CHECK_VALUE(reduction == "mean", "reduction must be 'mean', 'sum' or 'none', got ", reduction);
  return kMean;
}

// Accumulation dtype: double for float64 inputs, float otherwise.
inline at::ScalarType acc_type(const at::Tensor& e) {
  return e.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_e_s_tau(const at::Tensor& e, const at::Tensor& s, const at::Tensor& tau) {
  FF_CHECK_DIM(e, 3);
  FF_CHECK_DIM(s, 2);
  FF_CHECK_FLOAT(e);
  FF_CHECK_SAME_DTYPE(e, s);
  FF_CHECK_SAME_DEVICE(e, s);
  FF_CHECK_SAME_DEVICE(e, tau);
  TORCH_CHECK_VALUE(s.size(0) == e.size(1) && s.size(1) == e.size(2), "s must have shape [C, d] matching e");
  TORCH_CHECK_VALUE(tau.numel() == 1, "tau must have one element");
}

inline void check_y(const at::Tensor& y, const at::Tensor& e) {
  FF_CHECK_DIM(y, 2);
  FF_CHECK_SAME_DEVICE(e, y);
  TORCH_CHECK_VALUE(y.size(0) == e.size(0) && y.size(1) == e.size(1), "y must have shape [B, C] matching e");
}

// Upstream loss gradient as a contiguous accumulation-dtype tensor, and its stride over samples.
inline std::pair<at::Tensor, int64_t> upstream(const at::Tensor& grad_loss, const at::Tensor& e, Reduction r) {
  const at::Tensor g = grad_loss.to(acc_type(e)).contiguous();
  if (r == kNone) {
    TORCH_CHECK_VALUE(g.dim() == 1 && g.size(0) == e.size(0), "grad_loss must have shape [B] for reduction='none'");
    return {g, 1};
  }
  TORCH_CHECK_VALUE(g.numel() == 1, "grad_loss must have one element for a reduced loss");
  return {g, 0};
}

}  // namespace fuzzy
}  // namespace fact_fast
