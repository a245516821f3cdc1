// CUDA registration of the sigmoid attention ops: checks, output allocation and stream, then the
// torch-free launchers of attention_kernels.cu. Inputs keep their strides (a broadcast batch stride
// of 0 is read in place); outputs are contiguous.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/dtype_torch.h"
#include "../common/opt_in.h"
#include "attention_checks.h"
#include "attention_kernels.h"

namespace fact_fast {
namespace {

AttentionOperand operand(const at::Tensor& t) { return {t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

// After the shared checks (every tensor on q's device): what only the CUDA kernels require.
void check_cuda_kernel_inputs(const at::Tensor& q, const at::Tensor& v) {
  check_cuda(q, "q");
  TORCH_CHECK_TYPE(q.scalar_type() != at::kDouble, "the CUDA kernels support float32, float16 and bfloat16");
  TORCH_CHECK_VALUE(q.size(2) <= kAttentionMaxHeadDim && v.size(2) <= kAttentionMaxHeadDim,
                    "the CUDA kernels support head dims up to ", kAttentionMaxHeadDim);
}

// FACT_FAST_ATTENTION_CUTLASS (common/opt_in.h) selects the CuTe FlashAttention-2-style forward
// (attention_cutlass.cu) where it can run the inputs; not the default until a GPU has measured it.
// Returns whether it ran (out written).
bool forward_cutlass(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                     double scale, double bias, bool residual) {
  const OptIn mode = q.size(0) * q.size(1) > 0 ? opt_in("FACT_FAST_ATTENTION_CUTLASS") : OptIn::kOff;
  if (mode == OptIn::kOff) return false;
#ifdef FACT_FAST_WITH_CUTLASS
  const int64_t batch = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2), dv = v.size(2);
  bool ok = false;
  C10_CUDA_CHECK(sigmoid_attention_cutlass_supported(dtype_of(q), operand(q), operand(k), operand(v), batch, lq, lk,
                                                     d, dv, ok));
  if (ok) {
    C10_CUDA_CHECK(launch_sigmoid_attention_forward_cutlass(
        dtype_of(q), operand(q), operand(k), operand(v), out.mutable_data_ptr(), batch, lq, lk, d,
        static_cast<float>(scale), static_cast<float>(bias), residual, c10::cuda::getCurrentCUDAStream()));
    return true;
  }
  TORCH_CHECK_VALUE(mode != OptIn::kRequire,
                    "FACT_FAST_ATTENTION_CUTLASS=require, but the CuTe forward cannot run these inputs: it needs "
                    "float16/bfloat16, d = dv in {64, 128}, contiguous head dims with row and batch strides a "
                    "multiple of 8 and 16-byte aligned data, and code compiled for compute_80+; got ",
                    q.scalar_type(), ", d = ", d, ", dv = ", dv);
#else
  TORCH_CHECK_VALUE(mode != OptIn::kRequire,
                    "FACT_FAST_ATTENTION_CUTLASS=require, but fact_fast._C was built without the CUTLASS headers");
#endif
  return false;
}

at::Tensor forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, double bias,
                        bool residual) {
  check_attention_inputs(q, k, v);
  check_cuda_kernel_inputs(q, v);
  TORCH_CHECK_VALUE(!residual || v.size(2) == q.size(2), "the residual needs dv == d");
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2), dv = v.size(2);
  at::Tensor out = at::empty({batch, lq, dv}, q.options());
  if (forward_cutlass(q, k, v, out, scale, bias, residual)) return out;
  C10_CUDA_CHECK(launch_sigmoid_attention_forward(dtype_of(q), operand(q), operand(k), operand(v),
                                                  out.mutable_data_ptr(), batch, lq, lk, d, dv,
                                                  static_cast<float>(scale), static_cast<float>(bias), residual,
                                                  c10::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& q,
                                                             const at::Tensor& k, const at::Tensor& v, double scale,
                                                             double bias, bool kv_shared) {
  check_attention_inputs(q, k, v);
  check_attention_grad(grad_out, q, v);
  check_cuda_kernel_inputs(q, v);
  TORCH_CHECK_VALUE(!kv_shared || v.size(2) == q.size(2), "shared keys and values need dv == d");
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2), dv = v.size(2);
  at::Tensor dq = at::empty({batch, lq, d}, q.options());
  at::Tensor dk = kv_shared ? at::Tensor() : at::empty({batch, lk, d}, q.options());
  at::Tensor dv_out = at::empty({batch, lk, dv}, q.options());
  C10_CUDA_CHECK(launch_sigmoid_attention_backward(
      dtype_of(q), operand(grad_out), operand(q), operand(k), operand(v), dq.mutable_data_ptr(),
      kv_shared ? nullptr : dk.mutable_data_ptr(), dv_out.mutable_data_ptr(), batch, lq, lk, d, dv,
      static_cast<float>(scale), static_cast<float>(bias), kv_shared, c10::cuda::getCurrentCUDAStream()));
  return {dq, dk, dv_out};
}

at::Tensor sigmoid_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  double bias) {
  return forward_cuda(q, k, v, scale, bias, /*residual=*/false);
}

at::Tensor sigmoid_attention_kv_cuda(const at::Tensor& q, const at::Tensor& kv, double scale, double bias,
                                     bool residual) {
  return forward_cuda(q, kv, kv, scale, bias, residual);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
    double bias) {
  return backward_cuda(grad_out, q, k, v, scale, bias, /*kv_shared=*/false);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_attention_kv_backward_cuda(const at::Tensor& grad_out,
                                                                      const at::Tensor& q, const at::Tensor& kv,
                                                                      double scale, double bias) {
  auto [dq, dk, dkv] = backward_cuda(grad_out, q, kv, kv, scale, bias, /*kv_shared=*/true);
  return {dq, dkv};
}

}  // namespace

TORCH_LIBRARY_IMPL(fact_fast, CUDA, m) {
  m.impl("sigmoid_attention", &sigmoid_attention_cuda);
  m.impl("sigmoid_attention_backward", &sigmoid_attention_backward_cuda);
  m.impl("sigmoid_attention_kv", &sigmoid_attention_kv_cuda);
  m.impl("sigmoid_attention_kv_backward", &sigmoid_attention_kv_backward_cuda);
}

}  // namespace fact_fast
