// Tile configurations of the CuTe sigmoid-attention forward (attention_cutlass.cu), in a header of their
// own so that a host-side check (tests/cute/attention_cutlass_layout_check.cu) can verify the layout
// facts the kernel relies on without a GPU.
#pragma once
#include <cute/tensor.hpp>  // first: the atom headers below rely on what it declares
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/numeric_types.h>

namespace fact_fast {
namespace attention_cutlass {

using namespace cute;

constexpr int kBlockM = 64;  // queries per CTA: 4 warps × 16 rows
constexpr int kBlockN = 64;  // keys per tile
constexpr int kThreads = 128;

// FlashAttention-2's Ampere layout for 16-bit inputs: 64-column swizzled shared-memory atoms,
// ldmatrix for q and k, ldmatrix.trans for v, one warp per 16 query rows.
template <class E, class MmaOp, int D>
struct Config {
  using Element = E;
  static constexpr int kHeadDim = D;
  static_assert(D % 64 == 0, "the shared-memory atom is 64 columns wide");
  using TiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<_4, _1, _1>>, Tile<Int<kBlockM>, _16, _16>>;
  using SmemAtom = decltype(composition(Swizzle<3, 3, 3>{}, Layout<Shape<_8, _64>, Stride<_64, _1>>{}));
  using SmemQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<D>>{}));
  using SmemKV = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<D>>{}));  // one stage
  // v read as the (head dim × keys) B operand of P·V.
  using SmemVt = decltype(composition(SmemKV{}, make_layout(Shape<Int<D>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemCopy = Copy_Atom<SM75_U32x4_LDSM_N, E>;
  using SmemCopyTransposed = Copy_Atom<SM75_U16x8_LDSM_T, E>;
  using GmemCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<uint128_t>, E>{},
                                            Layout<Shape<_16, _8>, Stride<_8, _1>>{}, Layout<Shape<_1, _8>>{}));
  static constexpr int kSmemQ = cosize_v<SmemQ>, kSmemKV = cosize_v<SmemKV>;
  // q, two stages of k, two of v.
  static constexpr size_t kSmemBytes = sizeof(E) * (kSmemQ + 4 * static_cast<size_t>(kSmemKV));
};

// The accumulator layout of S (m16n8 tiles: ((2, 2), MMA_M, MMA_N)) read as the A operand of the
// m16n8k16 P·V product (((2, 2, 2), MMA_M, MMA_N / 2)): two neighbouring n8 accumulator tiles hold
// exactly the values of one k16 A tile, so P never leaves the registers.
template <class AccLayout>
CUTE_HOST_DEVICE constexpr auto acc_as_a_operand(AccLayout acc) {
  auto split = logical_divide(acc, Shape<Underscore, Underscore, _2>{});
  return make_layout(make_layout(get<0>(split), get<2, 0>(split)), get<1>(split), get<2, 1>(split));
}

template <int D>
using ConfigF16 = Config<half_t, SM80_16x8x16_F32F16F16F32_TN, D>;
template <int D>
using ConfigBF16 = Config<bfloat16_t, SM80_16x8x16_F32BF16BF16F32_TN, D>;

}  // namespace attention_cutlass
}  // namespace fact_fast
