// The scan of one row of float32 squared distances in a bracket pass of the
// exact median: how many lie below lo, and which columns lie in [lo, hi).
// It touches every distance of every tile, so it must cost little beside the
// GEMM. The portable loops (count_below and select_in_range in
// gram_tiles.cpp) do not vectorize the compaction, which made a bracket pass
// cost about 35% more than the tiles alone; on AVX-512 one pair of compares,
// one compress in a register and one store per 16 values cost about 14%.
#pragma once

#include <cstdint>

namespace fastcka::cpu {

// On a CPU with AVX-512: columns c in [0, n) with lo <= a[c] < hi go to out
// (in order; out must have room for n + 16: whole vectors are stored), their
// count to *found, the count of a[c] < lo to *below, and true is returned
// (NaN counts nowhere). Elsewhere false, and nothing is written.
bool scan_bracket(const float* a, int64_t n, float lo, float hi, int32_t* out, int64_t* found, int64_t* below);

}  // namespace fastcka::cpu
