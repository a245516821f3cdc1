// Argument checks and output allocation shared by the CPU and CUDA glue of the fuzzy ops.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cmath>
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

// The point loss's logit f: "scaled" f = λ(μ − δ), or "log" f = λ·log(μ/δ) = λ(−dist/τ − log δ)
// (taken from dist, so an underflowed μ keeps a finite logit and gradient). The kernels see one
// flag and a shift: f = λ(μ − shift) with shift = δ, or f = λ(−dist/τ − shift) with shift = log δ,
// taken here in double precision as the reference does (math.log).
struct Logit {
  bool log;
  double shift;
};

inline Logit parse_logit(const std::string& logit, double threshold) {
  if (logit == "scaled") return {false, threshold};
  TORCH_CHECK_VALUE(logit == "log", "logit must be 'scaled' or 'log', got ", logit);
  TORCH_CHECK_VALUE(threshold > 0, "threshold must be > 0 for logit='log' (f = λ·log(μ/δ)), got ", threshold);
  return {true, std::log(threshold)};
}

// Accumulation dtype: double for float64 inputs, float otherwise.
inline at::ScalarType acc_type(const at::Tensor& e) {
  return e.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_e_s_tau(const at::Tensor& e, const at::Tensor& s, const at::Tensor& tau) {
  FF_CHECK_DIM(e, 3);
  FF_CHECK_DIM(s, 2);
  FF_CHECK_FLOAT(e);
  check_same_device(s, "s", e, "e");
  check_same_device(tau, "tau", e, "e");
  FF_CHECK_SAME_DTYPE(e, s);
  TORCH_CHECK_VALUE(s.size(0) == e.size(1) && s.size(1) == e.size(2), "s must have shape [C, d] matching e");
  TORCH_CHECK_VALUE(tau.numel() == 1, "tau must have one element");
}

inline void check_y(const at::Tensor& y, const at::Tensor& e) {
  check_same_device(y, "y", e, "e");
  FF_CHECK_DIM(y, 2);
  TORCH_CHECK_VALUE(y.size(0) == e.size(0) && y.size(1) == e.size(1), "y must have shape [B, C] matching e");
}

// The optional inputs of fuzzy_backward, before anything is converted: each on e's device with its
// shape. grad_loss, y and stats come together (the loss term) or not at all.
inline void check_backward_inputs(const std::optional<at::Tensor>& grad_loss,
                                  const std::optional<at::Tensor>& grad_mu, const at::Tensor& e,
                                  const std::optional<at::Tensor>& y, const std::optional<at::Tensor>& stats) {
  check_same_device(grad_loss, "grad_loss", e, "e");
  check_same_device(grad_mu, "grad_mu", e, "e");
  check_same_device(y, "y", e, "e");
  check_same_device(stats, "stats", e, "e");
  const bool has_grad_loss = grad_loss.has_value() && grad_loss->defined();
  if (has_grad_loss) {
    TORCH_CHECK_VALUE(y.has_value() && y->defined() && stats.has_value() && stats->defined(),
                      "grad_loss needs y and stats (the loss term's labels and saved statistics)");
    check_floating(*grad_loss, "grad_loss");
    check_floating(*stats, "stats");
    TORCH_CHECK_VALUE(stats->dim() == 2 && stats->size(0) == e.size(0) && stats->size(1) == 4,
                      "stats must have shape [B, 4] = [", e.size(0), ", 4], got ", stats->sizes());
  }
  if (grad_mu.has_value() && grad_mu->defined()) {
    check_floating(*grad_mu, "grad_mu");
    TORCH_CHECK_VALUE(grad_mu->dim() == 2 && grad_mu->size(0) == e.size(0) && grad_mu->size(1) == e.size(1),
                      "grad_mu must have shape [B, C] = [", e.size(0), ", ", e.size(1), "], got ", grad_mu->sizes());
  }
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
