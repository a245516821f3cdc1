// CUDA registration of the VQ ops: checks, allocation, stream, then the torch-free launchers.
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "../common/check.h"
#include "../common/dtype_torch.h"
#include "../common/opt_in.h"
#include "vq_checks.h"
#include "vq_kernels.h"

namespace fact_fast {
namespace {

void check_pair(const at::Tensor& z, const at::Tensor& codebook) {
  FF_CHECK_DIM(z, 2);
  FF_CHECK_DIM(codebook, 2);
  TORCH_CHECK_TYPE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kHalf ||
                       z.scalar_type() == at::kBFloat16,
                   "the CUDA VQ kernels take float32, float16 or bfloat16, got ", z.scalar_type());
  vq::check_pair_shapes(z, codebook);
  check_cuda(z, "z");
}

// FACT_FAST_VQ_TENSOR_CORES=0 forces the SIMT tile kernel for fp16/bf16 (to test the fallback on sm_80+).
bool tensor_cores_allowed() {
  const char* env = std::getenv("FACT_FAST_VQ_TENSOR_CORES");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

#ifdef FACT_FAST_WITH_CUTLASS
// The CuTe search + exact re-rank; false (nothing launched) when it cannot run these inputs.
bool search_cutlass(const at::Tensor& z, const at::Tensor& codebook, const at::Tensor& pnorm,
                    const at::Tensor& index, const at::Tensor& dist, const at::Tensor& dist_f32, const at::Tensor& v) {
  const int64_t n = z.size(0), k = codebook.size(0), d = z.size(1);
  const DType dt = dtype_of(z);
  bool ok = false;
  C10_CUDA_CHECK(vq_cutlass_supported(dt, z.const_data_ptr(), codebook.const_data_ptr(), n, k, d, ok));
  if (!ok) return false;
  int splits = 1;
  C10_CUDA_CHECK(vq_cutlass_splits(dt, n, k, d, splits));
  at::Tensor scores = at::empty({n, 2 * splits}, z.options().dtype(at::kFloat));
  at::Tensor candidates = at::empty({n, 2 * splits}, z.options().dtype(at::kInt));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(launch_vq_codeword_norms(dt, codebook.const_data_ptr(), k, d, pnorm.mutable_data_ptr<float>(),
                                          stream));
  C10_CUDA_CHECK(launch_vq_nearest_cutlass(dt, z.const_data_ptr(), codebook.const_data_ptr(), n, k, d,
                                           pnorm.const_data_ptr<float>(), splits, scores.mutable_data_ptr<float>(),
                                           candidates.mutable_data_ptr<int>(), stream));
  C10_CUDA_CHECK(launch_vq_rerank(dt, z.const_data_ptr(), codebook.const_data_ptr(), n, k, d,
                                  scores.const_data_ptr<float>(), candidates.const_data_ptr<int>(), 2 * splits,
                                  index.mutable_data_ptr<int64_t>(),
                                  dist.defined() ? dist.mutable_data_ptr() : nullptr,
                                  dist_f32.defined() ? dist_f32.mutable_data_ptr<float>() : nullptr,
                                  v.defined() ? v.mutable_data_ptr() : nullptr, stream));
  return true;
}
#endif

// (index, dist in z dtype or undefined, dist_f32 or undefined, v or undefined)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> search(const at::Tensor& z, const at::Tensor& codebook,
                                                                  bool want_dist, bool want_quantized) {
  const int64_t n = z.size(0), k = codebook.size(0), d = z.size(1);
  at::Tensor pnorm = at::empty({k}, z.options().dtype(at::kFloat));
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor dist = want_dist ? at::empty({n}, z.options()) : at::Tensor();
  at::Tensor dist_f32 = want_quantized ? at::empty({n}, z.options().dtype(at::kFloat)) : at::Tensor();
  at::Tensor v = want_quantized ? at::empty({n, d}, z.options()) : at::Tensor();
  // FACT_FAST_VQ_CUTLASS (common/opt_in.h) selects the CuTe search; not the default until a GPU has
  // measured it against the kernels below.
  const OptIn mode = n > 0 ? opt_in("FACT_FAST_VQ_CUTLASS") : OptIn::kOff;
  if (mode != OptIn::kOff) {
#ifdef FACT_FAST_WITH_CUTLASS
    if (search_cutlass(z, codebook, pnorm, index, dist, dist_f32, v)) return {index, dist, dist_f32, v};
    TORCH_CHECK_VALUE(mode != OptIn::kRequire,
                      "FACT_FAST_VQ_CUTLASS=require, but the CuTe search cannot run these inputs: it needs "
                      "float32/float16/bfloat16, d > 0 a multiple of 16 bytes of elements, 16-byte aligned z and "
                      "codebook, and code compiled for compute_80+; got ", z.scalar_type(), ", d = ", d);
#else
    TORCH_CHECK_VALUE(mode != OptIn::kRequire,
                      "FACT_FAST_VQ_CUTLASS=require, but fact_fast._C was built without the CUTLASS headers");
#endif
  }
  C10_CUDA_CHECK(launch_vq_nearest(dtype_of(z), z.const_data_ptr(), codebook.const_data_ptr(), n, k, d,
                                   pnorm.mutable_data_ptr<float>(), index.mutable_data_ptr<int64_t>(),
                                   want_dist ? dist.mutable_data_ptr() : nullptr,
                                   want_quantized ? dist_f32.mutable_data_ptr<float>() : nullptr,
                                   want_quantized ? v.mutable_data_ptr() : nullptr, tensor_cores_allowed(),
                                   c10::cuda::getCurrentCUDAStream()));
  return {index, dist, dist_f32, v};
}

std::tuple<at::Tensor, at::Tensor> vq_nearest_cuda(const at::Tensor& z_in, const at::Tensor& codebook_in, bool) {
  check_pair(z_in, codebook_in);
  const c10::cuda::CUDAGuard guard(z_in.device());
  auto [index, dist, unused_f32, unused_v] = search(z_in.contiguous(), codebook_in.contiguous(), true, false);
  return {index, dist};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vq_quantize_cuda(const at::Tensor& z_in, const at::Tensor& codebook_in,
                                                                double beta, bool) {
  check_pair(z_in, codebook_in);
  const c10::cuda::CUDAGuard guard(z_in.device());
  auto [index, unused_dist, dist_f32, v] = search(z_in.contiguous(), codebook_in.contiguous(), false, true);
  // Both commitment terms have the value mean‖z − z_q‖²; a tree sum of fixed shape is reproducible.
  const double denom = static_cast<double>(std::max<int64_t>(z_in.numel(), 1));
  at::Tensor loss = dist_f32.sum().mul((1.0 + beta) / denom).to(z_in.scalar_type());
  return {v, index, loss};
}

std::tuple<at::Tensor, at::Tensor> vq_residual_backward_cuda(const at::Tensor& z_in, const at::Tensor& codebook_in,
                                                             const at::Tensor& index_in,
                                                             const std::optional<at::Tensor>& grad_out_in,
                                                             const at::Tensor& z_weight,
                                                             const at::Tensor& codebook_weight, bool deterministic) {
  vq::check_backward_devices(z_in, index_in, grad_out_in, z_weight, codebook_weight);
  check_pair(z_in, codebook_in);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const int64_t n = z_in.size(0), k = codebook_in.size(0), d = z_in.size(1);
  const auto [index, grad_out] = vq::backward_inputs(z_in, index_in, grad_out_in);
  const at::Tensor z = z_in.contiguous(), cb = codebook_in.contiguous();
  auto [wz, wz_stride] = vq::row_weight(z_weight, z, at::kFloat, "z_weight");
  auto [wc, wc_stride] = vq::row_weight(codebook_weight, z, at::kFloat, "codebook_weight");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const DType dt = dtype_of(z);

  at::Tensor grad_z = at::empty({n, d}, z.options());
  C10_CUDA_CHECK(launch_vq_grad_z(dt, z.const_data_ptr(), cb.const_data_ptr(), index.const_data_ptr<int64_t>(),
                                  grad_out.defined() ? grad_out.const_data_ptr() : nullptr,
                                  wz.const_data_ptr<float>(), wz_stride, n, k, d, grad_z.mutable_data_ptr(),
                                  stream));
  at::Tensor grad_cb;
  if (deterministic) {
    // Rows sorted by codeword (stable), segment j = [offsets[j], offsets[j+1]); indices outside [0, k)
    // fall outside every segment. No host synchronization.
    auto [sorted, order] = at::sort(index, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor offsets = at::searchsorted(sorted, at::arange(k + 1, index.options()));
    grad_cb = at::empty({k, d}, cb.options());
    C10_CUDA_CHECK(launch_vq_grad_codebook_sorted(dt, z.const_data_ptr(), cb.const_data_ptr(),
                                                  order.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(),
                                                  wc.const_data_ptr<float>(), wc_stride, n, k, d,
                                                  grad_cb.mutable_data_ptr(), stream));
  } else {
    at::Tensor acc = at::zeros({k, d}, z.options().dtype(at::kFloat));
    C10_CUDA_CHECK(launch_vq_grad_codebook_atomic(dt, z.const_data_ptr(), cb.const_data_ptr(),
                                                  index.const_data_ptr<int64_t>(), wc.const_data_ptr<float>(),
                                                  wc_stride, n, k, d, acc.mutable_data_ptr<float>(), stream));
    grad_cb = acc.to(cb.scalar_type());
  }
  return {grad_z, grad_cb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fact_fast, CUDA, m) {
  m.impl("vq_nearest", &vq_nearest_cuda);
  m.impl("vq_quantize", &vq_quantize_cuda);
  m.impl("vq_residual_backward", &vq_residual_backward_cuda);
}

}  // namespace fact_fast
