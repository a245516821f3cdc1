// vq_nearest: schema and CPU kernel. Rows are processed in parallel; each row scans the codebook
// with float (double for float64) accumulation and keeps a running min, so memory is O(1) per row
// and no N×K table exists.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common/check.h"

namespace fact_fast {
namespace {

template <typename scalar_t>
void vq_nearest_rows(const scalar_t* z, const scalar_t* codebook, int64_t n, int64_t k, int64_t d,
                     int64_t* index, scalar_t* dist) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* zr = z + row * d;
      acc_t best = std::numeric_limits<acc_t>::infinity();
      int64_t best_j = 0;
      for (int64_t j = 0; j < k; ++j) {
        const scalar_t* pj = codebook + j * d;
        acc_t acc = 0;
        for (int64_t c = 0; c < d; ++c) {
          const acc_t diff = static_cast<acc_t>(zr[c]) - static_cast<acc_t>(pj[c]);
          acc += diff * diff;
        }
        if (acc < best) {  // strict: ties keep the lowest index
          best = acc;
          best_j = j;
        }
      }
      index[row] = best_j;
      dist[row] = static_cast<scalar_t>(best);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> vq_nearest_cpu(const at::Tensor& z_in, const at::Tensor& codebook_in) {
  FF_CHECK_DIM(z_in, 2);
  FF_CHECK_DIM(codebook_in, 2);
  FF_CHECK_FLOAT(z_in);
  FF_CHECK_SAME_DTYPE(z_in, codebook_in);
  TORCH_CHECK_VALUE(z_in.size(1) == codebook_in.size(1), "z and codebook must have the same feature size");
  TORCH_CHECK_VALUE(codebook_in.size(0) > 0, "codebook must have at least one row");
  const at::Tensor z = z_in.contiguous();
  const at::Tensor codebook = codebook_in.contiguous();
  const int64_t n = z.size(0), k = codebook.size(0), d = z.size(1);
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor dist = at::empty({n}, z.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "vq_nearest_cpu", [&] {
    vq_nearest_rows<scalar_t>(z.const_data_ptr<scalar_t>(), codebook.const_data_ptr<scalar_t>(), n, k, d,
                              index.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr<scalar_t>());
  });
  return {index, dist};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fact_fast, m) {
  m.def("vq_nearest(Tensor z, Tensor codebook) -> (Tensor index, Tensor dist)");
}

TORCH_LIBRARY_IMPL(fact_fast, CPU, m) { m.impl("vq_nearest", &vq_nearest_cpu); }

}  // namespace fact_fast
