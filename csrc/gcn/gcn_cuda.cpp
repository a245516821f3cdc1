// CUDA registration of gcn_spmm / gcn_spmm_value_grad: checks, allocation and stream, then the
// torch-free launchers. Index values are not checked here (that would synchronize the device);
// the kernels clamp or skip out-of-range entries instead, so nothing is read out of bounds, and
// the Python front-end / CSRGraph validate the graph's contents once.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/check.h"
#include "../common/dtype_torch.h"
#include "../common/gcn_check.h"
#include "gcn_kernels.h"

namespace fact_fast {
namespace {

at::Tensor gcn_spmm_cuda(const at::Tensor& x_in, const at::Tensor& rowptr_in, const at::Tensor& col_in,
                         const std::optional<at::Tensor>& value_in, const at::Tensor& dinv_in,
                         const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                         bool add_self_loops, bool normalize) {
  gcn_check_transpose_devices(x_in, t_rowptr, t_col, t_perm);
  const GcnInputs in = gcn_contiguous_inputs(x_in, rowptr_in, col_in, value_in, dinv_in);
  check_cuda(in.x, "x");
  const c10::cuda::CUDAGuard guard(in.x.device());
  at::Tensor out = at::empty({in.n, in.f}, in.x.options());
  C10_CUDA_CHECK(launch_gcn_spmm(dtype_of(in.x), in.col.scalar_type() == at::kLong, in.x.const_data_ptr(),
                                 in.rowptr.const_data_ptr(), in.col.const_data_ptr(),
                                 in.value.defined() ? in.value.const_data_ptr() : nullptr, in.dinv.const_data_ptr(),
                                 in.n, in.nnz, in.f, add_self_loops, out.mutable_data_ptr(),
                                 c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor gcn_spmm_value_grad_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& rowptr_in,
                                    const at::Tensor& col_in, const std::optional<at::Tensor>& value_in,
                                    const at::Tensor& dinv_in, const at::Tensor& dx_in, bool add_self_loops,
                                    bool normalize) {
  const GcnGradInputs in = gcn_contiguous_grad_inputs(grad_in, x_in, rowptr_in, col_in, value_in, dinv_in, dx_in);
  check_cuda(in.x, "x");
  const c10::cuda::CUDAGuard guard(in.x.device());
  at::Tensor dvalue = at::zeros({in.nnz}, in.dinv.options());
  C10_CUDA_CHECK(launch_gcn_value_grad(dtype_of(in.x), in.col.scalar_type() == at::kLong, in.grad.const_data_ptr(),
                                       in.x.const_data_ptr(), in.dx.const_data_ptr(), in.rowptr.const_data_ptr(),
                                       in.col.const_data_ptr(),
                                       in.value.defined() ? in.value.const_data_ptr() : nullptr,
                                       in.dinv.const_data_ptr(), in.n, in.nnz, in.f, add_self_loops, normalize,
                                       dvalue.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return dvalue;
}

}  // namespace

TORCH_LIBRARY_IMPL(fact_fast, CUDA, m) {
  m.impl("gcn_spmm", &gcn_spmm_cuda);
  m.impl("gcn_spmm_value_grad", &gcn_spmm_value_grad_cuda);
}

}  // namespace fact_fast
