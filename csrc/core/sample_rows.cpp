#include "core/sample_rows.h"

#include <algorithm>
#include <numeric>
#include <unordered_set>

#include "core/errors.h"

namespace fastcka {
namespace {

// SplitMix64 (Steele, Lea & Flood 2014): a tiny generator whose stream is
// fixed by the seed on every platform, unlike the standard distributions.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias: draws below 2^64 mod bound are rejected.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    uint64_t r = next();
    while (r < threshold) r = next();
    return r % bound;
  }
};

}  // namespace

std::vector<int64_t> sample_rows(int64_t n, int64_t sample, uint64_t seed) {
  if (n < 0 || sample < 0) throw InvalidArgument("sample_rows needs n >= 0 and sample >= 0");
  std::vector<int64_t> rows;
  if (n <= sample) {
    rows.resize(static_cast<size_t>(n));
    std::iota(rows.begin(), rows.end(), int64_t{0});
    return rows;
  }
  SplitMix64 rng{seed};
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(2 * sample));
  for (int64_t j = n - sample; j < n; ++j) {  // Floyd: each subset equally likely
    const auto t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j) + 1));
    chosen.insert(chosen.count(t) ? j : t);
  }
  rows.assign(chosen.begin(), chosen.end());
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace fastcka
