// CUDA registration of the fuzzy ops: checks, contiguous side inputs, output and scratch
// allocation (torch.empty: the kernels write every element), then the torch-free launchers.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/dtype_torch.h"
#include "fuzzy_checks.h"
#include "fuzzy_kernels.h"

namespace fact_fast {
namespace {

using fuzzy::Reduction;

// After the shared checks (every tensor on e's device): what only the CUDA kernels require.
void check_cuda_e(const at::Tensor& e) {
  check_cuda(e, "e");
  TORCH_CHECK_TYPE(e.scalar_type() != at::kDouble, "the CUDA fuzzy kernels support float16, bfloat16 and float32");
}

// Float32 and one-byte labels are read in place; other dtypes are converted to float32 first.
at::Tensor kernel_labels(const at::Tensor& y) {
  const auto t = y.scalar_type();
  return (t == at::kBool || t == at::kByte || t == at::kFloat) ? y.contiguous() : y.to(at::kFloat).contiguous();
}

FuzzyLabels labels_of(const at::Tensor& y) {
  if (!y.defined()) return {nullptr, false};
  return {y.const_data_ptr(), y.scalar_type() != at::kFloat};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& e_in, const at::Tensor& s_in,
                                                            const at::Tensor* y_in, const at::Tensor& tau,
                                                            FuzzyLossParams p, Reduction reduction) {
  check_cuda_e(e_in);
  const c10::cuda::CUDAGuard guard(e_in.device());
  const at::Tensor e = e_in.contiguous(), s = s_in.contiguous();
  const at::Tensor tau_f = tau.to(at::kFloat).contiguous();
  const int64_t B = e.size(0), C = e.size(1), D = e.size(2);
  const bool loss = y_in != nullptr;
  const bool reduce = loss && reduction != fuzzy::kNone;
  const auto f32 = e.options().dtype(at::kFloat);
  at::Tensor mu = at::empty({B, C}, e.options());
  at::Tensor stats = at::empty({loss ? B : 0, 4}, f32);
  at::Tensor per_sample = at::empty({loss ? B : 0}, f32);
  // An empty batch launches nothing, so its reduced loss must start at 0.
  at::Tensor out = reduce ? (B == 0 ? at::zeros({}, f32) : at::empty({}, f32)) : per_sample;
  at::Tensor counter = at::empty({reduce ? 1 : 0}, e.options().dtype(at::kInt));
  at::Tensor y;
  if (loss) y = kernel_labels(*y_in);
  C10_CUDA_CHECK(launch_fuzzy_forward(
      dtype_of(e), e.const_data_ptr(), s.const_data_ptr(), labels_of(y),
      tau_f.const_data_ptr<float>(), B, C, D, p, reduce,
      reduction == fuzzy::kMean && B > 0 ? 1.f / static_cast<float>(B) : 1.f, mu.mutable_data_ptr(),
      loss ? stats.mutable_data_ptr<float>() : nullptr, loss ? per_sample.mutable_data_ptr<float>() : nullptr,
      reduce ? out.mutable_data_ptr<float>() : nullptr,
      reduce ? reinterpret_cast<unsigned*>(counter.mutable_data_ptr<int>()) : nullptr,
      c10::cuda::getCurrentCUDAStream()));
  return {out, mu, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuzzy_loss_cuda(const at::Tensor& e, const at::Tensor& s,
                                                               const at::Tensor& y, const at::Tensor& tau,
                                                               double alpha, double logit_scale, double threshold,
                                                               double smooth, c10::string_view reduction,
                                                               c10::string_view logit_name) {
  fuzzy::check_e_s_tau(e, s, tau);
  fuzzy::check_y(y, e);
  const Reduction reduction_kind = fuzzy::parse_reduction(std::string(reduction));
  const fuzzy::Logit logit = fuzzy::parse_logit(std::string(logit_name), threshold);
  FuzzyLossParams p{static_cast<float>(alpha), static_cast<float>(logit_scale), static_cast<float>(logit.shift),
                    static_cast<float>(smooth), logit.log};
  return forward_cuda(e, s, &y, tau, p, reduction_kind);
}

at::Tensor fuzzy_membership_cuda(const at::Tensor& e, const at::Tensor& s, const at::Tensor& tau) {
  fuzzy::check_e_s_tau(e, s, tau);
  return std::get<1>(forward_cuda(e, s, nullptr, tau, {0.f, 0.f, 0.f, 0.f, false}, fuzzy::kNone));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuzzy_backward_cuda(
    const std::optional<at::Tensor>& grad_loss, const std::optional<at::Tensor>& grad_mu, const at::Tensor& e_in,
    const at::Tensor& s_in, const std::optional<at::Tensor>& y_in, const at::Tensor& tau,
    const std::optional<at::Tensor>& stats_in, double alpha, double logit_scale, double threshold,
    c10::string_view reduction_name, c10::string_view logit_name) {
  fuzzy::check_e_s_tau(e_in, s_in, tau);
  fuzzy::check_backward_inputs(grad_loss, grad_mu, e_in, y_in, stats_in);
  const Reduction reduction = fuzzy::parse_reduction(std::string(reduction_name));
  const fuzzy::Logit logit = fuzzy::parse_logit(std::string(logit_name), threshold);
  check_cuda_e(e_in);
  const c10::cuda::CUDAGuard guard(e_in.device());
  const at::Tensor e = e_in.contiguous(), s = s_in.contiguous();
  const at::Tensor tau_f = tau.to(at::kFloat).contiguous();
  const int64_t B = e.size(0), C = e.size(1), D = e.size(2);
  const auto f32 = e.options().dtype(at::kFloat);
  const bool has_loss = grad_loss.has_value() && grad_loss->defined();
  at::Tensor y, stats, g, gmu;
  int64_t g_stride = 0;
  if (has_loss) {
    fuzzy::check_y(*y_in, e);
    y = kernel_labels(*y_in);
    stats = stats_in->to(at::kFloat).contiguous();
    std::tie(g, g_stride) = fuzzy::upstream(*grad_loss, e, reduction);
  }
  if (grad_mu.has_value() && grad_mu->defined()) gmu = grad_mu->to(at::kFloat).contiguous();
  at::Tensor de = at::empty_like(e), ds = at::empty_like(s);
  // With no class the kernel does not run, so dτ must start at 0.
  at::Tensor dtau = C == 0 ? at::zeros({}, f32) : at::empty({}, f32);
  const int64_t blocks = fuzzy_backward_blocks(C);
  at::Tensor workspace = at::empty({blocks * fuzzy_backward_workspace_per_block(D)}, f32);
  at::Tensor partial = at::empty({blocks}, f32);
  at::Tensor counter = at::empty({1}, e.options().dtype(at::kInt));
  FuzzyLossParams p{static_cast<float>(alpha), static_cast<float>(logit_scale), static_cast<float>(logit.shift), 0.f,
                    logit.log};
  C10_CUDA_CHECK(launch_fuzzy_backward(
      dtype_of(e), e.const_data_ptr(), s.const_data_ptr(), labels_of(y), tau_f.const_data_ptr<float>(),
      has_loss ? stats.const_data_ptr<float>() : nullptr,
      has_loss ? g.const_data_ptr<float>() : nullptr, g_stride,
      reduction == fuzzy::kMean && B > 0 ? 1.f / static_cast<float>(B) : 1.f,
      gmu.defined() ? gmu.const_data_ptr<float>() : nullptr, B, C, D, p, de.mutable_data_ptr(),
      ds.mutable_data_ptr(), workspace.mutable_data_ptr<float>(), partial.mutable_data_ptr<float>(),
      reinterpret_cast<unsigned*>(counter.mutable_data_ptr<int>()), dtau.mutable_data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream()));
  return {de, ds, dtau};
}

}  // namespace

TORCH_LIBRARY_IMPL(fact_fast, CUDA, m) {
  m.impl("fuzzy_loss", &fuzzy_loss_cuda);
  m.impl("fuzzy_membership", &fuzzy_membership_cuda);
  m.impl("fuzzy_backward", &fuzzy_backward_cuda);
}

}  // namespace fact_fast
