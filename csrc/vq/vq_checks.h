// Argument checks shared by the CPU and CUDA glue of the VQ ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>

#include "../common/check.h"

namespace fact_fast {
namespace vq {

// Shapes, dtype and device of (z [n, d], codebook [k, d], k >= 1); the dtype set is the caller's.
inline void check_pair_shapes(const at::Tensor& z, const at::Tensor& codebook) {
  FF_CHECK_SAME_DTYPE(z, codebook);
  FF_CHECK_SAME_DEVICE(z, codebook);
  TORCH_CHECK_VALUE(z.size(1) == codebook.size(1), "z and codebook must have the same feature size, got ",
                    z.size(1), " and ", codebook.size(1));
  TORCH_CHECK_VALUE(codebook.size(0) > 0, "codebook must have at least one row");
}

// The contiguous index [n] and grad_out (z's dtype, or undefined) of vq_residual_backward.
inline std::pair<at::Tensor, at::Tensor> backward_inputs(const at::Tensor& z, const at::Tensor& index,
                                                          const std::optional<at::Tensor>& grad_out) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "index must be int64");
  TORCH_CHECK_VALUE(index.dim() == 1 && index.size(0) == z.size(0), "index must have shape [n]");
  FF_CHECK_SAME_DEVICE(z, index);
  at::Tensor go;
  if (grad_out.has_value() && grad_out->defined()) {
    const at::Tensor& grad_v = *grad_out;
    TORCH_CHECK_VALUE(grad_v.sizes() == z.sizes(), "grad_out must have the shape of z");
    FF_CHECK_SAME_DEVICE(z, grad_v);
    go = grad_v.to(z.scalar_type()).contiguous();
  }
  return {index.contiguous(), go};
}

// w: numel 1 (broadcast) or n, any float dtype -> (contiguous w in `acc` on z's device, stride 0 or 1).
inline std::pair<at::Tensor, int64_t> row_weight(const at::Tensor& w, const at::Tensor& z, at::ScalarType acc,
                                                 const char* name) {
  const int64_t n = z.size(0);
  TORCH_CHECK_VALUE(w.numel() == 1 || w.numel() == n, name, " must have 1 or n = ", n, " elements, got ",
                    w.numel());
  return {w.reshape({-1}).to(z.device(), acc).contiguous(), w.numel() == 1 ? 0 : 1};
}

}  // namespace vq
}  // namespace fact_fast
