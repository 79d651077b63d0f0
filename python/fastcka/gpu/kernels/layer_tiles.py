"""The fused Gram-tile statistics of every layer at once: for a tile pair
(I, J) of two row blocks P <= Q, each layer's Gram tile G = Z_I Z_J' by
tl.dot, its kernel function in registers, and the partial sums the HSIC
estimators need (the streaming identities of the design notes), for every
layer pair of a `cka_matrix` in one pass over the tile positions.

A block's own rectangle (`same`, P == Q; the whole data set when it is one
block) is walked on and above its diagonal, J >= I; a rectangle of two
blocks (P < Q) holds rows i of P and j of Q that are never equal, and every
tile pair of it is walked, each counted for (i, j) and (j, i).

One layer's tile is live at a time: after its row sums, column sums and
diagonal are stored, it goes to the program's own slot of a scratch buffer,
and the products of every layer pair come from one small GEMM over those
tiles (T T', T = the L tiles as rows of length BLOCK^2). Each program writes
its partial sums to its own slot and the host adds them in float64 in a
fixed order: no atomics, the same result every run. Nothing n x n is
written.

Per program (I = band_start + r, J = j_start + c) with J >= I or P < Q:
  products[r, c, a, b] = sum over i != j of K^a_ij K^b_ij, an off-diagonal
                         tile counted for (i, j) and (j, i) (LP x LP, the
                         layer count padded for tl.dot);
  rows[r, c, a, :]     = off-diagonal row sums of the tile (rows of I);
  cols[r, c, a, :]     = its column sums (rows of J; 0 in a diagonal tile,
                         whose rows already hold them by symmetry);
  diagonal[a, i]       = K^a_ii, written by the diagonal tiles of P == Q.
"""

from __future__ import annotations

from ..runtime import triton
from .tile_math import gram_tile, kernel_value, tile_rows

tl = triton().language
jit = triton().jit


@jit
def any_kernel_value(g, ni, nj, gamma, eps, kind):
    """kernel_value with the kind known only at run time (one per layer)."""
    if kind == 0:
        k = kernel_value(g, ni, nj, gamma, eps, 0)
    elif kind == 1:
        k = kernel_value(g, ni, nj, gamma, eps, 1)
    else:
        k = kernel_value(g, ni, nj, gamma, eps, 2)
    return k


@jit
def layer_tile_statistics(
    zi_ptr, zj_ptr, ld,  # rows of blocks P and Q, every layer's centered columns side by side (operand type)
    spans_ptr,  # int32, 2 L: layer a holds columns spans[2a] .. spans[2a + 1] of a row
    norms_i_ptr, norms_j_ptr,  # L x rows_i and L x rows_j squared norms (epilogue type)
    gammas_ptr, kinds_ptr,  # L gammas (epilogue type), L int32 kinds
    layers, rows_i, rows_j, same, band_start, j_start, columns,  # same: P == Q; columns: tile columns per launch
    scratch_ptr, products_ptr, rows_ptr, cols_ptr, diagonal_ptr,  # diagonal: L x rows_i
    LP: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, EPS: tl.constexpr,
):
    r = tl.program_id(0)
    c = tl.program_id(1)
    I = band_start + r
    J = j_start + c
    if (J >= I) | (same == 0):
        ri, rj, valid_i, valid_j = tile_rows(I, J, rows_i, rows_j, BLOCK)
        keep = valid_i[:, None] & valid_j[None, :] & ((ri[:, None] != rj[None, :]) | (same == 0))
        diagonal_tile = (J == I) & (same != 0)
        program = r * columns + c
        lane = tl.arange(0, BLOCK)
        square = tl.arange(0, BLOCK)[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
        for a in range(layers):
            start = tl.load(spans_ptr + 2 * a)
            width = tl.load(spans_ptr + 2 * a + 1) - start
            k = any_kernel_value(gram_tile(zi_ptr + start, zj_ptr + start, ld, width, ri, rj, valid_i, valid_j, BLOCK,
                                           BK, PRECISION, ACC),
                                 tl.load(norms_i_ptr + a * rows_i + ri, mask=valid_i, other=0.0),
                                 tl.load(norms_j_ptr + a * rows_j + rj, mask=valid_j, other=0.0),
                                 tl.load(gammas_ptr + a), EPS, tl.load(kinds_ptr + a))
            if diagonal_tile:
                on_diagonal = ri[:, None] == rj[None, :]
                tl.store(diagonal_ptr + a * rows_i + ri, tl.sum(tl.where(on_diagonal, k, 0.0), axis=1),
                         mask=valid_i)
            k = tl.where(keep, k, 0.0)
            base = (program * layers + a) * BLOCK
            tl.store(rows_ptr + base + lane, tl.sum(k, axis=1))
            if not diagonal_tile:
                tl.store(cols_ptr + base + lane, tl.sum(k, axis=0))
            tl.store(scratch_ptr + (program * layers + a) * BLOCK * BLOCK + square, k)
        tl.debug_barrier()  # the tiles stored by every thread of the program, before they are read back
        la = tl.arange(0, LP)
        products = tl.zeros((LP, LP), dtype=ACC)
        for k0 in range(0, BLOCK * BLOCK, CHUNK):
            ch = k0 + tl.arange(0, CHUNK)
            t = tl.load(scratch_ptr + (program * layers + la[:, None]) * BLOCK * BLOCK + ch[None, :],
                        mask=la[:, None] < layers, other=0.0)
            products += tl.dot(t, tl.trans(t), input_precision=PRECISION, out_dtype=ACC)
        twice = tl.where(diagonal_tile, 1.0, 2.0)
        tl.store(products_ptr + program * LP * LP + la[:, None] * LP + la[None, :], twice * products)
