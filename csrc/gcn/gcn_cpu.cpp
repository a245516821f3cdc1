// gcn_spmm / gcn_spmm_value_grad: schemas and CPU kernels.
//
// out_i = dinv_i * (sum_{e in row i} w_e dinv_{col_e} x_{col_e} + s * dinv_i x_i), i.e. Â x with
// Â = D̃^{-1/2}(A + s·I)D̃^{-1/2}, the normalization applied on the fly from the precomputed dinv
// (all ones when not normalizing). Rows are independent: at::parallel_for over rows, a float
// (double for float64) accumulator row per thread, no atomics, so results are deterministic.
// The backward dX = Âᵀ dY is the same kernel run on the transposed CSR (see fact_fast/ops/gcn.py).
//
// Every row pointer and column index is checked while it is read (no extra pass): a malformed CSR
// raises ValueError after the loop and nothing out of bounds is ever read.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../common/check.h"
#include "../common/gcn_check.h"

namespace fact_fast {
namespace {

// Rows per parallel task: about 256k multiply-adds each, so tiny graphs (C = 40) run inline and
// threads are not woken for less work than their synchronization costs.
int64_t row_grain(int64_t n, int64_t nnz, int64_t f) {
  const int64_t per_row = (nnz / (n > 0 ? n : 1) + 1) * (f > 0 ? f : 1);
  return std::max<int64_t>(1, (int64_t{1} << 18) / per_row);
}

// The neighbours' feature rows are random gathers that the hardware prefetcher cannot predict:
// request the row of the edge kPrefetchDistance ahead, one cache line at a time.
constexpr int64_t kPrefetchDistance = 4;

template <typename scalar_t, typename index_t>
inline void prefetch_row(const scalar_t* x, const index_t* col, int64_t e, int64_t e1, int64_t n, int64_t f) {
  if (e >= e1) return;
  const int64_t c = col[e];
  if (c < 0 || c >= n) return;
  const char* p = reinterpret_cast<const char*>(x + c * f);
  for (int64_t b = 0; b < f * static_cast<int64_t>(sizeof(scalar_t)); b += 64) __builtin_prefetch(p + b);
}

template <typename scalar_t, typename acc_t>
inline void axpy(acc_t* __restrict__ acc, const scalar_t* __restrict__ xc, acc_t w, int64_t f) {
  for (int64_t k = 0; k < f; ++k) acc[k] += w * static_cast<acc_t>(xc[k]);
}

#if defined(__GNUC__) && defined(__x86_64__)
// The extension is built for baseline x86-64, where each float16 -> float conversion is scalar bit
// manipulation; with F16C (checked at run time) eight halves convert in one instruction.
__attribute__((target("avx2,fma,f16c"))) void axpy_half_f16c(float* __restrict__ acc,
                                                              const c10::Half* __restrict__ xc, float w,
                                                              int64_t f) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t k = 0;
  for (; k + 8 <= f; k += 8) {
    const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xc + k)));
    _mm256_storeu_ps(acc + k, _mm256_fmadd_ps(wv, xv, _mm256_loadu_ps(acc + k)));
  }
  for (; k < f; ++k) acc[k] += w * static_cast<float>(xc[k]);
}

const bool kHasF16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");

template <>
inline void axpy<c10::Half, float>(float* __restrict__ acc, const c10::Half* __restrict__ xc, float w, int64_t f) {
  if (kHasF16c) {
    axpy_half_f16c(acc, xc, w, f);
    return;
  }
  for (int64_t k = 0; k < f; ++k) acc[k] += w * static_cast<float>(xc[k]);
}
#endif

template <typename scalar_t, typename index_t>
void spmm_rows(const scalar_t* x, const index_t* rowptr, const index_t* col,
               const at::opmath_type<scalar_t>* value, const at::opmath_type<scalar_t>* dinv, int64_t n,
               int64_t nnz, int64_t f, bool self_loop, scalar_t* out, std::atomic<bool>& bad) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, n, row_grain(n, nnz, f), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(f);
    for (int64_t row = begin; row < end; ++row) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const int64_t e0 = rowptr[row], e1 = rowptr[row + 1];
      if (e0 < 0 || e1 < e0 || e1 > nnz) {
        bad.store(true, std::memory_order_relaxed);
      } else {
        for (int64_t e = e0; e < e1; ++e) {
          const int64_t c = col[e];
          if (c < 0 || c >= n) {
            bad.store(true, std::memory_order_relaxed);
            continue;
          }
          prefetch_row(x, col, e + kPrefetchDistance, e1, n, f);
          const acc_t w = (value ? value[e] : acc_t(1)) * dinv[c];
          axpy<scalar_t, acc_t>(acc.data(), x + c * f, w, f);
        }
      }
      const acc_t di = dinv[row];
      const scalar_t* xr = x + row * f;
      scalar_t* o = out + row * f;
      if (self_loop) {
        for (int64_t k = 0; k < f; ++k) o[k] = static_cast<scalar_t>(di * (acc[k] + di * static_cast<acc_t>(xr[k])));
      } else {
        for (int64_t k = 0; k < f; ++k) o[k] = static_cast<scalar_t>(di * acc[k]);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
acc_t dot(const scalar_t* a, const scalar_t* b, int64_t f) {
  acc_t s = 0;
  for (int64_t k = 0; k < f; ++k) s += static_cast<acc_t>(a[k]) * static_cast<acc_t>(b[k]);
  return s;
}

// d value_e = dinv_r dinv_c <g_r, x_c> + t_r, where t_r = dL/d deg_r carries the dependence of the
// degrees on the edge values (see docs/ops/gcn.md for the derivation):
//   t_r = -1/2 dinv_r^2 (dinv_r a_r + <dx_r, x_r> + s dinv_r^2 <g_r, x_r>),  a_r = sum_e w_e dinv_c <g_r, x_c>.
template <typename scalar_t, typename index_t>
void value_grad_rows(const scalar_t* grad, const scalar_t* x, const scalar_t* dx, const index_t* rowptr,
                     const index_t* col, const at::opmath_type<scalar_t>* value,
                     const at::opmath_type<scalar_t>* dinv, int64_t n, int64_t nnz, int64_t f, bool self_loop,
                     bool normalize, at::opmath_type<scalar_t>* dvalue, std::atomic<bool>& bad) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, n, row_grain(n, nnz, f), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t e0 = rowptr[row], e1 = rowptr[row + 1];
      if (e0 < 0 || e1 < e0 || e1 > nnz) {
        bad.store(true, std::memory_order_relaxed);
        continue;
      }
      const acc_t di = dinv[row];
      const scalar_t* gr = grad + row * f;
      acc_t a = 0;
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t c = col[e];
        if (c < 0 || c >= n) {
          bad.store(true, std::memory_order_relaxed);
          continue;
        }
        const acc_t p = dot<scalar_t, acc_t>(gr, x + c * f, f);
        dvalue[e] = di * dinv[c] * p;
        a += (value ? value[e] : acc_t(1)) * dinv[c] * p;
      }
      if (!normalize || di == acc_t(0)) continue;
      const scalar_t* xr = x + row * f;
      acc_t inner = di * a + dot<scalar_t, acc_t>(dx + row * f, xr, f);
      if (self_loop) inner += di * di * dot<scalar_t, acc_t>(gr, xr, f);
      const acc_t t = acc_t(-0.5) * di * di * inner;
      for (int64_t e = e0; e < e1; ++e) dvalue[e] += t;
    }
  });
}

at::Tensor gcn_spmm_cpu(const at::Tensor& x_in, const at::Tensor& rowptr_in, const at::Tensor& col_in,
                        const std::optional<at::Tensor>& value_in, const at::Tensor& dinv_in,
                        const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                        bool add_self_loops, bool normalize) {
  gcn_check_transpose_devices(x_in, t_rowptr, t_col, t_perm);
  const GcnInputs in = gcn_contiguous_inputs(x_in, rowptr_in, col_in, value_in, dinv_in);
  const at::Tensor &x = in.x, &rowptr = in.rowptr, &col = in.col, &value = in.value, &dinv = in.dinv;
  const int64_t n = in.n, f = in.f, nnz = in.nnz;
  at::Tensor out = at::empty({n, f}, x.options());
  if (n == 0) return out;
  gcn_check_rowptr_ends(rowptr, nnz);
  std::atomic<bool> bad{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gcn_spmm_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(col.scalar_type(), "gcn_spmm_cpu_index", [&] {
      spmm_rows<scalar_t, index_t>(x.const_data_ptr<scalar_t>(), rowptr.const_data_ptr<index_t>(),
                                   col.const_data_ptr<index_t>(),
                                   value.defined() ? value.const_data_ptr<acc_t>() : nullptr,
                                   dinv.const_data_ptr<acc_t>(), n, nnz, f, add_self_loops,
                                   out.mutable_data_ptr<scalar_t>(), bad);
    });
  });
  TORCH_CHECK_VALUE(!bad.load(), kMalformedCsr);
  return out;
}

at::Tensor gcn_spmm_value_grad_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& rowptr_in,
                                   const at::Tensor& col_in, const std::optional<at::Tensor>& value_in,
                                   const at::Tensor& dinv_in, const at::Tensor& dx_in, bool add_self_loops,
                                   bool normalize) {
  const GcnGradInputs in = gcn_contiguous_grad_inputs(grad_in, x_in, rowptr_in, col_in, value_in, dinv_in, dx_in);
  const at::Tensor &x = in.x, &rowptr = in.rowptr, &col = in.col, &value = in.value, &dinv = in.dinv;
  const int64_t n = in.n, f = in.f, nnz = in.nnz;
  const at::Tensor &grad = in.grad, &dx = in.dx;
  at::Tensor dvalue = at::zeros({nnz}, dinv.options());
  if (n == 0) return dvalue;
  gcn_check_rowptr_ends(rowptr, nnz);
  std::atomic<bool> bad{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gcn_spmm_value_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(col.scalar_type(), "gcn_spmm_value_grad_cpu_index", [&] {
      value_grad_rows<scalar_t, index_t>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), dx.const_data_ptr<scalar_t>(),
          rowptr.const_data_ptr<index_t>(), col.const_data_ptr<index_t>(),
          value.defined() ? value.const_data_ptr<acc_t>() : nullptr, dinv.const_data_ptr<acc_t>(), n, nnz, f,
          add_self_loops, normalize, dvalue.mutable_data_ptr<acc_t>(), bad);
    });
  });
  TORCH_CHECK_VALUE(!bad.load(), kMalformedCsr);
  return dvalue;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fact_fast, m) {
  m.def("gcn_spmm(Tensor x, Tensor rowptr, Tensor col, Tensor? value, Tensor dinv, Tensor t_rowptr, "
        "Tensor t_col, Tensor t_perm, bool add_self_loops, bool normalize) -> Tensor");
  m.def("gcn_spmm_value_grad(Tensor grad, Tensor x, Tensor rowptr, Tensor col, Tensor? value, Tensor dinv, "
        "Tensor dx, bool add_self_loops, bool normalize) -> Tensor");
}

TORCH_LIBRARY_IMPL(fact_fast, CPU, m) {
  m.impl("gcn_spmm", &gcn_spmm_cpu);
  m.impl("gcn_spmm_value_grad", &gcn_spmm_value_grad_cpu);
}

}  // namespace fact_fast
