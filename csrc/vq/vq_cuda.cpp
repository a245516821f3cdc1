// CUDA registration of vq_nearest: checks, output allocation and stream, then the torch-free launcher.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/check.h"
#include "../common/dtype_torch.h"
#include "vq_kernels.h"

namespace fact_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> vq_nearest_cuda(const at::Tensor& z_in, const at::Tensor& codebook_in) {
  FF_CHECK_DIM(z_in, 2);
  FF_CHECK_DIM(codebook_in, 2);
  FF_CHECK_FLOAT(z_in);
  FF_CHECK_SAME_DTYPE(z_in, codebook_in);
  FF_CHECK_SAME_DEVICE(z_in, codebook_in);
  TORCH_CHECK_VALUE(z_in.size(1) == codebook_in.size(1), "z and codebook must have the same feature size");
  TORCH_CHECK_VALUE(codebook_in.size(0) > 0, "codebook must have at least one row");
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous();
  const at::Tensor codebook = codebook_in.contiguous();
  const int64_t n = z.size(0), k = codebook.size(0), d = z.size(1);
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor dist = at::empty({n}, z.options());
  C10_CUDA_CHECK(launch_vq_nearest(dtype_of(z), z.const_data_ptr(), codebook.const_data_ptr(), n, k, d,
                                   index.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
  return {index, dist};
}

}  // namespace

TORCH_LIBRARY_IMPL(fact_fast, CUDA, m) { m.impl("vq_nearest", &vq_nearest_cuda); }

}  // namespace fact_fast
