// Fuzzy family: schemas of fuzzy_loss / fuzzy_membership / fuzzy_backward and their CPU kernels.
//
// Forward: samples in parallel; per sample, one pass over classes computes dist (float, or
// double for float64, accumulated in 16 independent lanes so the compiler vectorizes it), μ and
// the logit f (λ(μ − δ), or λ(−dist/τ − log δ) for the log logit: see fuzzy::Logit), kept in
// per-thread buffers; a second pass over those C values gives both log-sum-exps (max-shifted, the
// 0 term included) and the Jaccard sums. Per-sample losses land in a [B] buffer summed in index
// order afterwards, so the result does not depend on the thread count.
// Backward: tiles of classes in parallel, so each thread owns whole rows of ds (no atomics, a
// fixed summation order over b); per (b, c) it recomputes dist, μ and f, forms K = −τ·∂L/∂dist
// from the saved per-sample stats (the loss depends on dist and τ only through dist/τ), writes
// de = −2K/τ·(e − s) and accumulates ds and the per-class dτ partial Σ K·dist/τ² (summed in
// class order afterwards).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "fuzzy_checks.h"

namespace fact_fast {
namespace {

using fuzzy::Reduction;

// float rows get a vector body for the host's ISA: the extension is built for baseline x86-64
// (SSE2), and target_clones lets the loader pick an AVX-512 or AVX2 clone at run time.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define FF_FUZZY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FF_FUZZY_CLONES
#endif

// Σ (a − b)² in 16 independent lanes (vectorizable without reassociating one running sum).
template <typename scalar_t, typename acc_t>
inline acc_t sq_dist_lanes(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t d) {
  constexpr int kLanes = 16;
  acc_t lane[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const acc_t t = static_cast<acc_t>(a[k + j]) - static_cast<acc_t>(b[k + j]);
      lane[j] += t * t;
    }
  }
  acc_t acc = 0;
  for (; k < d; ++k) {
    const acc_t t = static_cast<acc_t>(a[k]) - static_cast<acc_t>(b[k]);
    acc += t * t;
  }
  for (int j = 0; j < kLanes; ++j) acc += lane[j];
  return acc;
}

// de = coef·(a − b) and acc −= de for one row.
template <typename scalar_t, typename acc_t>
inline void scaled_diff(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, acc_t coef, int64_t d,
                        scalar_t* __restrict__ out, acc_t* __restrict__ acc) {
  for (int64_t k = 0; k < d; ++k) {
    const acc_t v = coef * (static_cast<acc_t>(a[k]) - static_cast<acc_t>(b[k]));
    out[k] = static_cast<scalar_t>(v);
    acc[k] -= v;
  }
}

FF_FUZZY_CLONES float sq_dist_f32(const float* a, const float* b, int64_t d) {
  return sq_dist_lanes<float, float>(a, b, d);
}

FF_FUZZY_CLONES void scaled_diff_f32(const float* a, const float* b, float coef, int64_t d, float* out, float* acc) {
  scaled_diff<float, float>(a, b, coef, d, out, acc);
}

template <typename scalar_t, typename acc_t>
inline acc_t sq_dist(const scalar_t* a, const scalar_t* b, int64_t d) {
  if constexpr (std::is_same_v<scalar_t, float>) return sq_dist_f32(a, b, d);
  else return sq_dist_lanes<scalar_t, acc_t>(a, b, d);
}

template <typename scalar_t, typename acc_t>
inline void scaled_diff_row(const scalar_t* a, const scalar_t* b, acc_t coef, int64_t d, scalar_t* out, acc_t* acc) {
  if constexpr (std::is_same_v<scalar_t, float>) scaled_diff_f32(a, b, coef, d, out, acc);
  else scaled_diff<scalar_t, acc_t>(a, b, coef, d, out, acc);
}

struct LossParams {
  double alpha, logit_scale, smooth;
  fuzzy::Logit logit;  // f = λ(μ − shift) or, for logit.log, λ(−dist/τ − shift)
};

// f from a recomputed dist and μ = exp(−dist/τ); ls, shift already in acc_t.
template <typename acc_t>
inline acc_t point_logit(bool log_logit, acc_t ls, acc_t shift, acc_t dist, acc_t tau, acc_t mu) {
  return log_logit ? ls * (-dist / tau - shift) : ls * (mu - shift);
}

// y == nullptr: membership only (no stats, no loss).
template <typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* e, const scalar_t* s, const acc_t* y, acc_t tau, LossParams p, int64_t B,
                  int64_t C, int64_t D, scalar_t* mu, acc_t* stats, acc_t* per_sample) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, C * D));
  const acc_t ls = p.logit_scale, shift = p.logit.shift;
  const bool log_logit = p.logit.log;
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> m(C), fv(y == nullptr ? 0 : C);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        const acc_t dist = sq_dist<scalar_t, acc_t>(e + (b * C + c) * D, s + c * D, D);
        m[c] = std::exp(-dist / tau);
        mu[b * C + c] = static_cast<scalar_t>(m[c]);
        if (y != nullptr) fv[c] = point_logit(log_logit, ls, shift, dist, tau, m[c]);
      }
      if (y == nullptr) continue;
      const acc_t* yb = y + b * C;
      acc_t max_neg = 0, max_pos = 0;  // the log(1 + ·) zero term starts both maxima
      for (int64_t c = 0; c < C; ++c) {
        const acc_t f = fv[c];
        if (yb[c] > acc_t(0.5)) max_pos = std::max(max_pos, -f);
        else max_neg = std::max(max_neg, f);
      }
      acc_t sum_neg = std::exp(-max_neg), sum_pos = std::exp(-max_pos), num = 0, den = 0;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t f = fv[c];
        if (yb[c] > acc_t(0.5)) {
          sum_pos += std::exp(-f - max_pos);
          num += m[c];
          den += 1;
        } else {
          sum_neg += std::exp(f - max_neg);
          den += m[c];
        }
      }
      const acc_t lse_neg = max_neg + std::log(sum_neg), lse_pos = max_pos + std::log(sum_pos);
      num += p.smooth;
      den += p.smooth;
      acc_t* st = stats + b * 4;
      st[0] = lse_neg;
      st[1] = lse_pos;
      st[2] = num;
      st[3] = den;
      per_sample[b] = lse_neg + lse_pos + acc_t(p.alpha) * (1 - num / den);
    }
  });
}

// g == nullptr: no loss term; gmu == nullptr: no membership gradient.
// Threads own tiles of classes (≈ 64 KiB of ds accumulators each, cache resident); within a tile
// samples are the outer loop, so each step streams the tile's contiguous slice of e[b] and de[b].
template <typename scalar_t, typename acc_t>
void backward_cols(const scalar_t* e, const scalar_t* s, const acc_t* y, acc_t tau, const acc_t* stats,
                   const acc_t* g, int64_t g_stride, acc_t g_scale, const acc_t* gmu, LossParams p, int64_t B,
                   int64_t C, int64_t D, scalar_t* de, scalar_t* ds, acc_t* dtau_part) {
  const acc_t ls = p.logit_scale, shift = p.logit.shift, alpha = p.alpha;
  const bool log_logit = p.logit.log;
  const int64_t tile = std::max<int64_t>(1, (int64_t{64} << 10) / static_cast<int64_t>(sizeof(acc_t) * std::max<int64_t>(D, 1)));
  at::parallel_for(0, C, tile, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> ds_acc(std::min(tile, end - begin) * D);
    for (int64_t c0 = begin; c0 < end; c0 += tile) {
      const int64_t c1 = std::min(end, c0 + tile);
      std::fill(ds_acc.begin(), ds_acc.end(), acc_t(0));
      std::fill(dtau_part + c0, dtau_part + c1, acc_t(0));
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t bc = b * C + c;
          const scalar_t* er = e + bc * D;
          const scalar_t* sr = s + c * D;
          const acc_t dist = sq_dist<scalar_t, acc_t>(er, sr, D);
          const acc_t m = std::exp(-dist / tau);
          // kdist = K = −τ·∂L/∂dist from the point part pt = λ·g·∂L_point/∂f and the μ side
          // ms = g·∂L_set/∂μ + grad_μ: f = λ(μ − δ) gives K = μ(pt + ms); the log logit's f has
          // ∂f/∂dist = −λ/τ with no μ factor, so K = pt + μ·ms (a positive whose μ underflowed
          // is still pulled towards its anchor).
          acc_t pt = 0, ms = 0;
          if (g != nullptr) {
            const acc_t* st = stats + b * 4;
            const acc_t f = point_logit(log_logit, ls, shift, dist, tau, m);
            const acc_t gb = g[b * g_stride] * g_scale;
            const bool is_pos = y[bc] > acc_t(0.5);
            pt = gb * (is_pos ? -ls * std::exp(-f - st[1]) : ls * std::exp(f - st[0]));
            ms = gb * (is_pos ? -alpha / st[3] : alpha * st[2] / (st[3] * st[3]));
          }
          if (gmu != nullptr) ms += gmu[bc];
          const acc_t kdist = log_logit ? pt + ms * m : (pt + ms) * m;
          scaled_diff_row<scalar_t, acc_t>(er, sr, -2 * kdist / tau, D, de + bc * D, ds_acc.data() + (c - c0) * D);
          // K first: a vanishing K (μ → 0, or exp(f − lse) → 0) zeroes it before τ² can overflow
          dtau_part[c] += kdist * dist / tau / tau;
        }
      }
      for (int64_t i = 0; i < (c1 - c0) * D; ++i) ds[c0 * D + i] = static_cast<scalar_t>(ds_acc[i]);
    }
  });
}

template <typename acc_t>
acc_t ordered_sum(const acc_t* v, int64_t n) {
  acc_t total = 0;
  for (int64_t i = 0; i < n; ++i) total += v[i];
  return total;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& e_in, const at::Tensor& s_in,
                                                           const std::optional<at::Tensor>& y_in,
                                                           const at::Tensor& tau_in, LossParams p,
                                                           Reduction reduction) {
  const at::Tensor e = e_in.contiguous(), s = s_in.contiguous();
  const int64_t B = e.size(0), C = e.size(1), D = e.size(2);
  const auto acc = fuzzy::acc_type(e);
  const bool loss = y_in.has_value();
  at::Tensor mu = at::empty({B, C}, e.options());
  at::Tensor stats = at::empty({loss ? B : 0, 4}, e.options().dtype(acc));
  at::Tensor per_sample = at::empty({loss ? B : 0}, e.options().dtype(acc));
  at::Tensor y;
  if (loss) y = y_in->to(acc).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, e.scalar_type(), "fuzzy_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_rows<scalar_t, acc_t>(e.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(),
                                  loss ? y.const_data_ptr<acc_t>() : nullptr,
                                  tau_in.to(acc).item<acc_t>(), p, B, C, D, mu.mutable_data_ptr<scalar_t>(),
                                  loss ? stats.mutable_data_ptr<acc_t>() : nullptr,
                                  loss ? per_sample.mutable_data_ptr<acc_t>() : nullptr);
  });
  if (!loss || reduction == fuzzy::kNone) return {per_sample, mu, stats};
  at::Tensor out = at::empty({}, e.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES(acc, "fuzzy_reduce_cpu", [&] {
    const scalar_t total = ordered_sum(per_sample.const_data_ptr<scalar_t>(), B);
    out.fill_(reduction == fuzzy::kMean && B > 0 ? total / static_cast<scalar_t>(B) : total);
  });
  return {out, mu, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuzzy_loss_cpu(const at::Tensor& e, const at::Tensor& s,
                                                              const at::Tensor& y, const at::Tensor& tau,
                                                              double alpha, double logit_scale, double threshold,
                                                              double smooth, c10::string_view reduction,
                                                              c10::string_view logit) {
  fuzzy::check_e_s_tau(e, s, tau);
  fuzzy::check_y(y, e);
  const Reduction r = fuzzy::parse_reduction(std::string(reduction));
  return forward_cpu(e, s, y, tau, {alpha, logit_scale, smooth, fuzzy::parse_logit(std::string(logit), threshold)}, r);
}

at::Tensor fuzzy_membership_cpu(const at::Tensor& e, const at::Tensor& s, const at::Tensor& tau) {
  fuzzy::check_e_s_tau(e, s, tau);
  return std::get<1>(forward_cpu(e, s, std::nullopt, tau, {0, 0, 0, {false, 0}}, fuzzy::kNone));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuzzy_backward_cpu(
    const std::optional<at::Tensor>& grad_loss, const std::optional<at::Tensor>& grad_mu, const at::Tensor& e_in,
    const at::Tensor& s_in, const std::optional<at::Tensor>& y_in, const at::Tensor& tau,
    const std::optional<at::Tensor>& stats_in, double alpha, double logit_scale, double threshold,
    c10::string_view reduction_name, c10::string_view logit_name) {
  fuzzy::check_e_s_tau(e_in, s_in, tau);
  fuzzy::check_backward_inputs(grad_loss, grad_mu, e_in, y_in, stats_in);
  const Reduction reduction = fuzzy::parse_reduction(std::string(reduction_name));
  const fuzzy::Logit logit = fuzzy::parse_logit(std::string(logit_name), threshold);
  const at::Tensor e = e_in.contiguous(), s = s_in.contiguous();
  const int64_t B = e.size(0), C = e.size(1), D = e.size(2);
  const auto acc = fuzzy::acc_type(e);
  const bool has_loss = grad_loss.has_value() && grad_loss->defined();
  at::Tensor y, stats, g, gmu;
  int64_t g_stride = 0;
  if (has_loss) {
    fuzzy::check_y(*y_in, e);
    y = y_in->to(acc).contiguous();
    stats = stats_in->to(acc).contiguous();
    std::tie(g, g_stride) = fuzzy::upstream(*grad_loss, e, reduction);
  }
  if (grad_mu.has_value() && grad_mu->defined()) gmu = grad_mu->to(acc).contiguous();
  at::Tensor de = at::empty_like(e), ds = at::empty_like(s);
  at::Tensor part = at::empty({C}, e.options().dtype(acc));
  at::Tensor dtau = at::empty({}, e.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, e.scalar_type(), "fuzzy_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t g_scale = reduction == fuzzy::kMean && B > 0 ? acc_t(1) / static_cast<acc_t>(B) : acc_t(1);
    backward_cols<scalar_t, acc_t>(
        e.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), has_loss ? y.const_data_ptr<acc_t>() : nullptr,
        tau.to(acc).item<acc_t>(), has_loss ? stats.const_data_ptr<acc_t>() : nullptr,
        has_loss ? g.const_data_ptr<acc_t>() : nullptr, g_stride, g_scale,
        gmu.defined() ? gmu.const_data_ptr<acc_t>() : nullptr, {alpha, logit_scale, 0, logit}, B, C, D,
        de.mutable_data_ptr<scalar_t>(), ds.mutable_data_ptr<scalar_t>(), part.mutable_data_ptr<acc_t>());
    dtau.fill_(ordered_sum(part.const_data_ptr<acc_t>(), C));
  });
  return {de, ds, dtau};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fact_fast, m) {
  // logit: "scaled" (f = λ(μ − δ)) or "log" (f = λ·log(μ/δ)), the same in the backward as in the forward
  m.def("fuzzy_loss(Tensor e, Tensor s, Tensor y, Tensor tau, float alpha, float logit_scale, float threshold, "
        "float smooth, str reduction, str logit) -> (Tensor loss, Tensor mu, Tensor stats)");
  m.def("fuzzy_membership(Tensor e, Tensor s, Tensor tau) -> Tensor");
  m.def("fuzzy_backward(Tensor? grad_loss, Tensor? grad_mu, Tensor e, Tensor s, Tensor? y, Tensor tau, "
        "Tensor? stats, float alpha, float logit_scale, float threshold, str reduction, str logit) "
        "-> (Tensor de, Tensor ds, Tensor dtau)");
}

TORCH_LIBRARY_IMPL(fact_fast, CPU, m) {
  m.impl("fuzzy_loss", &fuzzy_loss_cpu);
  m.impl("fuzzy_membership", &fuzzy_membership_cpu);
  m.impl("fuzzy_backward", &fuzzy_backward_cpu);
}

}  // namespace fact_fast
