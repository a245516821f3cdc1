// Sigmoid attention forward, FlashAttention-2 style, on CuTe (CUTLASS headers; compiled only when
// setup.py finds them, FACT_FAST_WITH_CUTLASS). out = σ(q kᵀ·scale + bias) v (+ q), for float16 /
// bfloat16 with d = dv ∈ {64, 128}; no torch headers.
//
// A CTA (128 threads, one warp per 16 query rows) owns 64 queries of one batch element and walks
// the keys in tiles of 64:
//   * q (64×d) and the first k and v tiles arrive by 16-byte cp.async (zero-filled past Lq / Lk) in
//     FlashAttention-2's swizzled shared-memory layout; k and v are double-buffered, the next tile's
//     copies overlapping this tile's products (k_{j+1} is issued after S_j, v_{j+1} after O += P_j v_j);
//   * S = q kᵀ by mma.sync m16n8k16 (fp32 accumulation), q and k through ldmatrix;
//   * P = σ(S·scale + b) = ½ + ½·tanh(½·S·scale + ½·b) in registers (one FMA, the one-instruction
//     approximate tanh, one FMA), rounded to the input dtype and reused in place as the A operand
//     of O += P v (acc_as_a_operand) — P never touches shared memory; v through ldmatrix.trans.
//     Sigmoid needs no running row maximum, so unlike softmax attention O is never rescaled;
//     keys past Lk contribute nothing because their v rows are zero-filled.
//   * O (64×d, fp32 in registers) + q (the interface's residual) is rounded and stored.
#include <climits>
#include <cstdint>

#include "../common/arch.cuh"
#include "attention_cutlass_config.cuh"
#include "attention_kernels.h"

namespace fact_fast {
namespace {

using namespace cute;
using namespace attention_cutlass;

// σ(x) with x = s·scale + bias, as ½ + ½·tanh(s·half_scale + half_bias).
__device__ __forceinline__ float sigmoid_from_score(float s, float half_scale, float half_bias) {
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(fmaf(s, half_scale, half_bias)));
  return fmaf(0.5f, t, 0.5f);
}

template <class Cfg>
__global__ void __launch_bounds__(kThreads)
attention_fwd_cute_kernel(const typename Cfg::Element* __restrict__ q, int64_t q_sb, int64_t q_sl,
                          const typename Cfg::Element* __restrict__ k, int64_t k_sb, int64_t k_sl,
                          const typename Cfg::Element* __restrict__ v, int64_t v_sb, int64_t v_sl,
                          typename Cfg::Element* __restrict__ out, int lq, int lk, float half_scale, float half_bias,
                          bool residual) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using E = typename Cfg::Element;
  constexpr int D = Cfg::kHeadDim;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  E* const smem_q = reinterpret_cast<E*>(smem_raw);
  E* const smem_k = smem_q + Cfg::kSmemQ;       // 2 stages
  E* const smem_v = smem_k + 2 * Cfg::kSmemKV;  // 2 stages
  const int tid = threadIdx.x;
  const int64_t b = blockIdx.y;
  const int m0 = blockIdx.x * kBlockM;

  // Global views of this batch element (int64 strides; a batch stride of 0 broadcasts) and their
  // row predicates (the head dim is exact).
  const auto q_shape = make_shape(lq, Int<D>{});
  const auto kv_shape = make_shape(lk, Int<D>{});
  Tensor mQ = make_tensor(make_gmem_ptr(q + b * q_sb), q_shape, make_stride(q_sl, _1{}));
  Tensor mK = make_tensor(make_gmem_ptr(k + b * k_sb), kv_shape, make_stride(k_sl, _1{}));
  Tensor mV = make_tensor(make_gmem_ptr(v + b * v_sb), kv_shape, make_stride(v_sl, _1{}));
  Tensor pQ = cute::lazy::transform(make_identity_tensor(q_shape), [=](auto c) { return elem_less(c, q_shape); });
  Tensor pKV = cute::lazy::transform(make_identity_tensor(kv_shape), [=](auto c) { return elem_less(c, kv_shape); });
  const auto q_tiler = Shape<Int<kBlockM>, Int<D>>{};
  const auto kv_tiler = Shape<Int<kBlockN>, Int<D>>{};
  Tensor gQ = local_tile(mQ, q_tiler, make_coord(blockIdx.x, 0));  // (64, D)
  Tensor gQp = local_tile(pQ, q_tiler, make_coord(blockIdx.x, 0));
  Tensor gK = local_tile(mK, kv_tiler, make_coord(_, 0));  // (64, D, key tile)
  Tensor gV = local_tile(mV, kv_tiler, make_coord(_, 0));
  Tensor gKVp = local_tile(pKV, kv_tiler, make_coord(_, 0));

  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Cfg::SmemQ{});
  auto sK = [&](int stage) { return make_tensor(make_smem_ptr(smem_k + stage * Cfg::kSmemKV), typename Cfg::SmemKV{}); };
  auto sV = [&](int stage) { return make_tensor(make_smem_ptr(smem_v + stage * Cfg::kSmemKV), typename Cfg::SmemKV{}); };
  auto sVt = [&](int stage) {
    return make_tensor(make_smem_ptr(smem_v + stage * Cfg::kSmemKV), typename Cfg::SmemVt{});
  };

  typename Cfg::GmemCopy gmem_copy;
  auto thr_gmem = gmem_copy.get_slice(tid);
  Tensor tKVp = thr_gmem.partition_S(gKVp);
  Tensor tKg = thr_gmem.partition_S(gK);
  Tensor tVg = thr_gmem.partition_S(gV);
  auto fetch_k = [&](int tile, int stage) {
    Tensor dst = thr_gmem.partition_D(sK(stage));
    copy_if(gmem_copy, tKVp(_, _, _, tile), tKg(_, _, _, tile), dst);
  };
  auto fetch_v = [&](int tile, int stage) {
    Tensor dst = thr_gmem.partition_D(sV(stage));
    copy_if(gmem_copy, tKVp(_, _, _, tile), tVg(_, _, _, tile), dst);
  };

  typename Cfg::TiledMma mma;
  auto thr_mma = mma.get_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);     // (MMA, MMA_M, D / 16)
  Tensor tSrK = thr_mma.partition_fragment_B(sK(0));  // (MMA, MMA_N, D / 16)
  Tensor tOrVt = make_tensor<E>(partition_shape_B(mma, Shape<Int<D>, Int<kBlockN>>{}));  // (MMA, D / 8, 4)
  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<D>>{});
  auto smem_copy_q = make_tiled_copy_A(typename Cfg::SmemCopy{}, mma);
  auto smem_copy_k = make_tiled_copy_B(typename Cfg::SmemCopy{}, mma);
  auto smem_copy_v = make_tiled_copy_B(typename Cfg::SmemCopyTransposed{}, mma);
  auto thr_copy_q = smem_copy_q.get_slice(tid);
  auto thr_copy_k = smem_copy_k.get_slice(tid);
  auto thr_copy_v = smem_copy_v.get_slice(tid);
  Tensor tSsQ = thr_copy_q.partition_S(sQ);
  Tensor tSrQ_view = thr_copy_q.retile_D(tSrQ);
  Tensor tSrK_view = thr_copy_k.retile_D(tSrK);
  Tensor tOrVt_view = thr_copy_v.retile_D(tOrVt);

  const int key_tiles = (lk + kBlockN - 1) / kBlockN;
  // Prologue: q and k_0 (one group), v_0 (the next).
  Tensor tQs = thr_gmem.partition_D(sQ);
  copy_if(gmem_copy, thr_gmem.partition_S(gQp), thr_gmem.partition_S(gQ), tQs);
  if (key_tiles > 0) fetch_k(0, 0);
  cp_async_fence();
  if (key_tiles > 0) fetch_v(0, 0);
  cp_async_fence();
  clear(acc_o);

  for (int j = 0; j < key_tiles; ++j) {
    const int stage = j & 1;
    cp_async_wait<1>();  // q and k_j have landed (v_j may still be in flight)
    __syncthreads();
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    Tensor tSsK = thr_copy_k.partition_S(sK(stage));
    CUTE_UNROLL
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      copy(smem_copy_q, tSsQ(_, _, kb), tSrQ_view(_, _, kb));
      copy(smem_copy_k, tSsK(_, _, kb), tSrK_view(_, _, kb));
      gemm(mma, acc_s, tSrQ(_, _, kb), tSrK(_, _, kb), acc_s);
    }
    // The other stage held k_{j-1}, whose readers all passed the barrier above.
    if (j + 1 < key_tiles) fetch_k(j + 1, stage ^ 1);
    cp_async_fence();

    Tensor p = make_tensor<E>(acc_s.layout());
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) p(i) = E(sigmoid_from_score(acc_s(i), half_scale, half_bias));
    Tensor tOrP = make_tensor(p.data(), acc_as_a_operand(p.layout()));  // (MMA, MMA_M, kBlockN / 16)

    cp_async_wait<1>();  // v_j has landed (k_{j+1} may still be in flight)
    __syncthreads();
    Tensor tOsVt = thr_copy_v.partition_S(sVt(stage));
    CUTE_UNROLL
    for (int kb = 0; kb < size<2>(tOrP); ++kb) {
      copy(smem_copy_v, tOsVt(_, _, kb), tOrVt_view(_, _, kb));
      gemm(mma, acc_o, tOrP(_, _, kb), tOrVt(_, _, kb), acc_o);
    }
    if (j + 1 < key_tiles) fetch_v(j + 1, stage ^ 1);
    cp_async_fence();
  }
  cp_async_wait<0>();

  Tensor tOc = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<D>>{}));
  E* const out_b = out + b * static_cast<int64_t>(lq) * D;
  CUTE_UNROLL
  for (int i = 0; i < size(acc_o); ++i) {
    const int row = m0 + get<0>(tOc(i)), col = get<1>(tOc(i));
    if (row < lq) {
      float o = acc_o(i);
      if (residual) o += static_cast<float>(mQ(row, col));
      out_b[static_cast<int64_t>(row) * D + col] = E(o);
    }
  }
#endif
}

template <class Cfg>
cudaError_t forward(const AttentionOperand& q, const AttentionOperand& k, const AttentionOperand& v, void* out,
                    int64_t batch, int64_t lq, int64_t lk, float scale, float bias, bool residual,
                    cudaStream_t stream) {
  using E = typename Cfg::Element;
  const auto kernel = attention_fwd_cute_kernel<Cfg>;
  constexpr size_t smem = Cfg::kSmemBytes;
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((lq + kBlockM - 1) / kBlockM), static_cast<unsigned>(batch));
  kernel<<<grid, kThreads, smem, stream>>>(static_cast<const E*>(q.data), q.stride_b, q.stride_l,
                                           static_cast<const E*>(k.data), k.stride_b, k.stride_l,
                                           static_cast<const E*>(v.data), v.stride_b, v.stride_l,
                                           static_cast<E*>(out), static_cast<int>(lq), static_cast<int>(lk),
                                           0.5f * scale, 0.5f * bias, residual);
  return cudaGetLastError();
}

// A [B, L, d] operand the 16-byte copies can read: contiguous head dim, 16-byte aligned rows.
bool copyable(const AttentionOperand& x) {
  constexpr int64_t kVector = 8;  // 16-bit elements per 16 bytes
  return x.stride_d == 1 && x.stride_l % kVector == 0 && x.stride_b % kVector == 0 &&
         reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
}

template <class Kernel>
cudaError_t loaded_for_sm80(Kernel kernel, bool& ok) {
  return loaded_ptx_at_least(kernel, 80, ok);
}

}  // namespace

cudaError_t sigmoid_attention_cutlass_supported(DType dtype, AttentionOperand q, AttentionOperand k,
                                                AttentionOperand v, int64_t batch, int64_t lq, int64_t lk, int64_t d,
                                                int64_t dv, bool& ok) {
  ok = false;
  const bool shapes = d == dv && (d == 64 || d == 128) && batch <= 65535 && lq <= INT_MAX - kBlockM &&
                      lk <= INT_MAX - kBlockN;
  if ((dtype != DType::Float16 && dtype != DType::BFloat16) || !shapes || !copyable(q) || !copyable(k) ||
      !copyable(v))
    return cudaSuccess;
  // The kernel bodies exist only in code compiled for compute_80+.
  if (dtype == DType::Float16)
    return d == 64 ? loaded_for_sm80(attention_fwd_cute_kernel<ConfigF16<64>>, ok)
                   : loaded_for_sm80(attention_fwd_cute_kernel<ConfigF16<128>>, ok);
  return d == 64 ? loaded_for_sm80(attention_fwd_cute_kernel<ConfigBF16<64>>, ok)
                 : loaded_for_sm80(attention_fwd_cute_kernel<ConfigBF16<128>>, ok);
}

cudaError_t launch_sigmoid_attention_forward_cutlass(DType dtype, AttentionOperand q, AttentionOperand k,
                                                     AttentionOperand v, void* out, int64_t batch, int64_t lq,
                                                     int64_t lk, int64_t d, float scale, float bias, bool residual,
                                                     cudaStream_t stream) {
  if (batch * lq == 0) return cudaSuccess;
  if (dtype == DType::Float16)
    return d == 64 ? forward<ConfigF16<64>>(q, k, v, out, batch, lq, lk, scale, bias, residual, stream)
                   : forward<ConfigF16<128>>(q, k, v, out, batch, lq, lk, scale, bias, residual, stream);
  return d == 64 ? forward<ConfigBF16<64>>(q, k, v, out, batch, lq, lk, scale, bias, residual, stream)
                 : forward<ConfigBF16<128>>(q, k, v, out, batch, lq, lk, scale, bias, residual, stream);
}

}  // namespace fact_fast
