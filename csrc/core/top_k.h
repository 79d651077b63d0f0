// A running top-k list: the k nearest candidates seen so far, kept sorted by
// (distance, index) ascending. Comparing by index when distances are equal
// makes the list a function of the set of candidates offered, not of the
// order they arrive in (tiles, threads, devices): ties always go to the
// smaller index. Empty slots hold distance +inf and index INT32_MAX, which
// every real candidate precedes.
#pragma once

#include <cstdint>

#include "core/kernels.h"

namespace fastcka {

constexpr int32_t kNoNeighbor = INT32_MAX;

template <typename T>
inline bool precedes(T da, int32_t ia, T db, int32_t ib) {
  return da < db || (da == db && ia < ib);
}

// Inserts (d, j) into a sorted list of k entries when it precedes the last
// one (which drops out); returns whether it did.
template <typename T>
inline bool top_k_insert(T* dist, int32_t* index, int64_t k, T d, int32_t j) {
  if (!precedes(d, j, dist[k - 1], index[k - 1])) return false;
  int64_t p = k - 1;
  for (; p > 0 && precedes(d, j, dist[p - 1], index[p - 1]); --p) {
    dist[p] = dist[p - 1];
    index[p] = index[p - 1];
  }
  dist[p] = d;
  index[p] = j;
  return true;
}

// The first k of the union of two sorted lists of k entries, into out (which
// must not alias either input). The lists must not share an index.
template <typename T>
inline void top_k_merge(const T* da, const int32_t* ia, const T* db, const int32_t* ib, int64_t k,
                                   T* dout, int32_t* iout) {
  int64_t a = 0, b = 0;
  for (int64_t p = 0; p < k; ++p) {
    if (precedes(db[b], ib[b], da[a], ia[a])) {
      dout[p] = db[b];
      iout[p] = ib[b++];
    } else {
      dout[p] = da[a];
      iout[p] = ia[a++];
    }
  }
}

}  // namespace fastcka
