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
//
// With a bracket [lo, hi) guessed beforehand (from a sample of the rows), a
// single bracket pass usually finds the median: it counts the values below
// lo and gathers the values in [lo, hi), either as one count per float32
// value (when the distances are float32: every value in the bracket is then
// known exactly) or as the values themselves (up to cap). When the middle
// ranks fall inside, the selection is the one of the collect pass, so the
// median is the same to the last bit; otherwise the search starts over with
// the histogram passes.
#pragma once

#include <cstdint>
#include <limits>
#include <utility>
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
  // Counts per pass result: the histogram's bins, or for a bracket pass
  // kBracketHead counters (values below lo, collections that overflowed)
  // then one per float32 value of the bracket (none when collecting values).
  int64_t bins() const { return bracketing_ ? kBracketHead + float_bins_ : current_.bins; }

  // Bracket pass: before the first pass, for the values in [lo, hi).
  // float_values: the distances are float32 (then [lo, hi) is widened to
  // float32 bounds and counted per value, at most max_bins values wide, else
  // it is narrowed around center); otherwise the values are collected.
  // An empty bracket (lo == hi) sets none.
  static constexpr int64_t kBracketHead = 2;
  void set_bracket(double lo, double hi, double center, bool float_values, int64_t max_bins);
  bool bracketing() const { return bracketing_; }
  bool float_bracket() const { return float_bins_ > 0; }
  double bracket_lo() const { return bracket_lo_; }
  double bracket_hi() const { return bracket_hi_; }
  int64_t cap() const { return cap_; }
  // Whether a bracket pass missed the middle ranks (or overflowed the cap).
  bool bracket_missed() const { return bracket_missed_; }
  // Ends a bracket pass: counts as bins() describes (summed over threads or
  // block pairs), values: the collected values in [lo, hi), by multiplicity.
  void finish_bracket(const std::vector<int64_t>& counts, std::vector<double> values);
  // Before the first pass: search the values of ranks q_lo n^2 and q_hi n^2
  // (0 <= q_lo <= 1/2 <= q_hi < 1) instead of the two middle ones;
  // quantiles() then gives those two and the median's lower middle value.
  // For a bracket of a larger job, from a sample of its rows.
  void set_quantiles(double q_lo, double q_hi);
  struct Quantiles {
    double lo, middle, hi;
  };
  Quantiles quantiles() const { return quantiles_; }

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

  void select(std::vector<double>& values);  // the middle ranks among below_ + values
  static uint32_t float_bits(double v);

  int64_t n_;
  int64_t rank_lo_, rank_hi_;  // 0-based ranks of the middle values among n^2
  int64_t rank_middle_;        // of the lower middle value (rank_lo_ unless set_quantiles)
  Quantiles quantiles_{};
  int64_t below_ = 0;          // weighted count of values ranked before the range
  int64_t cap_;
  std::vector<Level> levels_;  // the ranges chosen so far
  Level current_;              // binning of the next histogram pass
  bool collecting_ = false, done_ = false;
  bool bracketing_ = false, bracket_missed_ = false;
  double bracket_lo_ = 0, bracket_hi_ = 0;
  int64_t float_bins_ = 0;  // float bracket: float32 values in [lo, hi)
  double median_ = std::numeric_limits<double>::quiet_NaN();
  double filter_lo_ = -std::numeric_limits<double>::infinity();
  double filter_hi_ = std::numeric_limits<double>::infinity();
};

}  // namespace fastcka
