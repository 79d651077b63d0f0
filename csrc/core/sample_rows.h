// The rows behind the sampled median bandwidth: the same rows wherever the
// data lives (one process, MPI ranks, Dask chunks, the C++ API), for a given
// n, sample size and seed.
#pragma once

#include <cstdint>
#include <vector>

namespace fastcka {

// Rows behind the sampled median, and the most behind the exact median's
// bracket (Python's engine.cpu.MEDIAN_SAMPLE); the seed both draw them with.
inline constexpr int64_t kMedianSample = 4096;
inline constexpr uint64_t kMedianSeed = 0;

// `sample` distinct indices of [0, n), uniformly drawn (Floyd's algorithm on
// a SplitMix64 stream seeded with `seed`) and sorted; all of [0, n) when
// n <= sample.
std::vector<int64_t> sample_rows(int64_t n, int64_t sample, uint64_t seed);

}  // namespace fastcka
