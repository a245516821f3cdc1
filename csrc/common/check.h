// Argument checks for the compiled kernels. The Python front-end validates first with friendlier
// messages; these keep a direct torch.ops call from ever reading out of bounds or from another
// device's memory. Every message names the argument as the op's schema does.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#define FF_CHECK_DIM(t, n) \
  TORCH_CHECK_VALUE((t).dim() == (n), #t " must have " #n " dimensions, got ", (t).dim())
#define FF_CHECK_FLOAT(t)                                                                            \
  TORCH_CHECK_TYPE((t).scalar_type() == at::kFloat || (t).scalar_type() == at::kHalf ||             \
                       (t).scalar_type() == at::kBFloat16 || (t).scalar_type() == at::kDouble,      \
                   #t " must be a floating tensor, got ", (t).scalar_type())
#define FF_CHECK_SAME_DTYPE(a, b) \
  TORCH_CHECK_TYPE((a).scalar_type() == (b).scalar_type(), #a " and " #b " must have the same dtype")

namespace fact_fast {

// `t` (named `name`) must be on the device of `ref` (named `ref_name`): every pointer handed to a
// kernel then belongs to the device the kernel runs on.
inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on the device of ", ref_name, " (", ref.device(),
                    "), got ", t.device());
}

inline void check_same_device(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& ref,
                              const char* ref_name) {
  if (t.has_value() && t->defined()) check_same_device(*t, name, ref, ref_name);
}

// The CUDA registrations are reached when any argument is a CUDA tensor; the one whose device the
// kernels run on must be one too.
inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating tensor, got ", t.scalar_type());
}

}  // namespace fact_fast
