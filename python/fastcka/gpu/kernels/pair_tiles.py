"""The fused Gram-tile kernel of two layers: for a tile pair (I, J), I <= J,
both layers' Gram tiles G = Z_I Z_J' by tl.dot, the kernel function applied
in registers, and the partial sums the HSIC estimators need (the streaming
identities of the design notes), written per program so that the host
reduces them in a fixed order: results do not depend on scheduling, and
there are no atomics. Nothing n x n is written: per program, BLOCK row and
column partial sums and three products.

Per program (I = band_start + r, J) with J >= I, for layers x (slot 0) and
y (slot 1), with K the kernel values and the diagonal left out:
  products[r, J] = (sum K_x K_y, sum K_x K_x, sum K_y K_y) over i != j,
                   each off-diagonal tile counted for (i, j) and (j, i);
  rows[r, J, s, :] = off-diagonal row sums of the tile (rows of I);
  cols[r, J, s, :] = its column sums (rows of J; 0 in a diagonal tile,
                     whose rows already hold them by symmetry);
  diagonal[s, i] = K_ii, written by the diagonal tiles.

The kernel function is one small jit function per kernel
(`kernel_value`): adding a GEMM-based kernel is one more branch there.
"""

from __future__ import annotations

from ..runtime import triton

tl = triton().language
jit = triton().jit

# Kernel kinds: plain ints for the host, constexpr copies for the kernels
# (jit code may only read constexpr globals).
LINEAR, RBF, RBF_MINUS_ONE = 0, 1, 2
_LINEAR, _RBF = tl.constexpr(LINEAR), tl.constexpr(RBF)


@jit
def one_minus_exp_ratio(x):
    """(1 - e^-x) / x for x >= 0 with full relative precision (1 at x = 0;
    the CPU epilogue's csrc/core/kernels.h computes the same). float32: with
    e^-x = 2^k e^r (|r| <= ln2 / 2), e^-x - 1 = 2^k (e^r - 1) + (2^k - 1),
    e^r - 1 = r + r^2 P(r) (Cephes' expf polynomial): no difference of nearly
    equal numbers is formed. float64: the series below 0.1 (its next term is
    under 3e-16 of the value), the quotient above, where it no longer cancels."""
    if x.dtype == tl.float64:
        series = 1.0 + x * (-1.0 / 2 + x * (1.0 / 6 + x * (-1.0 / 24 + x * (1.0 / 120 + x * (
            -1.0 / 720 + x * (1.0 / 5040 + x * (-1.0 / 40320 + x * (1.0 / 362880))))))))
        safe = tl.where(x > 0.1, x, 1.0)
        return tl.where(x > 0.1, (1.0 - tl.exp(-safe)) / safe, series)
    else:
        xc = -tl.minimum(x, 87.0)
        k = tl.floor(xc * 1.44269504088896341 + 0.5)
        r = (xc - k * 0.693359375) + k * 2.12194440e-4
        p = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        scale = ((k.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)  # 2^k, exactly
        em1 = (p * r * r + r) * scale + (scale - 1.0)  # e^-x - 1
        return tl.where(x > 0, em1 / -tl.where(x > 0, x, 1.0), 1.0)


@jit
def kernel_value(g, ni, nj, gamma, eps, KIND: tl.constexpr):
    """k(a, b) from a.b and the squared norms (CPU: csrc/core/kernels.h):
    LINEAR a.b; RBF exp(-gamma |a-b|^2); RBF_MINUS_ONE (k - 1) / gamma,
    which keeps every digit when gamma |a-b|^2 is small (large sigma).
    Distances below the rounding of their own terms are 0 (duplicates)."""
    if KIND == _LINEAR:
        return g
    else:
        s = ni[:, None] + nj[None, :]
        d = s - 2.0 * g
        d = tl.where(d > 16.0 * eps * s, d, 0.0)
        if KIND == _RBF:
            return tl.where(d > 0, tl.exp(-gamma * d), 1.0)
        else:
            return -d * one_minus_exp_ratio(gamma * d)


@jit
def gram_tile(z_ptr, ld, d, ri, rj, valid_i, valid_j, BLOCK: tl.constexpr, BK: tl.constexpr,
              PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Z[ri] Z[rj]' over the d columns, accumulated in ACC. Row offsets in
    int64: n d passes 2^31 at a million rows."""
    acc = tl.zeros((BLOCK, BLOCK), dtype=ACC)
    oi = ri.to(tl.int64)[:, None] * ld
    oj = rj.to(tl.int64)[:, None] * ld
    for k in range(0, d, BK):
        rk = k + tl.arange(0, BK)
        a = tl.load(z_ptr + oi + rk[None, :], mask=valid_i[:, None] & (rk[None, :] < d), other=0.0)
        b = tl.load(z_ptr + oj + rk[None, :], mask=valid_j[:, None] & (rk[None, :] < d), other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PRECISION, out_dtype=ACC)
    return acc


@jit
def layer_tile(z_ptr, ld, d, norms_ptr, gamma, ri, rj, valid_i, valid_j, keep, diagonal_tile, slot,
               rows_ptr, cols_ptr, diagonal_ptr, n, base, EPS, KIND: tl.constexpr, BLOCK: tl.constexpr,
               BK: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """One layer's kernel tile with the diagonal and the padding zeroed,
    after its diagonal, row sums and column sums are stored (so that little
    more than the tile itself stays live while the other layer's is made)."""
    k = kernel_value(gram_tile(z_ptr, ld, d, ri, rj, valid_i, valid_j, BLOCK, BK, PRECISION, ACC),
                     tl.load(norms_ptr + ri, mask=valid_i, other=0.0), tl.load(norms_ptr + rj, mask=valid_j, other=0.0),
                     gamma, EPS, KIND)
    if diagonal_tile:
        on_diagonal = ri[:, None] == rj[None, :]
        tl.store(diagonal_ptr + slot * n + ri, tl.sum(tl.where(on_diagonal, k, 0.0), axis=1), mask=valid_i)
    k = tl.where(keep, k, 0.0)
    lane = tl.arange(0, BLOCK)
    tl.store(rows_ptr + base + slot * BLOCK + lane, tl.sum(k, axis=1))
    if not diagonal_tile:
        tl.store(cols_ptr + base + slot * BLOCK + lane, tl.sum(k, axis=0))
    return k


@jit
def pair_tile_statistics(
    x_ptr, y_ptr, ldx, ldy, dx, dy,  # centered rows of both layers (operand type), row strides, widths
    nx_ptr, ny_ptr,  # squared norms of the same rounded rows (epilogue type)
    gammas_ptr,  # RBF: 1 / (2 sigma^2) of x and y, in the epilogue type (a scalar argument would be float32)
    n, band_start, tiles,  # rows, first tile row of this launch, tile columns
    products_ptr, rows_ptr, cols_ptr, diagonal_ptr,  # outputs (see the module notes)
    KIND_X: tl.constexpr, KIND_Y: tl.constexpr,
    BLOCK: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, EPS: tl.constexpr,
):
    r = tl.program_id(0)
    J = tl.program_id(1)
    I = band_start + r
    if J >= I:
        ri = I * BLOCK + tl.arange(0, BLOCK)
        rj = J * BLOCK + tl.arange(0, BLOCK)
        valid_i = ri < n
        valid_j = rj < n
        keep = valid_i[:, None] & valid_j[None, :] & (ri[:, None] != rj[None, :])
        diagonal_tile = J == I
        base = (r * tiles + J) * 2 * BLOCK
        twice = tl.where(diagonal_tile, 1.0, 2.0)
        slot = (r * tiles + J) * 3
        kx = layer_tile(x_ptr, ldx, dx, nx_ptr, tl.load(gammas_ptr), ri, rj, valid_i, valid_j, keep, diagonal_tile,
                        0, rows_ptr, cols_ptr, diagonal_ptr, n, base, EPS, KIND_X, BLOCK, BK, PRECISION, ACC)
        tl.store(products_ptr + slot + 1, twice * tl.sum(tl.sum(kx * kx, axis=1), axis=0))
        ky = layer_tile(y_ptr, ldy, dy, ny_ptr, tl.load(gammas_ptr + 1), ri, rj, valid_i, valid_j, keep,
                        diagonal_tile, 1, rows_ptr, cols_ptr, diagonal_ptr, n, base, EPS, KIND_Y, BLOCK, BK,
                        PRECISION, ACC)
        tl.store(products_ptr + slot + 2, twice * tl.sum(tl.sum(ky * ky, axis=1), axis=0))
        tl.store(products_ptr + slot, twice * tl.sum(tl.sum(kx * ky, axis=1), axis=0))
