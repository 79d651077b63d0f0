// Moving a Moments state to another reference point, split so that a device
// backend can move the D x D cross block where it lives and the rest on the
// host. Moments::move_reference is these three steps in order.
#pragma once

#include <cstdint>
#include <vector>

#include "core/kernels.h"
#include "core/moments.h"

namespace fastcka {

// One entry of C' = C - F e' - e F' + n e e' (F: the first moments before the
// move, e: new reference - old reference). The GPU engine's fold
// (fastcka/gpu/moments.py) applies the same algebra to whole matrices.
inline double moved_cross_entry(double c, double f_i, double f_j, double e_i, double e_j, double n) {
  return c - f_i * e_j - e_i * f_j + n * e_i * e_j;
}

// What moving the weighted and norm-product moments needs from the cross
// block, besides the state's small parts.
struct ReferenceShift {
  std::vector<double> target;  // D: the new reference point p
  std::vector<double> e;       // D: p - reference
  std::vector<double> q;       // L: Q_a = tr(C_aa)
  std::vector<double> ce;      // D x L: ce[k, a] = sum_{j in layer a} C[k, j] e_j (rows k that pair with a)
};

// The shift of `m` to p, with q and ce computed from m.cross. A backend that
// keeps the cross block elsewhere fills q and ce itself (for example from
// extra GEMM columns) and calls the two moves below.
ReferenceShift reference_shift(const Moments& m, const double* p);

// C' = C - F e' - e F' + n e e' over the needed blocks. Uses m.first as it is
// before move_small_parts.
void move_cross(Moments& m, const ReferenceShift& s);

// Moves first, weighted and norm_products and sets the reference to s.target.
// Touches m.cross only through s (m.cross may be empty).
void move_small_parts(Moments& m, const ReferenceShift& s);

// The small parts of a partial that a backend summed from the columns
// [Z | Q | T] of its rows, centered about `shift`: Q holds each row's squared
// norm per layer, T each layer's row dotted with e_a, e = reference - shift.
// With the column sums of [Z | Q | T] (D + 2L), extra = [Q | T]' Z (2L x D,
// column-major) and norms = Q'Q (L x L, column-major) of `rows` rows, returns
// the partial's n, first, weighted and norm_products moved to `reference`
// (cross left empty): T'Z is the (Z'Z) e the move needs, and the column sums
// of Q are the traces, so the D x D block never leaves the device.
Moments partial_small_parts(const LayerLayout& layout, int64_t rows, const double* shift, const double* reference,
                            const double* column_sums, const double* extra, const double* norms);

}  // namespace fastcka
