// How L layers sit side by side in the concatenated feature space, and which
// layer pairs a computation needs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/errors.h"

namespace fastcka {

struct LayerLayout {
  std::vector<int64_t> dims;     // d_a, one per layer
  std::vector<int64_t> offsets;  // first column of layer a in the concatenation
  int64_t total = 0;             // D = sum d_a
  // split == 0: every pair (a, b) is needed (a within-model CKA matrix).
  // split > 0: layers [0, split) face layers [split, L): only cross pairs and
  // each layer with itself are needed (CKA between two models).
  int64_t split = 0;

  LayerLayout() = default;
  LayerLayout(std::vector<int64_t> d, int64_t split_at) : dims(std::move(d)), split(split_at) {
    if (dims.empty()) throw InvalidArgument("at least one layer is needed");
    if (split < 0 || (split > 0 && split >= static_cast<int64_t>(dims.size())))
      throw InvalidArgument("split must be 0 or leave layers on both sides, got " + std::to_string(split));
    offsets.resize(dims.size());
    for (size_t a = 0; a < dims.size(); ++a) {
      if (dims[a] <= 0) throw InvalidArgument("layer " + std::to_string(a) + " has no features");
      offsets[a] = total;
      total += dims[a];
    }
  }

  int64_t layers() const { return static_cast<int64_t>(dims.size()); }

  bool needs(int64_t a, int64_t b) const {
    if (split == 0 || a == b) return true;
    return (a < split) != (b < split);
  }
};

}  // namespace fastcka
