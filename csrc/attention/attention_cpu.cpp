// Sigmoid attention: schemas and CPU kernels.
//
// All ops take 3-D tensors [B, L, D] with arbitrary strides (a batch stride of 0 is how a query
// shared by the batch arrives: it is never copied B times). The Python front-end flattens the
// broadcast leading dimensions into B.
//
// Forward: one work unit per (batch, block of kBlockQ query rows), run in parallel. A unit walks
// the keys in blocks of kBlockK: S = (Q·scale) Kᵀ, P = σ(S + bias), O += P V, with S, P and O in
// float (double for float64). Blocked GEMMs on the tiles use ATen's BLAS; the working memory of a
// unit is O(kBlockQ·kBlockK + kBlockQ·dv), never Lq×Lk.
//
// Backward: one unit per batch element (parallel over the batch), which recomputes P tile by tile
// and accumulates dV += Pᵀ dO, dS = P(1−P)·(dO Vᵀ)·scale, dQ += dS K, dK += dSᵀ Q into per-batch
// float buffers, so no atomics and a fixed summation order. Gradients of broadcast inputs come
// back per batch element; autograd's expand backward sums them (deterministically).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include "attention_checks.h"

namespace fact_fast {
namespace {

constexpr int64_t kBlockQ = 128;
constexpr int64_t kBlockK = 256;
// The backward runs five GEMMs per tile pair: larger tiles keep them efficient (still O(tile) memory).
constexpr int64_t kBwdBlockQ = 256;
constexpr int64_t kBwdBlockK = 512;

at::ScalarType acc_type(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Rows [r0, r0 + n) of batch element b of a [B, L, D] tensor, in the accumulation dtype (a view
// when the tensor already has it).
at::Tensor rows(const at::Tensor& t, int64_t b, int64_t r0, int64_t n, at::ScalarType acc) {
  return t.select(0, b).narrow(0, r0, n).to(acc);
}

at::Tensor forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, double bias,
                       bool residual) {
  check_attention_inputs(q, k, v);
  const int64_t batch = q.size(0), lq = q.size(1), lk = k.size(1), dv = v.size(2);
  TORCH_CHECK_VALUE(!residual || dv == q.size(2), "the residual needs dv == d");
  at::Tensor out = at::empty({batch, lq, dv}, q.options());
  const at::ScalarType acc = acc_type(q);
  const int64_t q_blocks = (lq + kBlockQ - 1) / kBlockQ;
  at::parallel_for(0, batch * q_blocks, 1, [&](int64_t begin, int64_t end) {
    const at::NoGradGuard no_grad;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / q_blocks, q0 = (unit % q_blocks) * kBlockQ, nq = std::min(kBlockQ, lq - q0);
      const at::Tensor q_tile = rows(q, b, q0, nq, acc);
      const at::Tensor q_scaled = q_tile.mul(scale);
      // Accumulate straight into the output rows when they already have the accumulation dtype.
      at::Tensor out_rows = out.select(0, b).narrow(0, q0, nq);
      at::Tensor o = out.scalar_type() == acc ? out_rows.zero_() : at::zeros({nq, dv}, q_tile.options());
      for (int64_t k0 = 0; k0 < lk; k0 += kBlockK) {
        const int64_t nk = std::min(kBlockK, lk - k0);
        at::Tensor p = at::mm(q_scaled, rows(k, b, k0, nk, acc).t());
        p.add_(bias).sigmoid_();
        o.addmm_(p, rows(v, b, k0, nk, acc));
      }
      if (residual) o.add_(q_tile);
      if (!o.is_same(out_rows)) out_rows.copy_(o);
    }
  });
  return out;
}

// Gradients for one batch element; dk may alias dv (keys = values: both paths add into one buffer).
void backward_one(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  int64_t b, double scale, double bias, at::ScalarType acc, at::Tensor& dq, at::Tensor& dk,
                  at::Tensor& dv) {
  const int64_t lq = q.size(1), lk = k.size(1);
  for (int64_t q0 = 0; q0 < lq; q0 += kBwdBlockQ) {
    const int64_t nq = std::min(kBwdBlockQ, lq - q0);
    const at::Tensor q_tile = rows(q, b, q0, nq, acc);
    const at::Tensor q_scaled = q_tile.mul(scale);
    const at::Tensor g_tile = rows(grad_out, b, q0, nq, acc);
    at::Tensor dq_tile = dq.narrow(0, q0, nq);
    for (int64_t k0 = 0; k0 < lk; k0 += kBwdBlockK) {
      const int64_t nk = std::min(kBwdBlockK, lk - k0);
      const at::Tensor k_tile = rows(k, b, k0, nk, acc);
      const at::Tensor v_tile = rows(v, b, k0, nk, acc);
      at::Tensor p = at::mm(q_scaled, k_tile.t());
      p.add_(bias).sigmoid_();
      dv.narrow(0, k0, nk).addmm_(p.t(), g_tile);
      // dS = P(1 − P)·(dO Vᵀ)·scale, built in place in the dO Vᵀ tile.
      at::Tensor ds = at::mm(g_tile, v_tile.t());
      ds.mul_(p.mul(p).neg_().add_(p)).mul_(scale);  // p − p² = p(1 − p)
      dq_tile.addmm_(ds, k_tile);
      dk.narrow(0, k0, nk).addmm_(ds.t(), q_tile);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu_impl(const at::Tensor& grad_out, const at::Tensor& q,
                                                                 const at::Tensor& k, const at::Tensor& v,
                                                                 double scale, double bias, bool kv_shared) {
  check_attention_inputs(q, k, v);
  check_attention_grad(grad_out, q, v);
  const int64_t batch = q.size(0), lq = q.size(1), d = q.size(2), lk = k.size(1), dv = v.size(2);
  TORCH_CHECK_VALUE(!kv_shared || dv == d, "shared keys and values need dv == d");
  at::Tensor dq = at::empty({batch, lq, d}, q.options());
  at::Tensor dk = kv_shared ? at::Tensor() : at::empty({batch, lk, d}, q.options());
  at::Tensor dv_out = at::empty({batch, lk, dv}, q.options());
  const at::ScalarType acc = acc_type(q);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    const at::NoGradGuard no_grad;
    for (int64_t b = begin; b < end; ++b) {
      // Per-batch accumulators: the output rows themselves when they have the accumulation dtype.
      const auto accumulator = [&](const at::Tensor& grad) {
        at::Tensor rows_b = grad.select(0, b);
        return grad.scalar_type() == acc ? rows_b.zero_() : at::zeros(rows_b.sizes(), rows_b.options().dtype(acc));
      };
      at::Tensor dq_b = accumulator(dq);
      at::Tensor dv_b = accumulator(dv_out);
      at::Tensor dk_b = kv_shared ? dv_b : accumulator(dk);
      backward_one(grad_out, q, k, v, b, scale, bias, acc, dq_b, dk_b, dv_b);
      if (dq.scalar_type() != acc) {
        dq.select(0, b).copy_(dq_b);
        dv_out.select(0, b).copy_(dv_b);
        if (!kv_shared) dk.select(0, b).copy_(dk_b);
      }
    }
  });
  return {dq, dk, dv_out};
}

at::Tensor sigmoid_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                 double bias) {
  return forward_cpu(q, k, v, scale, bias, /*residual=*/false);
}

at::Tensor sigmoid_attention_kv_cpu(const at::Tensor& q, const at::Tensor& kv, double scale, double bias,
                                    bool residual) {
  return forward_cpu(q, kv, kv, scale, bias, residual);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
    double bias) {
  return backward_cpu_impl(grad_out, q, k, v, scale, bias, /*kv_shared=*/false);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_attention_kv_backward_cpu(const at::Tensor& grad_out,
                                                                     const at::Tensor& q, const at::Tensor& kv,
                                                                     double scale, double bias) {
  auto [dq, dk, dkv] = backward_cpu_impl(grad_out, q, kv, kv, scale, bias, /*kv_shared=*/true);
  return {dq, dkv};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fact_fast, m) {
  m.def("sigmoid_attention(Tensor q, Tensor k, Tensor v, float scale, float bias) -> Tensor");
  m.def("sigmoid_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, float scale, float bias)"
        " -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  // Keys = values (one tensor, read once); residual adds q to the output (FACT's interface).
  m.def("sigmoid_attention_kv(Tensor q, Tensor kv, float scale, float bias, bool residual) -> Tensor");
  // The gradient of the attention part only: the residual's identity is added by the caller.
  m.def("sigmoid_attention_kv_backward(Tensor grad_out, Tensor q, Tensor kv, float scale, float bias)"
        " -> (Tensor grad_q, Tensor grad_kv)");
}

TORCH_LIBRARY_IMPL(fact_fast, CPU, m) {
  m.impl("sigmoid_attention", &sigmoid_attention_cpu);
  m.impl("sigmoid_attention_backward", &sigmoid_attention_backward_cpu);
  m.impl("sigmoid_attention_kv", &sigmoid_attention_kv_cpu);
  m.impl("sigmoid_attention_kv_backward", &sigmoid_attention_kv_backward_cpu);
}

}  // namespace fact_fast
