// Argument checks for the compiled kernels. The Python front-end validates first with friendlier
// messages; these keep a direct torch.ops call from ever reading out of bounds.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define FF_CHECK_DIM(t, n) \
  TORCH_CHECK_VALUE((t).dim() == (n), #t " must have " #n " dimensions, got ", (t).dim())
#define FF_CHECK_FLOAT(t)                                                                            \
  TORCH_CHECK_TYPE((t).scalar_type() == at::kFloat || (t).scalar_type() == at::kHalf ||             \
                       (t).scalar_type() == at::kBFloat16 || (t).scalar_type() == at::kDouble,      \
                   #t " must be a floating tensor, got ", (t).scalar_type())
#define FF_CHECK_SAME_DEVICE(a, b) \
  TORCH_CHECK_VALUE((a).device() == (b).device(), #a " and " #b " must be on the same device")
#define FF_CHECK_SAME_DTYPE(a, b) \
  TORCH_CHECK_TYPE((a).scalar_type() == (b).scalar_type(), #a " and " #b " must have the same dtype")
