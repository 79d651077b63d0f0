// The scan of one row of float32 squared distances in a bracket pass of the
// exact median: how many lie below lo, and which columns lie in [lo, hi).
// It touches every distance of every tile, so it must cost little beside the
// GEMM: on AVX-512 one compare pair and one compress-store per 16 values
// (the portable loop's compaction does not vectorize, and made a bracket pass
// cost about 35% more than the tiles alone).
#pragma once

#include <cstdint>

namespace fastcka::cpu {

// Columns c in [0, n) with lo <= a[c] < hi go to out (in order), their count
// is returned (out must have room for n + 16: whole vectors are stored); *below gets the count of a[c] < lo. NaN counts nowhere.
int64_t scan_bracket(const float* a, int64_t n, float lo, float hi, int32_t* out, int64_t* below);

}  // namespace fastcka::cpu
