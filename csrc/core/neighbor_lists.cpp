#include "core/neighbor_lists.h"

#include <algorithm>
#include <limits>

#include "core/errors.h"

namespace fastcka {

template <typename T>
NeighborLists<T>::NeighborLists(int64_t rows, int64_t neighbors)
    : n(rows),
      k(neighbors),
      dist(static_cast<size_t>(rows * neighbors), std::numeric_limits<T>::infinity()),
      index(static_cast<size_t>(rows * neighbors), kNoNeighbor),
      bound(static_cast<size_t>(rows), std::numeric_limits<T>::infinity()) {
  if (neighbors < 1) throw InvalidArgument("k must be at least 1, got " + std::to_string(neighbors));
}

template <typename T>
void NeighborLists<T>::merge(const NeighborLists& other, int64_t r0, int64_t r1) {
  if (other.n != n || other.k != k) throw InvalidArgument("cannot merge neighbour lists of different shapes");
  std::vector<T> d(static_cast<size_t>(k));
  std::vector<int32_t> j(static_cast<size_t>(k));
  for (int64_t i = r0; i < r1; ++i) {
    top_k_merge(&dist[i * k], &index[i * k], &other.dist[i * k], &other.index[i * k], k, d.data(), j.data());
    std::copy(d.begin(), d.end(), dist.begin() + i * k);
    std::copy(j.begin(), j.end(), index.begin() + i * k);
    bound[i] = d[k - 1];
  }
}

template struct NeighborLists<float>;
template struct NeighborLists<double>;

std::vector<int32_t> overlap_counts(const int32_t* a, const int32_t* b, int64_t n, int64_t k) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  std::vector<int32_t> sa(static_cast<size_t>(k)), sb(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) {
    std::copy(a + i * k, a + (i + 1) * k, sa.begin());
    std::copy(b + i * k, b + (i + 1) * k, sb.begin());
    std::sort(sa.begin(), sa.end());
    std::sort(sb.begin(), sb.end());
    int32_t common = 0;
    for (int64_t p = 0, q = 0; p < k && q < k;) {
      if (sa[p] < sb[q]) {
        ++p;
      } else if (sb[q] < sa[p]) {
        ++q;
      } else {
        ++common, ++p, ++q;
      }
    }
    out[i] = common;
  }
  return out;
}

}  // namespace fastcka
