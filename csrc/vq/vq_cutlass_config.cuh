// Tile configurations of the CuTe VQ search (vq_cutlass.cu), in a header of their own so that a
// host-side check (tests/cute/vq_cutlass_layout_check.cu) can verify the layout facts the kernel's
// epilogue relies on without a GPU.
#pragma once
#include <cute/tensor.hpp>  // first: the atom headers below rely on what it declares
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/numeric_types.h>

namespace fact_fast {
namespace vq_cutlass {

using namespace cute;

constexpr int kThreads = 256;
constexpr int kRowsPerTile = 128;   // rows of z per CTA
constexpr int kCodesPerTile = 128;  // codewords per tile of the sweep

// fp16 / bf16: CUTLASS's Ampere 128×128×32 configuration, with 8 warps and a 4-stage ring.
template <class E, class MmaOp>
struct Config16 {
  using Element = E;
  static constexpr int kDepth = 32, kStages = 4;
  using TiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<_4, _2, _1>>, Tile<_64, _32, _16>>;
  using SmemAtom = decltype(composition(Swizzle<2, 3, 3>{}, Layout<Shape<_8, _32>, Stride<_32, _1>>{}));
  using SmemCopy = Copy_Atom<SM75_U32x4_LDSM_N, E>;
  using GmemCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<uint128_t>, E>{},
                                            Layout<Shape<_64, _4>, Stride<_4, _1>>{}, Layout<Shape<_1, _8>>{}));
};

// fp32 through TF32 tensor cores: 32-deep k slices (128 bytes a row), 3 stages.
struct ConfigTf32 {
  using Element = tfloat32_t;
  static constexpr int kDepth = 32, kStages = 3;
  using TiledMma = TiledMMA<MMA_Atom<SM80_16x8x8_F32TF32TF32F32_TN>, Layout<Shape<_4, _2, _1>>, Tile<_64, _32, _8>>;
  using SmemAtom = decltype(composition(Swizzle<3, 2, 3>{}, Layout<Shape<_8, _32>, Stride<_32, _1>>{}));
  using SmemCopy = Copy_Atom<SM75_U32x4_LDSM_N, tfloat32_t>;
  using GmemCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<uint128_t>, tfloat32_t>{},
                                            Layout<Shape<_32, _8>, Stride<_8, _1>>{}, Layout<Shape<_1, _4>>{}));
};

template <class Cfg>
struct Layouts {
  using SmemZ = decltype(tile_to_shape(typename Cfg::SmemAtom{},
                                       Shape<Int<kRowsPerTile>, Int<Cfg::kDepth>, Int<Cfg::kStages>>{}));
  using SmemP = decltype(tile_to_shape(typename Cfg::SmemAtom{},
                                       Shape<Int<kCodesPerTile>, Int<Cfg::kDepth>, Int<Cfg::kStages>>{}));
  // Accumulator fragment of one thread: (4 values of an m16n8 tile, MMA_M, MMA_N).
  using Acc = decltype(partition_fragment_C(typename Cfg::TiledMma{},
                                            Shape<Int<kRowsPerTile>, Int<kCodesPerTile>>{}));
  static constexpr int kMmaM = decltype(size<1>(Acc{}))::value;
  static constexpr int kMmaN = decltype(size<2>(Acc{}))::value;
  // An m16n8 accumulator holds (row r: cols c, c+1; row r+8: cols c, c+1), so a thread owns two rows
  // per MMA_M step, and kSlots threads share each row of the tile. The kernel also relies on each
  // thread meeting its columns in increasing order along (MMA_N, value) and on every cell of the
  // tile having one owner: tests/cute/vq_cutlass_layout_check.cu verifies both.
  static constexpr int kRowsPerThread = 2 * kMmaM;
  static constexpr int kSlots = kThreads * kRowsPerThread / kRowsPerTile;
  static_assert(decltype(size<0>(Acc{}))::value == 4, "expected the m16n8 accumulator layout");
  static_assert(kThreads * kRowsPerThread % kRowsPerTile == 0, "threads must share rows evenly");
  static_assert(decltype(size(typename Cfg::TiledMma{}))::value == kThreads, "the MMA must use every thread");
};

using ConfigF16 = Config16<half_t, SM80_16x8x16_F32F16F16F32_TN>;
using ConfigBF16 = Config16<bfloat16_t, SM80_16x8x16_F32BF16BF16F32_TN>;

}  // namespace vq_cutlass
}  // namespace fact_fast
