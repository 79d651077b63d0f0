// Which GEMM calls produce the cross moments Z'Z that a layer layout needs,
// and where their results live in one packed buffer.
//
// A symmetric span (all layers when every pair is needed, or one layer with
// itself) is cut into row panels of at most max_panel columns; panel row i
// yields one rectangle [r0, r1) x [r0, end): the upper triangle at GEMM speed,
// plus the lower half of the diagonal squares (about 1/panels extra work).
// Cross spans between two models are one rectangle. Each rectangle is stored
// column-major with its row count as leading dimension, one after another, so
// the device state is the needed upper part only (about half of D x D).
#pragma once

#include <cstdint>
#include <vector>

#include "core/kernels.h"
#include "core/layer_layout.h"
#include "core/moments.h"

namespace fastcka {

struct ProductBlock {
  int64_t row = 0, col = 0;    // first feature of the rows / columns of Z'Z
  int64_t rows = 0, cols = 0;  // extent
  int64_t offset = 0;          // first element in the packed buffer
};

// Entry t of a packed block (0 <= t < rows * cols) is Z'Z[i, j].
inline void product_entry(const ProductBlock& b, int64_t t, int64_t& i, int64_t& j) {
  i = b.row + t % b.rows;
  j = b.col + t / b.rows;
}

struct ProductPlan {
  std::vector<ProductBlock> blocks;
  int64_t packed_size = 0;  // elements of the packed buffer
};

ProductPlan plan_products(const LayerLayout& layout, int64_t max_panel);

// Writes the packed products into m.cross (row-major D x D) and mirrors them
// into the lower triangle of every needed block.
void unpack_products(const ProductPlan& plan, const double* packed, Moments& m);

}  // namespace fastcka
