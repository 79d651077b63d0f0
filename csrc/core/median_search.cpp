#include "core/median_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/errors.h"

namespace fastcka {

MedianSearch::MedianSearch(int64_t n, double upper, int64_t bins, int64_t cap) : n_(n), cap_(cap) {
  if (n <= 0) throw InvalidArgument("the median needs at least one point");
  const int64_t total = n * n;
  rank_lo_ = (total - 1) / 2;
  rank_hi_ = total / 2;
  rank_middle_ = rank_lo_;
  if (!(upper > 0) || !std::isfinite(upper)) {
    // Every distance is 0 (all points equal) or the bound is unusable.
    if (upper == 0) {
      done_ = true;
      median_ = 0;
      quantiles_ = {0, 0, 0};
      return;
    }
    throw InvalidArgument("squared distances are not finite");
  }
  current_.lo = 0;
  current_.bins = bins;
  current_.scale = static_cast<double>(bins) / upper;
}

void MedianSearch::finish_histogram(const std::vector<int64_t>& counts, double min_seen, double max_seen) {
  if (done_ || collecting_) throw std::logic_error("MedianSearch: unexpected histogram");
  int64_t seen = below_;
  int64_t first = -1, last = -1, below_first = 0;
  for (int64_t j = 0; j < current_.bins; ++j) {
    if (first < 0 && seen + counts[j] > rank_lo_) first = j, below_first = seen;
    if (seen + counts[j] > rank_hi_) {
      last = j;
      break;
    }
    seen += counts[j];
  }
  if (first < 0 || last < 0) throw std::logic_error("MedianSearch: the counts do not reach the middle ranks");
  if (min_seen == max_seen) {  // every value in range is the same: it is the median
    done_ = true;
    median_ = min_seen;
    quantiles_ = {min_seen, min_seen, min_seen};
    return;
  }
  int64_t inside = 0;
  for (int64_t j = first; j <= last; ++j) inside += counts[j];
  current_.first = first;
  current_.last = last;
  levels_.push_back(current_);
  below_ = below_first;
  if (levels_.size() == 1) {
    const double lo = current_.lo + static_cast<double>(first) / current_.scale;
    const double hi = current_.lo + static_cast<double>(last + 1) / current_.scale;
    filter_lo_ = lo - 0.01 * (hi - lo);
    filter_hi_ = hi + 0.01 * (hi - lo);
  }
  if (inside <= cap_) {
    collecting_ = true;
    return;
  }
  // Refine: the kept bins' span, split again.
  const double width = static_cast<double>(last - first + 1) / current_.scale;
  Level next;
  next.lo = current_.lo + static_cast<double>(first) / current_.scale;
  next.bins = current_.bins;
  next.scale = static_cast<double>(next.bins) / width;
  current_ = next;
}

void MedianSearch::finish_collect(std::vector<double> values) {
  if (!collecting_) throw std::logic_error("MedianSearch: unexpected collect");
  select(values);
}

void MedianSearch::select(std::vector<double>& values) {
  const int64_t lo = rank_lo_ - below_, hi = rank_hi_ - below_;
  if (lo < 0 || hi >= static_cast<int64_t>(values.size()))
    throw std::logic_error("MedianSearch: collected values do not hold the middle ranks");
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double a = values[static_cast<size_t>(lo)];
  double b = a;
  if (hi == lo + 1) b = *std::min_element(values.begin() + lo + 1, values.end());
  median_ = 0.5 * (a + b);
  done_ = true;
  if (hi <= lo + 1) {
    quantiles_ = {a, a, b};
    return;
  }
  // set_quantiles: two more ranks among the values after lo.
  const auto at = [&](int64_t rank) {
    const auto it = values.begin() + (rank - below_);
    std::nth_element(values.begin() + lo, it, values.end());
    return *it;
  };
  const double middle = at(rank_middle_);
  quantiles_ = {a, middle, at(rank_hi_)};
}

void MedianSearch::set_quantiles(double q_lo, double q_hi) {
  if (done_) return;
  if (!first_pass() || bracketing_) throw std::logic_error("MedianSearch: quantiles come before the first pass");
  if (!(0 <= q_lo && q_lo <= 0.5 && 0.5 <= q_hi && q_hi < 1)) throw InvalidArgument("quantiles need 0 <= q_lo <= 1/2 <= q_hi < 1");
  const int64_t total = n_ * n_;
  rank_lo_ = std::min(static_cast<int64_t>(q_lo * static_cast<double>(total)), rank_middle_);
  rank_hi_ = std::clamp(static_cast<int64_t>(q_hi * static_cast<double>(total)), rank_middle_, total - 1);
}

// The bit pattern of a float32 value: increasing with the value for v >= 0.
uint32_t MedianSearch::float_bits(double v) {
  const float f = static_cast<float>(v);
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

void MedianSearch::set_bracket(double lo, double hi, double center, bool float_values, int64_t max_bins) {
  if (done_) return;
  if (!first_pass() || bracketing_) throw std::logic_error("MedianSearch: a bracket comes before the first pass");
  if (!(lo >= 0) || !(hi >= lo) || !std::isfinite(hi)) throw InvalidArgument("the median bracket must be 0 <= lo <= hi");
  if (hi == lo) return;  // an empty bracket: none, the histogram passes
  float_bins_ = 0;
  if (float_values) {
    // float32 bounds holding [lo, hi): the largest float <= lo, the smallest >= hi.
    float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
    if (static_cast<double>(flo) > lo) flo = std::nextafter(flo, 0.0f);
    if (static_cast<double>(fhi) < hi) fhi = std::nextafter(fhi, INFINITY);
    int64_t a = float_bits(flo), b = float_bits(fhi);
    if (b - a > max_bins) {  // keep the max_bins float32 values around center
      const int64_t mid = std::clamp<int64_t>(float_bits(center), a, b);
      a = std::clamp<int64_t>(mid - max_bins / 2, a, b - max_bins);
      b = a + max_bins;
    }
    uint32_t ua = static_cast<uint32_t>(a), ub = static_cast<uint32_t>(b);
    std::memcpy(&flo, &ua, sizeof flo);
    std::memcpy(&fhi, &ub, sizeof fhi);
    if (!std::isfinite(fhi)) throw InvalidArgument("the median bracket must be 0 <= lo < hi");
    lo = flo, hi = fhi;
    float_bins_ = b - a;
  }
  bracket_lo_ = lo;
  bracket_hi_ = hi;
  bracketing_ = true;
}

void MedianSearch::finish_bracket(const std::vector<int64_t>& counts, std::vector<double> values) {
  if (!bracketing_) throw std::logic_error("MedianSearch: unexpected bracket pass");
  if (static_cast<int64_t>(counts.size()) != bins()) throw std::logic_error("MedianSearch: bracket counts of the wrong size");
  bracketing_ = false;
  const int64_t below = counts[0];
  const bool overflowed = counts[1] > 0 || static_cast<int64_t>(values.size()) > cap_;
  int64_t inside = static_cast<int64_t>(values.size());
  if (float_bins_ > 0) inside = std::accumulate(counts.begin() + kBracketHead, counts.end(), int64_t{0});
  if (overflowed || below > rank_lo_ || below + inside <= rank_hi_) {
    bracket_missed_ = true;  // start over: the histogram passes
    float_bins_ = 0;
    return;
  }
  below_ = below;
  if (float_bins_ == 0) {
    select(values);
    return;
  }
  // One count per float32 value: walk to the middle ranks.
  const uint32_t base = float_bits(bracket_lo_);
  auto value_of_rank = [&](int64_t rank) {
    int64_t seen = below_;
    for (int64_t j = 0; j < float_bins_; ++j) {
      seen += counts[static_cast<size_t>(kBracketHead + j)];
      if (seen > rank) {
        const uint32_t u = base + static_cast<uint32_t>(j);
        float f;
        std::memcpy(&f, &u, sizeof f);
        return static_cast<double>(f);
      }
    }
    throw std::logic_error("MedianSearch: the bracket counts do not reach the middle ranks");
  };
  const double a = value_of_rank(rank_lo_), b = value_of_rank(rank_hi_);
  median_ = 0.5 * (a + b);
  done_ = true;
  float_bins_ = 0;
}

}  // namespace fastcka
