// Argument checks shared by the CPU and CUDA entry points of the sigmoid attention ops.
#pragma once
#include <ATen/core/Tensor.h>

#include "../common/check.h"

namespace fact_fast {

// q [B, Lq, d], k [B, Lk, d], v [B, Lk, dv]: one float dtype, one device, any strides. The *_kv ops
// pass their kv tensor as both k and v, and messages then call it kv, as their schemas do.
inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const bool kv = k.is_same(v);
  FF_CHECK_DIM(q, 3);
  FF_CHECK_DIM(k, 3);
  FF_CHECK_DIM(v, 3);
  FF_CHECK_FLOAT(q);
  FF_CHECK_SAME_DTYPE(q, k);
  FF_CHECK_SAME_DTYPE(q, v);
  check_same_device(k, kv ? "kv" : "k", q, "q");
  check_same_device(v, kv ? "kv" : "v", q, "q");
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && v.size(0) == q.size(0), "q, k and v must have the same batch size");
  TORCH_CHECK_VALUE(k.size(2) == q.size(2), "k must have q's head dim ", q.size(2), ", got ", k.size(2));
  TORCH_CHECK_VALUE(v.size(1) == k.size(1), "v must have k's length ", k.size(1), ", got ", v.size(1));
}

inline void check_attention_grad(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& v) {
  check_same_device(grad_out, "grad_out", q, "q");
  FF_CHECK_DIM(grad_out, 3);
  FF_CHECK_SAME_DTYPE(q, grad_out);
  TORCH_CHECK_VALUE(grad_out.size(0) == q.size(0) && grad_out.size(1) == q.size(1) && grad_out.size(2) == v.size(2),
                    "grad_out must have shape [B, Lq, dv] = [", q.size(0), ", ", q.size(1), ", ", v.size(2), "]");
}

}  // namespace fact_fast
