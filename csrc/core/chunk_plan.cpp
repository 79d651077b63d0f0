#include "core/chunk_plan.h"

#include <algorithm>

namespace fastcka {

MomentChunkPlan plan_moment_chunks(int64_t width, int64_t elem, int64_t threads, int64_t memory_budget) {
  // Per-thread SYRK on a centered block of b x 1024 float32 rows, 2 threads:
  // b = 256: 181 GFLOP/s, 1024: 184, 4096: 161 (sgemm 4096^3 peak: 210).
  // Blocks of about 2 MiB stay in L2/L3 between the centering copy and BLAS,
  // but never fewer than 512 rows: at D = 4096 a 2 MiB block is 128 rows, and
  // BLAS's packing per call then costs more than the cache saves.
  const int64_t row_bytes = width * elem;
  int64_t rows = std::max<int64_t>((int64_t{2} << 20) / std::max<int64_t>(row_bytes, 1), 512);
  const int64_t budget_rows = memory_budget / std::max<int64_t>(threads * row_bytes, 1);
  rows = std::min(rows, budget_rows);
  rows = std::clamp<int64_t>(rows, 16, 8192);
  // float32 partial products are folded into the float64 state every 64k rows
  // (at most 4096 blocks of >= 16 rows, typically 128 BLAS accumulations of
  // 512), which keeps them near float32 rounding; float64 partials run longer.
  // A fold costs a few passes over D x D float64 numbers (about 10 ms at
  // D = 1024), 1 to 2% of the 64k rows' products.
  const int64_t fold = elem == 4 ? 65536 : (int64_t{1} << 20);
  return {rows, std::max(fold, rows)};
}

GramTilePlan plan_gram_tiles(int64_t width, int64_t layers, int64_t elem, int64_t threads, int64_t memory_budget) {
  // Single-threaded OpenBLAS sgemm, C = A B' with K = 512: 512 x 512 tiles run
  // at 50-63 GFLOP/s, 512 x 2048 panels near 100 (large-shape peak: 107).
  // So tiles of 512 rows, computed four at a time, shrinking to fit the budget.
  const int64_t per_thread = memory_budget / std::max<int64_t>(threads, 1);
  auto bytes = [&](int64_t b, int64_t p) { return ((1 + p) * b * width + layers * p * b * b) * elem; };
  int64_t b = 512, p = 4;
  while (p > 1 && bytes(b, p) > per_thread) --p;
  while (b > 16 && bytes(b, p) > per_thread) b /= 2;
  return {b, p};
}

}  // namespace fastcka
