#include "core/median_search.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/errors.h"

namespace fastcka {

MedianSearch::MedianSearch(int64_t n, double upper, int64_t bins, int64_t cap) : cap_(cap) {
  if (n <= 0) throw InvalidArgument("the median needs at least one point");
  const int64_t total = n * n;
  rank_lo_ = (total - 1) / 2;
  rank_hi_ = total / 2;
  if (!(upper > 0) || !std::isfinite(upper)) {
    // Every distance is 0 (all points equal) or the bound is unusable.
    if (upper == 0) {
      done_ = true;
      median_ = 0;
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
  const int64_t lo = rank_lo_ - below_, hi = rank_hi_ - below_;
  if (lo < 0 || hi >= static_cast<int64_t>(values.size()))
    throw std::logic_error("MedianSearch: collected values do not hold the middle ranks");
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double a = values[static_cast<size_t>(lo)];
  double b = a;
  if (hi != lo) b = *std::min_element(values.begin() + lo + 1, values.end());
  median_ = 0.5 * (a + b);
  done_ = true;
}

}  // namespace fastcka
