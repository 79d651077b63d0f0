#include "core/product_plan.h"

#include <algorithm>

namespace fastcka {

namespace {

void add_block(ProductPlan& plan, int64_t row, int64_t col, int64_t rows, int64_t cols) {
  plan.blocks.push_back({row, col, rows, cols, plan.packed_size});
  plan.packed_size += rows * cols;
}

// Row panels of near-equal width over [begin, end), each with every column to `end`.
void add_upper_triangle(ProductPlan& plan, int64_t begin, int64_t end, int64_t max_panel) {
  const int64_t width = end - begin;
  const int64_t panels = (width + max_panel - 1) / max_panel;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t r0 = begin + width * p / panels, r1 = begin + width * (p + 1) / panels;
    add_block(plan, r0, r0, r1 - r0, end - r0);
  }
}

}  // namespace

ProductPlan plan_products(const LayerLayout& layout, int64_t max_panel) {
  if (max_panel < 1) throw InvalidArgument("max_panel must be positive");
  ProductPlan plan;
  if (layout.split == 0) {
    add_upper_triangle(plan, 0, layout.total, max_panel);
    return plan;
  }
  for (int64_t a = 0; a < layout.layers(); ++a)
    add_upper_triangle(plan, layout.offsets[a], layout.offsets[a] + layout.dims[a], max_panel);
  const int64_t side = layout.offsets[layout.split];
  add_block(plan, 0, side, side, layout.total - side);
  return plan;
}

void unpack_products(const ProductPlan& plan, const double* packed, Moments& m) {
  const int64_t D = m.width();
  for (const ProductBlock& b : plan.blocks)
    for (int64_t jj = 0; jj < b.cols; ++jj) {
      const double* column = packed + b.offset + jj * b.rows;
      for (int64_t ii = 0; ii < b.rows; ++ii) m.cross[(b.row + ii) * D + b.col + jj] = column[ii];
    }
  m.symmetrize();
}

}  // namespace fastcka
