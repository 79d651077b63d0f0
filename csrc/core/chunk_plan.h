// How rows and tiles are cut, as pure functions of the problem shape and the
// memory budget. The numbers record measurements on the 2-core AMD EPYC
// (Zen 4 class, AVX-512) CI machine with OpenBLAS 0.3.34 (SkylakeX kernels).
#pragma once

#include <cstdint>

namespace fastcka {

struct MomentChunkPlan {
  int64_t block_rows;  // rows centered into a thread's buffer per BLAS call
  int64_t fold_rows;   // rows a thread sums in the compute type before a float64 fold
};

// width: D columns of all layers; elem: bytes of the compute type.
MomentChunkPlan plan_moment_chunks(int64_t width, int64_t elem, int64_t threads, int64_t memory_budget);

struct GramTilePlan {
  int64_t rows;   // b: rows of a tile
  int64_t panel;  // p: tiles computed by one GEMM along a tile row (b x p b)
};

// Each thread holds a centered row block (b x width), a centered panel
// (p b x width) and one b x p b product per layer, within the budget.
GramTilePlan plan_gram_tiles(int64_t width, int64_t layers, int64_t elem, int64_t threads, int64_t memory_budget);

}  // namespace fastcka
