// Host-side check of the layout facts the CuTe sigmoid-attention forward (csrc/attention/
// attention_cutlass.cu) relies on, for each configuration it compiles. Built and run by
// tests/test_cute_layouts.py; needs no GPU. Exit status 0 = every fact holds.
#include <cstdio>
#include <set>
#include <utility>

#include "attention/attention_cutlass_config.cuh"

using namespace cute;
using namespace fact_fast::attention_cutlass;

static int errors = 0;

#define EXPECT(cond, ...)                  \
  do {                                     \
    if (!(cond)) {                         \
      ++errors;                            \
      if (errors <= 20) {                  \
        std::printf("%s: ", name);         \
        std::printf(__VA_ARGS__);          \
        std::printf("\n");                 \
      }                                    \
    }                                      \
  } while (0)

template <class Cfg>
void check(const char* name) {
  constexpr int D = Cfg::kHeadDim;
  typename Cfg::TiledMma mma;
  std::set<std::pair<int, int>> out_cells;
  for (int t = 0; t < kThreads; ++t) {
    auto thr = mma.get_slice(t);
    // P stays in registers: the S accumulator, read through acc_as_a_operand, holds for each A-operand
    // slot of the P·V product exactly the (query, key) element that slot multiplies.
    Tensor s_c = thr.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
    Tensor p_as_a = make_tensor(s_c.data(), acc_as_a_operand(s_c.layout()));
    Tensor p_a = thr.partition_A(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
    EXPECT(size(p_as_a) == size(p_a) && size<2>(p_as_a) == size<2>(p_a), "thread %d: P fragment shapes differ", t);
    for (int i = 0; i < size(p_a); ++i)
      EXPECT(p_as_a(i) == p_a(i), "thread %d slot %d: P holds (%d, %d), the mma reads (%d, %d)", t, i,
             int(get<0>(p_as_a(i))), int(get<1>(p_as_a(i))), int(get<0>(p_a(i))), int(get<1>(p_a(i))));
    // The output epilogue writes every (query, column) of the tile once.
    Tensor o_c = thr.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<D>>{}));
    for (int i = 0; i < size(o_c); ++i)
      EXPECT(out_cells.insert({get<0>(o_c(i)), get<1>(o_c(i))}).second, "output cell written twice");
  }
  EXPECT(out_cells.size() == size_t(kBlockM) * D, "%zu of the output tile's cells written", out_cells.size());
  // v read as vᵀ: element (column, key) of SmemVt is element (key, column) of the stored v tile.
  for (int c = 0; c < D; ++c)
    for (int key = 0; key < kBlockN; ++key)
      EXPECT(typename Cfg::SmemVt{}(c, key) == typename Cfg::SmemKV{}(key, c), "vᵀ(%d, %d) misplaced", c, key);
  // Each 16-byte copy reads 8 consecutive, aligned columns of one row, and the copies cover a tile once.
  typename Cfg::GmemCopy copy;
  std::set<std::pair<int, int>> covered;
  for (int t = 0; t < kThreads; ++t) {
    Tensor part = copy.get_slice(t).partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<D>>{}));
    for (int i = 0; i < size<1>(part); ++i)
      for (int j = 0; j < size<2>(part); ++j) {
        const auto first = part(0, i, j);
        EXPECT(get<1>(first) % 8 == 0, "a copy starts at column %d", int(get<1>(first)));
        for (int e = 0; e < size<0>(part); ++e) {
          const auto rc = part(e, i, j);
          EXPECT(get<0>(rc) == get<0>(first) && get<1>(rc) == get<1>(first) + e, "copy not contiguous");
          EXPECT(covered.insert({get<0>(rc), get<1>(rc)}).second, "element copied twice");
        }
      }
  }
  EXPECT(covered.size() == size_t(kBlockN) * D, "copies cover %zu elements", covered.size());
}

int main() {
  check<ConfigF16<64>>("fp16 d=64");
  check<ConfigF16<128>>("fp16 d=128");
  check<ConfigBF16<64>>("bf16 d=64");
  check<ConfigBF16<128>>("bf16 d=128");
  std::printf("%d violations\n", errors);
  return errors == 0 ? 0 : 1;
}
