// Argument checks of the gcn_spmm ops, shared by the CPU and CUDA registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "check.h"

namespace fact_fast {

constexpr const char* kMalformedCsr =
    "malformed CSR graph: rowptr must be non-decreasing from 0 to nnz = len(col) and every col entry "
    "must lie in [0, n)";

// The float type the kernels accumulate in (and the dtype of value and dinv): double for float64, else float.
inline at::ScalarType gcn_acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Shapes, dtypes and devices; everything a kernel needs to index safely except the index values.
inline void gcn_check_inputs(const at::Tensor& x, const at::Tensor& rowptr, const at::Tensor& col,
                             const std::optional<at::Tensor>& value, const at::Tensor& dinv) {
  check_same_device(rowptr, "rowptr", x, "x");
  check_same_device(col, "col", x, "x");
  check_same_device(value, "value", x, "x");
  check_same_device(dinv, "dinv", x, "x");
  FF_CHECK_DIM(x, 2);
  FF_CHECK_FLOAT(x);
  FF_CHECK_DIM(rowptr, 1);
  FF_CHECK_DIM(col, 1);
  FF_CHECK_DIM(dinv, 1);
  TORCH_CHECK_TYPE(col.scalar_type() == at::kInt || col.scalar_type() == at::kLong,
                   "col must be int32 or int64, got ", col.scalar_type());
  TORCH_CHECK_TYPE(rowptr.scalar_type() == col.scalar_type(), "rowptr and col must have the same dtype, got ",
                   rowptr.scalar_type(), " and ", col.scalar_type());
  TORCH_CHECK_VALUE(rowptr.size(0) == x.size(0) + 1, "rowptr must have n + 1 = ", x.size(0) + 1,
                    " entries, got ", rowptr.size(0));
  TORCH_CHECK_VALUE(dinv.size(0) == x.size(0), "dinv must have n = ", x.size(0), " entries, got ", dinv.size(0));
  TORCH_CHECK_TYPE(dinv.scalar_type() == gcn_acc_type(x), "dinv must have dtype ", gcn_acc_type(x), ", got ",
                   dinv.scalar_type());
  if (value.has_value()) {
    const at::Tensor& v = *value;
    FF_CHECK_DIM(v, 1);
    TORCH_CHECK_VALUE(v.size(0) == col.size(0), "value must have nnz = len(col) = ", col.size(0),
                      " entries, got ", v.size(0));
    TORCH_CHECK_TYPE(v.scalar_type() == gcn_acc_type(x), "value must have dtype ", gcn_acc_type(x), ", got ",
                     v.scalar_type());
  }
}

inline void gcn_check_like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  check_same_device(t, name, x, "x");
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), name, " must have the shape of x ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have the dtype of x");
}

// gcn_spmm's transposed CSR (used by its backward; empty when no gradient is needed) on x's device.
inline void gcn_check_transpose_devices(const at::Tensor& x, const at::Tensor& t_rowptr, const at::Tensor& t_col,
                                        const at::Tensor& t_perm) {
  check_same_device(t_rowptr, "t_rowptr", x, "x");
  check_same_device(t_col, "t_col", x, "x");
  check_same_device(t_perm, "t_perm", x, "x");
}

// The checked inputs, contiguous, with their sizes (value undefined when absent).
struct GcnInputs {
  at::Tensor x, rowptr, col, value, dinv;
  int64_t n, f, nnz;
};

inline GcnInputs gcn_contiguous_inputs(const at::Tensor& x, const at::Tensor& rowptr, const at::Tensor& col,
                                       const std::optional<at::Tensor>& value, const at::Tensor& dinv) {
  gcn_check_inputs(x, rowptr, col, value, dinv);
  GcnInputs in{x.contiguous(), rowptr.contiguous(), col.contiguous(),
               value.has_value() ? value->contiguous() : at::Tensor(), dinv.contiguous(), 0, 0, 0};
  in.n = in.x.size(0);
  in.f = in.x.size(1);
  in.nnz = in.col.size(0);
  return in;
}

// gcn_spmm_value_grad: the inputs above plus grad and dx (each with x's shape, dtype and device), contiguous.
struct GcnGradInputs : GcnInputs {
  at::Tensor grad, dx;
};

inline GcnGradInputs gcn_contiguous_grad_inputs(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& rowptr,
                                                const at::Tensor& col, const std::optional<at::Tensor>& value,
                                                const at::Tensor& dinv, const at::Tensor& dx) {
  GcnGradInputs in{gcn_contiguous_inputs(x, rowptr, col, value, dinv), at::Tensor(), at::Tensor()};
  gcn_check_like_x(grad, x, "grad");
  gcn_check_like_x(dx, x, "dx");
  in.grad = grad.contiguous();
  in.dx = dx.contiguous();
  return in;
}

// CPU only (it reads two values): rowptr[0] == 0 and rowptr[n] == nnz.
inline void gcn_check_rowptr_ends(const at::Tensor& rowptr, int64_t nnz) {
  const int64_t first = rowptr[0].item<int64_t>(), last = rowptr[-1].item<int64_t>();
  TORCH_CHECK_VALUE(first == 0 && last == nnz, "rowptr must start at 0 and end at nnz = ", nnz, ", got ", first,
                    " and ", last);
}

}  // namespace fact_fast
