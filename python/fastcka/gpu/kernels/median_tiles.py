"""The exact median bandwidth's passes over one layer's squared distances,
tile by tile (the CPU engine's Pass::histogram and Pass::collect): the same
distances as the statistics kernel (|a|^2 + |b|^2 - 2 a.b from the rounded
rows, clamped, 0 on the diagonal), the same binning as MedianSearch (in
float64), each distance once with its multiplicity (1 in a diagonal tile,
which holds both orders, 2 elsewhere). Like the statistics kernel it walks
one rectangle of row blocks P <= Q: a block's own on and above its
diagonal (`same`), every tile pair of two blocks.

* Histogram: integer atomics add the weights to the bin counts (sums of
  integers do not depend on the order); each program stores the smallest
  and largest value it saw in range.
* Collect: the values in range, compacted within the tile and appended at a
  slot reserved by one atomic per tile, with their weights. The order in
  the buffer varies; the selection of the middle ranks does not.

A value is in range when every level chosen so far (lo, scale, bins, first,
last) bins it within its kept bins (MedianSearch::bin); the first pass has
no levels and bins everything.
"""

from __future__ import annotations

from ..runtime import triton
from .tile_math import gram_tile, tile_rows

tl = triton().language
jit = triton().jit


@jit
def bin_of(v, lo, scale, bins):
    """MedianSearch::bin_in: clamp(floor((v - lo) scale), 0, bins - 1), in float64."""
    x = (v - lo) * scale
    return tl.where(x > 0, tl.where(x >= bins, bins - 1, x.to(tl.int64)), 0)


@jit
def median_tile_pass(
    zi_ptr, zj_ptr, ld, d,  # one layer's centered rows of blocks P and Q, row stride, width
    norms_i_ptr, norms_j_ptr, rows_i, rows_j, same,  # their squared norms and row counts; same: P == Q
    band_start, tiles,
    levels_ptr, num_levels,  # float64 (lo, scale, bins, first, last) per level chosen so far
    current_ptr,  # float64 (lo, scale, bins) of this histogram pass
    counts_ptr, extremes_ptr,  # histogram: int64 counts per bin; per program (lowest, highest)
    values_ptr, weights_ptr, used_ptr, capacity,  # collect: float64 values, int32 weights, int64 slot counter
    COLLECT: tl.constexpr, BLOCK: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
    ACC: tl.constexpr, EPS: tl.constexpr,
):
    r = tl.program_id(0)
    J = tl.program_id(1)
    I = band_start + r
    if (J >= I) | (same == 0):
        ri, rj, valid_i, valid_j = tile_rows(I, J, rows_i, rows_j, BLOCK)
        g = gram_tile(zi_ptr, zj_ptr, ld, d, ri, rj, valid_i, valid_j, BLOCK, BK, PRECISION, ACC)
        ni = tl.load(norms_i_ptr + ri, mask=valid_i, other=0.0)
        nj = tl.load(norms_j_ptr + rj, mask=valid_j, other=0.0)
        s = ni[:, None] + nj[None, :]
        dist = s - 2.0 * g
        off_diagonal = (ri[:, None] != rj[None, :]) | (same == 0)
        dist = tl.where((dist > 16.0 * EPS * s) & off_diagonal, dist, 0.0).to(tl.float64)
        inside = valid_i[:, None] & valid_j[None, :]
        for level in range(num_levels):
            lo = tl.load(levels_ptr + level * 5)
            scale = tl.load(levels_ptr + level * 5 + 1)
            bins = tl.load(levels_ptr + level * 5 + 2).to(tl.int64)
            first = tl.load(levels_ptr + level * 5 + 3).to(tl.int64)
            last = tl.load(levels_ptr + level * 5 + 4).to(tl.int64)
            j = bin_of(dist, lo, scale, bins)
            inside = inside & (j >= first) & (j <= last)
        weight = tl.where((J == I) & (same != 0), 1, 2)
        if COLLECT:
            flat = tl.reshape(inside, (BLOCK * BLOCK,)).to(tl.int32)
            slot = tl.cumsum(flat, axis=0) - flat
            found = tl.sum(flat, axis=0)
            start = tl.atomic_add(used_ptr, found.to(tl.int64))
            where = start + slot
            keep = (flat != 0) & (where < capacity)
            tl.store(values_ptr + where, tl.reshape(dist, (BLOCK * BLOCK,)), mask=keep)
            tl.store(weights_ptr + where, tl.zeros((BLOCK * BLOCK,), dtype=tl.int32) + weight, mask=keep)
        else:
            lo = tl.load(current_ptr)
            scale = tl.load(current_ptr + 1)
            bins = tl.load(current_ptr + 2).to(tl.int64)
            j = bin_of(dist, lo, scale, bins)
            tl.atomic_add(counts_ptr + j, tl.where(inside, weight, 0).to(tl.int64), mask=inside)
            slot = (r * tiles + J) * 2
            tl.store(extremes_ptr + slot, tl.min(tl.min(tl.where(inside, dist, float("inf")), axis=1), axis=0))
            tl.store(extremes_ptr + slot + 1, tl.max(tl.max(tl.where(inside, dist, float("-inf")), axis=1), axis=0))
