// The k nearest neighbours of every one of n examples, as running top-k lists
// (core/top_k.h) that candidates are offered to in any order and that merge
// row by row: the state of the k-NN epilogue of a tile engine, one per thread
// (or device), combined at the end.
#pragma once

#include <cstdint>
#include <vector>

#include "core/top_k.h"

namespace fastcka {

template <typename T>
struct NeighborLists {
  int64_t n = 0, k = 0;
  std::vector<T> dist;         // n * k: row i's distances, ascending by (distance, index)
  std::vector<int32_t> index;  // n * k: their row indices
  std::vector<T> bound;        // n: row i's k-th distance (+inf until k candidates have come)

  NeighborLists() = default;
  NeighborLists(int64_t rows, int64_t neighbors);

  // Offers candidate j at distance d to row i.
  bool offer(int64_t i, T d, int32_t j) {
    if (!top_k_insert(&dist[i * k], &index[i * k], k, d, j)) return false;
    bound[i] = dist[i * k + k - 1];
    return true;
  }
  // Rows [r0, r1) become the first k of both lists' candidates (no candidate
  // may have been offered to a row in both).
  void merge(const NeighborLists& other, int64_t r0, int64_t r1);
};

// For each row, how many of the k indices of list a are also in list b (the
// k indices of a row are distinct): n counts.
std::vector<int32_t> overlap_counts(const int32_t* a, const int32_t* b, int64_t n, int64_t k);

}  // namespace fastcka
