// VQ family: op schemas and CPU kernels.
//
// vq_nearest / vq_quantize search: blocked over rows (at::parallel_for over blocks of kRowBlock rows)
// and over the codebook (tiles of kCodeTile codewords). Per call ‖p‖² is computed once; per tile a
// GEMM gives ⟨z, p⟩ for the block and a running argmin of ‖p‖² − 2⟨z, p⟩ (the ‖z‖² term is the same
// for every codeword) is kept per row. Working memory is one kRowBlock×kCodeTile score tile per
// thread (plus an fp32 copy of the codebook for fp16/bf16 inputs), never N×K.
//
// The expanded distance is rounded differently from the exact ‖z − p‖², so two codewords whose
// expanded values lie within the rounding bound of each other are compared by their exact distances
// (ties → lowest index). Duplicate codewords therefore always resolve to the lowest index, and the
// returned dist is the exact ‖z − p_index‖² accumulated in float (double for float64).
//
// vq_residual_backward: grad_z = grad_out + w_z·(z − p_k), grad_codebook[k] = Σ_{i: k_i = k} w_cb,i·(p_k − z_i).
// The codebook gradient is a segmented reduction over rows sorted by index (a stable counting sort),
// parallel over codewords and summed in row order, so it is bitwise reproducible on CPU always.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common/check.h"
#include "vq_checks.h"

namespace fact_fast {
namespace {

constexpr int64_t kRowBlock = 64;
constexpr int64_t kCodeTile = 256;
constexpr int kLanes = 16;

template <typename acc_t, typename scalar_t>
acc_t exact_sq_dist(const scalar_t* a, const acc_t* b, int64_t d) {
  acc_t s = 0;
  for (int64_t c = 0; c < d; ++c) {
    const acc_t diff = static_cast<acc_t>(a[c]) - b[c];
    s += diff * diff;
  }
  return s;
}

// index [n] and exact dist [n] (in acc_t) of the nearest codeword of each row of z.
// cbf: the codebook in acc_t, contiguous [k, d].
template <typename scalar_t>
void nearest_search(const scalar_t* z, const at::opmath_type<scalar_t>* cbf, int64_t n, int64_t k, int64_t d,
                    int64_t* index, at::opmath_type<scalar_t>* dist) {
  using acc_t = at::opmath_type<scalar_t>;
  if (n == 0) return;
  std::vector<acc_t> pn(k);
  at::parallel_for(0, k, 64, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      acc_t s = 0;
      for (int64_t c = 0; c < d; ++c) s += cbf[j * d + c] * cbf[j * d + c];
      pn[j] = s;
    }
  });
  const acc_t pn_max = *std::max_element(pn.begin(), pn.end());
  // Bound on |expanded − exact| of one candidate, per unit of (‖z‖² + 2 max‖p‖²), for any summation
  // order of length d (naive bound d·eps), doubled to cover both candidates of a comparison.
  const acc_t gamma = static_cast<acc_t>(2 * (d + 4)) * std::numeric_limits<acc_t>::epsilon();
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const at::Tensor cb_t = at::from_blob(const_cast<acc_t*>(cbf), {k, d}, opts);
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;

  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> zbuf(kRowBlock * d), score(kRowBlock * kCodeTile);
    acc_t best_v[kRowBlock], best_e[kRowBlock], band[kRowBlock];
    int64_t best_j[kRowBlock];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * kRowBlock, m = std::min(kRowBlock, n - r0);
      for (int64_t i = 0; i < m * d; ++i) zbuf[i] = static_cast<acc_t>(z[r0 * d + i]);
      for (int64_t r = 0; r < m; ++r) {
        acc_t zn = 0;
        for (int64_t c = 0; c < d; ++c) zn += zbuf[r * d + c] * zbuf[r * d + c];
        band[r] = gamma * (zn + 2 * pn_max);
        best_v[r] = std::numeric_limits<acc_t>::infinity();
        best_e[r] = -1;  // exact distance of the current best, computed only when a near tie needs it
        best_j[r] = 0;   // a row of NaNs never compares smaller: it reports codeword 0
      }
      const at::Tensor z_t = at::from_blob(zbuf.data(), {m, d}, opts);
      for (int64_t j0 = 0; j0 < k; j0 += kCodeTile) {
        const int64_t nb = std::min(kCodeTile, k - j0);
        at::Tensor s_t = at::from_blob(score.data(), {m, nb}, opts);
        at::mm_out(s_t, z_t, cb_t.narrow(0, j0, nb).t());
        for (int64_t r = 0; r < m; ++r) {
          acc_t* s = score.data() + r * nb;
          const acc_t* zr = zbuf.data() + r * d;
          acc_t bv = best_v[r], be = best_e[r];
          int64_t bj = best_j[r];
          const acc_t br = band[r];
          // Fold ‖p‖² − 2⟨z, p⟩ into the tile and take its minimum in independent lanes (vectorizes);
          // a tile with nothing within the band of the best so far needs no scan. NaNs are ignored
          // here and can never win in the scan either.
          acc_t lane[kLanes];
          std::fill(lane, lane + kLanes, std::numeric_limits<acc_t>::infinity());
          int64_t jj = 0;
          for (; jj + kLanes <= nb; jj += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
              const acc_t v = pn[j0 + jj + l] - 2 * s[jj + l];
              s[jj + l] = v;
              lane[l] = v < lane[l] ? v : lane[l];
            }
          }
          for (; jj < nb; ++jj) {
            const acc_t v = pn[j0 + jj] - 2 * s[jj];
            s[jj] = v;
            lane[0] = v < lane[0] ? v : lane[0];
          }
          if (*std::min_element(lane, lane + kLanes) > bv + br) continue;
          for (jj = 0; jj < nb; ++jj) {
            const int64_t j = j0 + jj;
            const acc_t v = s[jj];
            if (v < bv - br) {  // clearly closer, whatever the rounding
              bv = v;
              bj = j;
              be = -1;
            } else if (v <= bv + br) {  // within rounding: decide on exact distances, ties keep bj < j
              if (be < 0) be = exact_sq_dist<acc_t>(zr, cbf + bj * d, d);
              const acc_t e = exact_sq_dist<acc_t>(zr, cbf + j * d, d);
              if (e < be) {
                bv = v;
                bj = j;
                be = e;
              }
            }
          }
          best_v[r] = bv;
          best_e[r] = be;
          best_j[r] = bj;
        }
      }
      for (int64_t r = 0; r < m; ++r) {
        index[r0 + r] = best_j[r];
        dist[r0 + r] = best_e[r] >= 0 ? best_e[r] : exact_sq_dist<acc_t>(zbuf.data() + r * d, cbf + best_j[r] * d, d);
      }
    }
  });
}

void check_pair(const at::Tensor& z, const at::Tensor& codebook) {
  FF_CHECK_DIM(z, 2);
  FF_CHECK_DIM(codebook, 2);
  FF_CHECK_FLOAT(z);
  vq::check_pair_shapes(z, codebook);
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Runs the search; returns (index int64 [n], exact dist [n] in the accumulation dtype, codebook in acc dtype).
std::tuple<at::Tensor, at::Tensor, at::Tensor> search(const at::Tensor& z_in, const at::Tensor& codebook_in) {
  check_pair(z_in, codebook_in);
  const at::Tensor z = z_in.contiguous();
  const at::Tensor cbf = codebook_in.to(acc_type(z.scalar_type())).contiguous();
  const int64_t n = z.size(0), k = cbf.size(0), d = z.size(1);
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor dist = at::empty({n}, z.options().dtype(cbf.scalar_type()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "vq_search_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    nearest_search<scalar_t>(z.const_data_ptr<scalar_t>(), cbf.const_data_ptr<acc_t>(), n, k, d,
                             index.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr<acc_t>());
  });
  return {index, dist, cbf};
}

std::tuple<at::Tensor, at::Tensor> vq_nearest_cpu(const at::Tensor& z, const at::Tensor& codebook, bool) {
  auto [index, dist, cbf] = search(z, codebook);
  return {index, dist.to(z.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vq_quantize_cpu(const at::Tensor& z, const at::Tensor& codebook,
                                                               double beta, bool) {
  auto [index, dist, cbf] = search(z, codebook);
  const at::Tensor cb = codebook.contiguous();
  const int64_t n = z.size(0), d = z.size(1);
  at::Tensor v = at::empty({n, d}, z.options().memory_format(at::MemoryFormat::Contiguous));
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "vq_quantize_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* cbp = cb.const_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    scalar_t* vp = v.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) std::copy(cbp + idx[i] * d, cbp + (idx[i] + 1) * d, vp + i * d);
    });
    const acc_t* dp = dist.const_data_ptr<acc_t>();
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(dp[i]);  // serial: reproducible
  });
  // Both commitment terms have the value mean‖z − z_q‖²; they differ only in where gradients go.
  const double denom = static_cast<double>(std::max<int64_t>(n * d, 1));
  at::Tensor loss = at::full({}, (1.0 + beta) * total / denom, z.options());
  return {v, index, loss};
}

std::tuple<at::Tensor, at::Tensor> vq_residual_backward_cpu(const at::Tensor& z_in, const at::Tensor& codebook_in,
                                                            const at::Tensor& index_in,
                                                            const std::optional<at::Tensor>& grad_out_in,
                                                            const at::Tensor& z_weight,
                                                            const at::Tensor& codebook_weight, bool) {
  vq::check_backward_devices(z_in, index_in, grad_out_in, z_weight, codebook_weight);
  check_pair(z_in, codebook_in);
  const int64_t n = z_in.size(0), k = codebook_in.size(0), d = z_in.size(1);
  at::Tensor index, grad_out;  // (no structured binding: grad_out is captured by the dispatch lambda)
  std::tie(index, grad_out) = vq::backward_inputs(z_in, index_in, grad_out_in);
  const at::Tensor z = z_in.contiguous(), cb = codebook_in.contiguous();
  const at::ScalarType acc = acc_type(z.scalar_type());
  auto [wz, wz_stride] = vq::row_weight(z_weight, z, acc, "z_weight");
  auto [wc, wc_stride] = vq::row_weight(codebook_weight, z, acc, "codebook_weight");
  const int64_t* idx = index.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK_VALUE(idx[i] >= 0 && idx[i] < k, "index[", i, "] = ", idx[i], " is outside [0, ", k, ")");

  // Stable counting sort of the rows by codeword: offsets[k]..offsets[k+1] are the rows of codeword k.
  std::vector<int64_t> offsets(k + 1, 0), order(n);
  for (int64_t i = 0; i < n; ++i) ++offsets[idx[i] + 1];
  for (int64_t j = 0; j < k; ++j) offsets[j + 1] += offsets[j];
  {
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[fill[idx[i]]++] = i;
  }

  at::Tensor grad_z = at::empty({n, d}, z.options());
  at::Tensor grad_cb = at::empty({k, d}, cb.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "vq_residual_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* cp = cb.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.defined() ? grad_out.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* wzp = wz.const_data_ptr<acc_t>();
    const acc_t* wcp = wc.const_data_ptr<acc_t>();
    scalar_t* gz = grad_z.mutable_data_ptr<scalar_t>();
    scalar_t* gc = grad_cb.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const scalar_t* zr = zp + i * d;
        const scalar_t* pr = cp + idx[i] * d;
        const acc_t w = wzp[i * wz_stride];
        for (int64_t c = 0; c < d; ++c) {
          const acc_t g = gp ? static_cast<acc_t>(gp[i * d + c]) : acc_t(0);
          gz[i * d + c] = static_cast<scalar_t>(g + w * (static_cast<acc_t>(zr[c]) - static_cast<acc_t>(pr[c])));
        }
      }
    });
    at::parallel_for(0, k, 16, [&](int64_t b, int64_t e) {
      std::vector<acc_t> sum(d);
      for (int64_t j = b; j < e; ++j) {
        std::fill(sum.begin(), sum.end(), acc_t(0));
        const scalar_t* pr = cp + j * d;
        for (int64_t o = offsets[j]; o < offsets[j + 1]; ++o) {
          const int64_t i = order[o];
          const acc_t w = wcp[i * wc_stride];
          const scalar_t* zr = zp + i * d;
          for (int64_t c = 0; c < d; ++c) sum[c] += w * (static_cast<acc_t>(pr[c]) - static_cast<acc_t>(zr[c]));
        }
        for (int64_t c = 0; c < d; ++c) gc[j * d + c] = static_cast<scalar_t>(sum[c]);
      }
    });
  });
  return {grad_z, grad_cb};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fact_fast, m) {
  // `deterministic` only matters to the backward of the GPU backends (sorted segmented reduction
  // instead of atomics); the CPU backward is always deterministic.
  m.def("vq_nearest(Tensor z, Tensor codebook, bool deterministic=False) -> (Tensor index, Tensor dist)");
  m.def("vq_quantize(Tensor z, Tensor codebook, float beta, bool deterministic=False) "
        "-> (Tensor v, Tensor index, Tensor loss)");
  m.def("vq_residual_backward(Tensor z, Tensor codebook, Tensor index, Tensor? grad_out, Tensor z_weight, "
        "Tensor codebook_weight, bool deterministic=False) -> (Tensor grad_z, Tensor grad_codebook)");
}

TORCH_LIBRARY_IMPL(fact_fast, CPU, m) {
  m.impl("vq_nearest", &vq_nearest_cpu);
  m.impl("vq_quantize", &vq_quantize_cpu);
  m.impl("vq_residual_backward", &vq_residual_backward_cpu);
}

}  // namespace fact_fast
