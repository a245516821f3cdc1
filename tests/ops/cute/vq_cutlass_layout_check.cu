// Host-side check of the layout facts the CuTe VQ search (csrc/vq/vq_cutlass.cu) relies on, for each
// configuration it compiles. Built and run by tests/test_cute_layouts.py; needs no GPU (CuTe's
// layout algebra runs on the host). Exit status 0 = every fact holds; each violation is printed.
#include <cstdio>
#include <set>
#include <utility>

#include "vq/vq_cutlass_config.cuh"

using namespace cute;
using namespace fact_fast::vq_cutlass;

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
void check_accumulators(const char* name) {
  using L = Layouts<Cfg>;
  typename Cfg::TiledMma mma;
  std::set<std::pair<int, int>> owned;
  int owners_per_row[kRowsPerTile] = {};
  for (int t = 0; t < kThreads; ++t) {
    Tensor tCc = mma.get_slice(t).partition_C(make_identity_tensor(Shape<Int<kRowsPerTile>, Int<kCodesPerTile>>{}));
    EXPECT(size<1>(tCc) == L::kMmaM && size<2>(tCc) == L::kMmaN, "fragment shape");
    for (int mm = 0; mm < L::kMmaM; ++mm)
      for (int h = 0; h < 2; ++h) {
        // The fold's row slot 2·mm + h holds one row: values 2h and 2h + 1 of every MMA_N step.
        const int row = get<0>(tCc(2 * h, mm, 0));
        ++owners_per_row[row];
        int last_col = -1;
        for (int nn = 0; nn < L::kMmaN; ++nn)
          for (int c = 0; c < 2; ++c) {
            const auto rc = tCc(2 * h + c, mm, nn);
            const int r = get<0>(rc), col = get<1>(rc);
            EXPECT(r == row, "thread %d slot %d: rows %d and %d", t, 2 * mm + h, row, r);
            // Ties keep the lowest index with a plain `<` only if columns come in increasing order.
            EXPECT(col > last_col, "thread %d row %d: column %d after %d", t, row, col, last_col);
            // The fold reads ‖p‖² for (nn, c) from value c of MMA_M step 0.
            EXPECT(get<1>(tCc(c, 0, nn)) == col, "thread %d: ‖p‖² preload column", t);
            EXPECT(owned.insert({r, col}).second, "cell (%d, %d) owned twice", r, col);
            last_col = col;
          }
      }
  }
  EXPECT(owned.size() == size_t(kRowsPerTile) * kCodesPerTile, "%zu of the tile's cells owned", owned.size());
  for (int r = 0; r < kRowsPerTile; ++r)
    EXPECT(owners_per_row[r] == L::kSlots, "row %d has %d owners, the merge buffer holds %d", r, owners_per_row[r],
           L::kSlots);
}

// Each 16-byte copy reads consecutive columns starting at a multiple of its width, so with d a
// multiple of that width a copy is wholly inside or wholly past the end of a row (its predicate is
// the first element's); and the copies cover the tile once.
template <class Cfg, int kRows>
void check_copies(const char* name) {
  typename Cfg::GmemCopy copy;
  constexpr int width = 16 / sizeof(typename Cfg::Element);
  std::set<std::pair<int, int>> covered;
  for (int t = 0; t < kThreads; ++t) {
    Tensor part = copy.get_slice(t).partition_S(make_identity_tensor(Shape<Int<kRows>, Int<Cfg::kDepth>>{}));
    EXPECT(size<0>(part) == width, "a copy moves %d elements, expected %d", int(size<0>(part)), width);
    for (int i = 0; i < size<1>(part); ++i)
      for (int j = 0; j < size<2>(part); ++j) {
        const auto first = part(0, i, j);
        EXPECT(get<1>(first) % width == 0, "thread %d: a copy starts at column %d", t, int(get<1>(first)));
        for (int v = 0; v < width; ++v) {
          const auto rc = part(v, i, j);
          EXPECT(get<0>(rc) == get<0>(first) && get<1>(rc) == get<1>(first) + v, "thread %d: copy not contiguous", t);
          EXPECT(covered.insert({get<0>(rc), get<1>(rc)}).second, "element copied twice");
        }
      }
  }
  EXPECT(covered.size() == size_t(kRows) * Cfg::kDepth, "copies cover %zu elements", covered.size());
}

template <class Cfg>
void check(const char* name) {
  check_accumulators<Cfg>(name);
  check_copies<Cfg, kRowsPerTile>(name);
  check_copies<Cfg, kCodesPerTile>(name);
}

int main() {
  check<ConfigF16>("fp16");
  check<ConfigBF16>("bf16");
  check<ConfigTf32>("tf32");
  std::printf("%d violations\n", errors);
  return errors == 0 ? 0 : 1;
}
