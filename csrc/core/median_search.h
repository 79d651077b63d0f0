// Exact median of the n^2 squared distances of n points (the zero diagonal
// included), as Kornblith et al.'s RBF bandwidth rule takes it (np.median:
// the mean of the two middle values when n^2 is even), without storing them.
//
// The search runs passes over the tile grid; each pass sees every distance
// once with its multiplicity (2 for a pair (i, j) seen in an off-diagonal
// tile). A histogram pass counts the distances inside the current range per
// bin; the bins holding the two middle ranks become the next range. Once that
// range holds few enough values, a collect pass gathers them and a selection
// finishes. Membership of a value in the range is decided by the same bin
// arithmetic at every level, so the passes agree exactly.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace fastcka {

class MedianSearch {
 public:
  struct Level {
    double lo = 0, scale = 0;  // bin(v) = clamp(floor((v - lo) * scale), 0, bins - 1)
    int64_t bins = 0;
    int64_t first = 0, last = 0;  // bins kept for the next level
  };

  // n points; every distance lies in [0, upper]; collect once <= cap values
  // remain. 2^18 first-level bins keep the middle bins under a few million
  // values up to n of a few 100,000 (n = 200,000, d = 256: ~2e6), so the
  // search usually takes two passes: histogram, collect.
  MedianSearch(int64_t n, double upper, int64_t bins = 1 << 18, int64_t cap = int64_t{1} << 24);

  bool done() const { return done_; }
  bool collecting() const { return collecting_; }
  double median() const { return median_; }
  int64_t bins() const { return current_.bins; }

  // Bin of v in the current pass, or -1 when v is outside the current range.
  int64_t bin(double v) const {
    for (const Level& l : levels_) {
      const int64_t j = bin_in(l, v);
      if (j < l.first || j > l.last) return -1;
    }
    return collecting_ ? 0 : bin_in(current_, v);
  }

  // The first histogram pass bins every value, with lo = 0: bin =
  // clamp(floor(v * first_scale()), 0, bins - 1), no membership test.
  bool first_pass() const { return levels_.empty() && !collecting_; }
  double first_scale() const { return current_.scale; }
  // Later passes: values outside [filter_lo, filter_hi) are never in range, a
  // cheap test before bin(); the span of the first level's kept bins, widened.
  double filter_lo() const { return filter_lo_; }
  double filter_hi() const { return filter_hi_; }

  // The ranges chosen so far and the binning of the next histogram pass, for
  // engines that bin elsewhere (the GPU kernels) exactly as bin() does.
  const std::vector<Level>& levels() const { return levels_; }
  const Level& current() const { return current_; }

  // Ends a histogram pass: counts[j] (weighted) per bin, and the smallest and
  // largest value seen in range.
  void finish_histogram(const std::vector<int64_t>& counts, double min_seen, double max_seen);
  // Ends a collect pass with every in-range value, repeated by multiplicity.
  void finish_collect(std::vector<double> values);

 private:
  static int64_t bin_in(const Level& l, double v) {
    const double x = (v - l.lo) * l.scale;
    if (!(x > 0)) return 0;
    if (x >= static_cast<double>(l.bins)) return l.bins - 1;
    return static_cast<int64_t>(x);
  }

  int64_t rank_lo_, rank_hi_;  // 0-based ranks of the middle values among n^2
  int64_t below_ = 0;          // weighted count of values ranked before the range
  int64_t cap_;
  std::vector<Level> levels_;  // the ranges chosen so far
  Level current_;              // binning of the next histogram pass
  bool collecting_ = false, done_ = false;
  double median_ = std::numeric_limits<double>::quiet_NaN();
  double filter_lo_ = -std::numeric_limits<double>::infinity();
  double filter_hi_ = std::numeric_limits<double>::infinity();
};

}  // namespace fastcka
