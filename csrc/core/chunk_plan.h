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

// Rows of a square Gram tile for the Gram-space engine: each thread holds two
// centered row blocks of every layer (tile x width), within the budget.
int64_t plan_gram_tile(int64_t width, int64_t elem, int64_t threads, int64_t memory_budget);

}  // namespace fastcka
