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
  check_same_device(codebook, "codebook", z, "z");
  FF_CHECK_SAME_DTYPE(z, codebook);
  TORCH_CHECK_VALUE(z.size(1) == codebook.size(1), "z and codebook must have the same feature size, got ",
                    z.size(1), " and ", codebook.size(1));
  TORCH_CHECK_VALUE(codebook.size(0) > 0, "codebook must have at least one row");
}

// Every tensor argument of vq_residual_backward on z's device, checked before anything is converted.
inline void check_backward_devices(const at::Tensor& z, const at::Tensor& index,
                                   const std::optional<at::Tensor>& grad_out, const at::Tensor& z_weight,
                                   const at::Tensor& codebook_weight) {
  check_same_device(index, "index", z, "z");
  check_same_device(grad_out, "grad_out", z, "z");
  check_same_device(z_weight, "z_weight", z, "z");
  check_same_device(codebook_weight, "codebook_weight", z, "z");
}

// The contiguous index [n] and grad_out (z's dtype, or undefined) of vq_residual_backward.
inline std::pair<at::Tensor, at::Tensor> backward_inputs(const at::Tensor& z, const at::Tensor& index,
                                                          const std::optional<at::Tensor>& grad_out) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "index must be int64");
  TORCH_CHECK_VALUE(index.dim() == 1 && index.size(0) == z.size(0), "index must have shape [n]");
  at::Tensor go;
  if (grad_out.has_value() && grad_out->defined()) {
    const at::Tensor& grad_v = *grad_out;
    TORCH_CHECK_VALUE(grad_v.sizes() == z.sizes(), "grad_out must have the shape of z");
    go = grad_v.to(z.scalar_type()).contiguous();
  }
  return {index.contiguous(), go};
}

// w (on z's device): numel 1 (broadcast) or n, any float dtype -> (contiguous w in `acc`, stride 0 or 1).
inline std::pair<at::Tensor, int64_t> row_weight(const at::Tensor& w, const at::Tensor& z, at::ScalarType acc,
                                                 const char* name) {
  const int64_t n = z.size(0);
  TORCH_CHECK_VALUE(w.numel() == 1 || w.numel() == n, name, " must have 1 or n = ", n, " elements, got ",
                    w.numel());
  check_floating(w, name);
  return {w.reshape({-1}).to(acc).contiguous(), w.numel() == 1 ? 0 : 1};
}

}  // namespace vq
}  // namespace fact_fast
