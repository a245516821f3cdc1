// VQ nearest-codeword search on CuTe (CUTLASS 3+/4 headers): a tiled tensor-core GEMM of z against
// the codebook whose epilogue keeps a running row-argmin instead of storing the N×K product (the fused
// L2 nearest-neighbour pattern of cuVS/RAFT). Compiled only when setup.py finds the CUTLASS headers
// (FACT_FAST_WITH_CUTLASS); no torch headers, so it compiles without them.
//
// Value minimized per row i: ‖p_j‖² − 2⟨z_i, p_j⟩ (‖z_i‖² is the same for every j). ‖p‖² comes from
// launch_vq_codeword_norms. One CTA (256 threads, 8 warps as 4×2) owns 128 rows of z and sweeps the
// 128-codeword tiles of its codebook split:
//   * main loop: cp.async copies (16 bytes, zero-filled past n, k or d) into a swizzled multi-stage
//     shared-memory ring (fp16/bf16: 32-deep k slices × 4 stages, 64 KiB; fp32: 32-deep × 3 stages,
//     96 KiB), ldmatrix to registers, mma.sync m16n8k16 (fp16/bf16, fp32 accumulation) or m16n8k8
//     TF32 (fp32 inputs: the tensor cores read the top 19 bits, an approximate product);
//     the (codebook tile, k slice) pairs form one flat pipeline, so it never drains between tiles;
//   * after each codebook tile, every thread folds its 64 accumulators into a per-row top-2 of
//     (value, index) in registers (its columns arrive in increasing index order, so `<` keeps the
//     lowest index among equal values);
//   * at the end the 8 threads that share a row meet in shared memory, and the row's top-2 of the
//     split is written out (score and index, [n, 2·splits] each).
// launch_vq_rerank then takes the row's top-2 over all splits by score and recomputes both exact
// float distances, keeping the lower (ties → lowest index): the approximate TF32 / fp32-accumulated
// scores only choose the two candidates; index and dist come from exact arithmetic, and are exact
// unless the true nearest codeword was not among the two best-scored.
//
// Splits: with few row tiles (FACT's N = 6272 gives 49) the codebook is split over gridDim.y, each
// split a contiguous run of codebook tiles; plan_splits picks the count from the occupancy.
#include <climits>
#include <cstdint>

#include "../common/arch.cuh"
#include "vq_cutlass_config.cuh"
#include "vq_kernels.h"

namespace fact_fast {
namespace {

using namespace cute;
using namespace vq_cutlass;

constexpr int kNoCandidate = -1;  // a candidate slot that holds nothing (an all-NaN row)

template <class Cfg>
struct alignas(128) SharedStorage {
  using E = typename Cfg::Element;
  union {
    struct {
      ArrayEngine<E, cosize_v<typename Layouts<Cfg>::SmemZ>> z;
      ArrayEngine<E, cosize_v<typename Layouts<Cfg>::SmemP>> p;
    } ring;
    struct {  // the per-row merge after the sweep (the ring is drained by then)
      float value[kRowsPerTile][2 * Layouts<Cfg>::kSlots];
      int index[kRowsPerTile][2 * Layouts<Cfg>::kSlots];
      int count[kRowsPerTile];
    } merge;
  };
};

__device__ __forceinline__ bool before(float v, int j, float best, int best_j) {
  return v < best || (v == best && j < best_j);
}

// Keeps (b1, j1) ≤ (b2, j2) the two smallest (value, index) pairs seen, in the (value, index) order.
__device__ __forceinline__ void keep_two(float& b1, int& j1, float& b2, int& j2, float v, int j) {
  if (before(v, j, b2, j2)) {
    if (before(v, j, b1, j1)) {
      b2 = b1;
      j2 = j1;
      b1 = v;
      j1 = j;
    } else {
      b2 = v;
      j2 = j;
    }
  }
}

// grid (row tiles, splits); split s sweeps codebook tiles [s·tiles_per_split, min(+tiles_per_split, all)).
// scores (float) and candidates (int32), [n, 2·gridDim.y] each: the split's top-2 per row.
template <class Cfg>
__global__ void __launch_bounds__(kThreads)
nearest_cute_kernel(const typename Cfg::Element* __restrict__ z, const typename Cfg::Element* __restrict__ cb,
                    const float* __restrict__ pnorm, int n, int k, int d, int tiles_per_split,
                    float* __restrict__ scores, int* __restrict__ candidates) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using E = typename Cfg::Element;
  using L = Layouts<Cfg>;
  constexpr int kStages = Cfg::kStages;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& smem = *reinterpret_cast<SharedStorage<Cfg>*>(smem_raw);
  const int tid = threadIdx.x;

  const int code_tiles = (k + kCodesPerTile - 1) / kCodesPerTile;
  const int tile_begin = blockIdx.y * tiles_per_split;
  const int tile_count = min(tiles_per_split, code_tiles - tile_begin);
  const int k_slices = (d + Cfg::kDepth - 1) / Cfg::kDepth;
  const int steps = tile_count * k_slices;  // (codebook tile, k slice) pairs of this CTA's pipeline

  // Global tensors (int64 row strides: n·d may pass 2^31) and their coordinate predicates.
  Tensor mZ = make_tensor(make_gmem_ptr(z), make_shape(n, d), make_stride(static_cast<int64_t>(d), _1{}));
  Tensor mP = make_tensor(make_gmem_ptr(cb), make_shape(k, d), make_stride(static_cast<int64_t>(d), _1{}));
  const auto z_shape = shape(mZ);
  const auto p_shape = shape(mP);
  Tensor pZ = cute::lazy::transform(make_identity_tensor(z_shape), [=](auto c) { return elem_less(c, z_shape); });
  Tensor pP = cute::lazy::transform(make_identity_tensor(p_shape), [=](auto c) { return elem_less(c, p_shape); });
  const auto z_tiler = Shape<Int<kRowsPerTile>, Int<Cfg::kDepth>>{};
  const auto p_tiler = Shape<Int<kCodesPerTile>, Int<Cfg::kDepth>>{};
  Tensor gZ = local_tile(mZ, z_tiler, make_coord(blockIdx.x, _));  // (BM, BK, k slice)
  Tensor gPz = local_tile(pZ, z_tiler, make_coord(blockIdx.x, _));
  Tensor gP = local_tile(mP, p_tiler, make_coord(_, _));           // (BN, BK, codebook tile, k slice)
  Tensor gPp = local_tile(pP, p_tiler, make_coord(_, _));

  Tensor sZ = make_tensor(make_smem_ptr(smem.ring.z.begin()), typename L::SmemZ{});  // (BM, BK, stage)
  Tensor sP = make_tensor(make_smem_ptr(smem.ring.p.begin()), typename L::SmemP{});  // (BN, BK, stage)

  typename Cfg::GmemCopy gmem_copy;
  auto thr_gmem = gmem_copy.get_slice(tid);
  Tensor tZg = thr_gmem.partition_S(gZ);
  Tensor tZp = thr_gmem.partition_S(gPz);
  Tensor tZs = thr_gmem.partition_D(sZ);
  Tensor tPg = thr_gmem.partition_S(gP);
  Tensor tPp = thr_gmem.partition_S(gPp);
  Tensor tPs = thr_gmem.partition_D(sP);

  // Issues the copies of pipeline step `step` into ring slot `stage` (no copy past the last step).
  auto fetch = [&](int step, int stage) {
    if (step < steps) {
      const int tile = tile_begin + step / k_slices, slice = step % k_slices;
      copy_if(gmem_copy, tZp(_, _, _, slice), tZg(_, _, _, slice), tZs(_, _, _, stage));
      copy_if(gmem_copy, tPp(_, _, _, tile, slice), tPg(_, _, _, tile, slice), tPs(_, _, _, stage));
    }
    cp_async_fence();
  };

  typename Cfg::TiledMma mma;
  auto thr_mma = mma.get_slice(tid);
  Tensor tCrA = thr_mma.partition_fragment_A(sZ(_, _, 0));  // (MMA, MMA_M, MMA_K)
  Tensor tCrB = thr_mma.partition_fragment_B(sP(_, _, 0));  // (MMA, MMA_N, MMA_K)
  Tensor acc = partition_fragment_C(mma, Shape<Int<kRowsPerTile>, Int<kCodesPerTile>>{});
  Tensor tCc = thr_mma.partition_C(make_identity_tensor(Shape<Int<kRowsPerTile>, Int<kCodesPerTile>>{}));

  auto smem_copy_a = make_tiled_copy_A(typename Cfg::SmemCopy{}, mma);
  auto thr_smem_a = smem_copy_a.get_slice(tid);
  Tensor tXsA = thr_smem_a.partition_S(sZ);
  Tensor tXrA = thr_smem_a.retile_D(tCrA);
  auto smem_copy_b = make_tiled_copy_B(typename Cfg::SmemCopy{}, mma);
  auto thr_smem_b = smem_copy_b.get_slice(tid);
  Tensor tXsB = thr_smem_b.partition_S(sP);
  Tensor tXrB = thr_smem_b.retile_D(tCrB);

  float best1[L::kRowsPerThread], best2[L::kRowsPerThread];
  int best1_j[L::kRowsPerThread], best2_j[L::kRowsPerThread];
  CUTE_UNROLL
  for (int r = 0; r < L::kRowsPerThread; ++r) {
    best1[r] = best2[r] = INFINITY;  // NaN scores never enter; an all-NaN row ends with no candidate
    best1_j[r] = best2_j[r] = INT_MAX;
  }

  // Folds the accumulators of codebook tile `tile` into the per-row top-2.
  auto fold = [&](int tile) {
    const int j0 = tile * kCodesPerTile;
    float pn[L::kMmaN][2];
    CUTE_UNROLL
    for (int nn = 0; nn < L::kMmaN; ++nn)
      CUTE_UNROLL
      for (int c = 0; c < 2; ++c) {
        const int j = j0 + get<1>(tCc(c, 0, nn));
        pn[nn][c] = j < k ? pnorm[j] : INFINITY;
      }
    CUTE_UNROLL
    for (int mm = 0; mm < L::kMmaM; ++mm)
      CUTE_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int r = 2 * mm + h;
        CUTE_UNROLL
        for (int nn = 0; nn < L::kMmaN; ++nn)
          CUTE_UNROLL
          for (int c = 0; c < 2; ++c) {
            // Columns come in increasing index order, so a plain `<` keeps the lowest index on ties;
            // codewords past k score +inf and never enter.
            const float v = pn[nn][c] - 2.f * acc(2 * h + c, mm, nn);
            const int j = j0 + get<1>(tCc(2 * h + c, mm, nn));
            if (v < best2[r]) {
              if (v < best1[r]) {
                best2[r] = best1[r];
                best2_j[r] = best1_j[r];
                best1[r] = v;
                best1_j[r] = j;
              } else {
                best2[r] = v;
                best2_j[r] = j;
              }
            }
          }
      }
  };

  // Prologue: fill all but one ring slot.
  CUTE_UNROLL
  for (int s = 0; s < kStages - 1; ++s) fetch(s, s);
  int next_fetch = kStages - 1, read_stage = 0, write_stage = kStages - 1;
  clear(acc);

  constexpr int kBlocks = decltype(size<2>(tCrA))::value;  // MMA_K steps per k slice
  // The register double buffer below loads block kb + 1 while block kb computes.
  static_assert(kBlocks > 1, "a k slice must hold at least two MMA_K steps");
  if (steps > 0) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    copy(smem_copy_a, tXsA(_, _, Int<0>{}, read_stage), tXrA(_, _, Int<0>{}));
    copy(smem_copy_b, tXsB(_, _, Int<0>{}, read_stage), tXrB(_, _, Int<0>{}));
  }
  for (int step = 0; step < steps; ++step) {
    CUTE_UNROLL
    for (int kb = 0; kb < kBlocks; ++kb) {
      if (kb == kBlocks - 1) {
        // The next step's slot: wait for its copies, and for every thread to be done with this one.
        read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
        cp_async_wait<kStages - 2>();
        __syncthreads();
      }
      const int kb_next = (kb + 1) % kBlocks;
      copy(smem_copy_a, tXsA(_, _, kb_next, read_stage), tXrA(_, _, kb_next));
      copy(smem_copy_b, tXsB(_, _, kb_next, read_stage), tXrB(_, _, kb_next));
      if (kb == 0) {
        // The slot read by the previous step is free (the barrier above, one step ago, proved it).
        fetch(next_fetch++, write_stage);
        write_stage = write_stage + 1 == kStages ? 0 : write_stage + 1;
      }
      gemm(mma, acc, tCrA(_, _, kb), tCrB(_, _, kb), acc);
    }
    if ((step + 1) % k_slices == 0) {
      fold(tile_begin + step / k_slices);
      clear(acc);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring is drained: its memory becomes the merge buffer

  auto& merge = smem.merge;
  if (tid < kRowsPerTile) merge.count[tid] = 0;
  __syncthreads();
  CUTE_UNROLL
  for (int mm = 0; mm < L::kMmaM; ++mm)
    CUTE_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int r = 2 * mm + h, row = get<0>(tCc(2 * h, mm, 0));
      const int slot = atomicAdd(&merge.count[row], 1);
      merge.value[row][2 * slot] = best1[r];
      merge.index[row][2 * slot] = best1_j[r];
      merge.value[row][2 * slot + 1] = best2[r];
      merge.index[row][2 * slot + 1] = best2_j[r];
    }
  __syncthreads();
  if (tid < kRowsPerTile) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerTile + tid;
    if (row < n) {
      // The slots arrive in any order; the (value, index) order makes the result independent of it.
      float b1 = INFINITY, b2 = INFINITY;
      int j1 = INT_MAX, j2 = INT_MAX;
      for (int e = 0; e < 2 * merge.count[tid]; ++e) keep_two(b1, j1, b2, j2, merge.value[tid][e], merge.index[tid][e]);
      const int64_t at = row * (2 * static_cast<int64_t>(gridDim.y)) + 2 * blockIdx.y;
      scores[at] = b1;
      scores[at + 1] = b2;
      candidates[at] = j1 == INT_MAX ? kNoCandidate : j1;
      candidates[at + 1] = j2 == INT_MAX ? kNoCandidate : j2;
    }
  }
#endif
}

template <class Cfg>
cudaError_t prepare(size_t& smem) {
  smem = sizeof(SharedStorage<Cfg>);
  return cudaFuncSetAttribute(nearest_cute_kernel<Cfg>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

// Codebook splits minimizing waves × (steps per CTA + pipeline fill), fewer splits on ties: enough
// CTAs to fill the GPU when n is small, no extra split (and merge work) when n already fills it.
template <class Cfg>
cudaError_t plan_splits(int64_t n, int64_t k, int64_t d, int& splits) {
  splits = 1;
  size_t smem = 0;
  int device = 0, sm_count = 0, per_sm = 0;
  cudaError_t err = prepare<Cfg>(smem);
  if (err == cudaSuccess) err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, nearest_cute_kernel<Cfg>, kThreads, smem);
  if (err != cudaSuccess) return err;
  const int64_t slots = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * (per_sm > 0 ? per_sm : 1);
  const int64_t row_tiles = (n + kRowsPerTile - 1) / kRowsPerTile;
  const int64_t code_tiles = (k + kCodesPerTile - 1) / kCodesPerTile;
  const int64_t k_slices = (d + Cfg::kDepth - 1) / Cfg::kDepth;
  int64_t best_cost = -1;
  for (int64_t want = 1; want <= code_tiles && want <= 1024; ++want) {
    const int64_t per_split = (code_tiles + want - 1) / want;
    const int64_t used = (code_tiles + per_split - 1) / per_split;  // every split non-empty
    if (used != want) continue;
    const int64_t waves = (row_tiles * used + slots - 1) / slots;
    const int64_t cost = waves * (per_split * k_slices + Cfg::kStages);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      splits = static_cast<int>(used);
    }
  }
  return cudaSuccess;
}

template <class Cfg>
cudaError_t search(const void* z, const void* cb, const float* pnorm, int64_t n, int64_t k, int64_t d, int splits,
                   float* scores, int* candidates, cudaStream_t stream) {
  using E = typename Cfg::Element;
  size_t smem = 0;
  cudaError_t err = prepare<Cfg>(smem);
  if (err != cudaSuccess) return err;
  const int code_tiles = static_cast<int>((k + kCodesPerTile - 1) / kCodesPerTile);
  const int tiles_per_split = (code_tiles + splits - 1) / splits;
  const dim3 grid(static_cast<unsigned>((n + kRowsPerTile - 1) / kRowsPerTile), static_cast<unsigned>(splits));
  nearest_cute_kernel<Cfg><<<grid, kThreads, smem, stream>>>(
      static_cast<const E*>(z), static_cast<const E*>(cb), pnorm, static_cast<int>(n), static_cast<int>(k),
      static_cast<int>(d), tiles_per_split, scores, candidates);
  return cudaGetLastError();
}

// Elements per 16-byte copy: d must be a multiple, so that a copy never straddles the end of a row.
int vector_elements(DType dtype) { return dtype == DType::Float32 ? 4 : 8; }

}  // namespace

cudaError_t vq_cutlass_splits(DType dtype, int64_t n, int64_t k, int64_t d, int& splits) {
  switch (dtype) {
    case DType::Float32: return plan_splits<ConfigTf32>(n, k, d, splits);
    case DType::Float16: return plan_splits<ConfigF16>(n, k, d, splits);
    case DType::BFloat16: return plan_splits<ConfigBF16>(n, k, d, splits);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t vq_cutlass_supported(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k, int64_t d,
                                 bool& ok) {
  ok = false;
  if (dtype != DType::Float32 && dtype != DType::Float16 && dtype != DType::BFloat16) return cudaSuccess;
  constexpr int64_t kMaxExtent = INT_MAX - 2 * kRowsPerTile;  // the kernel indexes rows, codewords and d in int
  const bool aligned = reinterpret_cast<uintptr_t>(z) % 16 == 0 && reinterpret_cast<uintptr_t>(codebook) % 16 == 0;
  if (d <= 0 || d % vector_elements(dtype) != 0 || !aligned || n > kMaxExtent || k > kMaxExtent || d > kMaxExtent)
    return cudaSuccess;
  // The kernel bodies exist only in code compiled for compute_80+.
  switch (dtype) {
    case DType::Float32: return loaded_ptx_at_least(nearest_cute_kernel<ConfigTf32>, 80, ok);
    case DType::Float16: return loaded_ptx_at_least(nearest_cute_kernel<ConfigF16>, 80, ok);
    default: return loaded_ptx_at_least(nearest_cute_kernel<ConfigBF16>, 80, ok);
  }
}

cudaError_t launch_vq_nearest_cutlass(DType dtype, const void* z, const void* codebook, int64_t n, int64_t k,
                                      int64_t d, const float* pnorm, int splits, float* scores, int* candidates,
                                      cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  switch (dtype) {
    case DType::Float32: return search<ConfigTf32>(z, codebook, pnorm, n, k, d, splits, scores, candidates, stream);
    case DType::Float16: return search<ConfigF16>(z, codebook, pnorm, n, k, d, splits, scores, candidates, stream);
    case DType::BFloat16:
      return search<ConfigBF16>(z, codebook, pnorm, n, k, d, splits, scores, candidates, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fact_fast
