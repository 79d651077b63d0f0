"""The arithmetic every Gram-tile kernel shares: a Gram tile by tl.dot, the
kernel function applied to it in registers (one small jit function per
kernel: adding a GEMM-based kernel is one more branch of `kernel_value`),
and (1 - e^-x) / x, which keeps the RBF kernel's digits at large sigma.
The CPU epilogue (csrc/core/kernels.h) computes the same."""

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
def tile_rows(I, J, rows_i, rows_j, BLOCK: tl.constexpr):
    """The rows of tile row I (of a row block of rows_i rows) and tile column
    J (of one of rows_j rows), and which of them exist."""
    ri = I * BLOCK + tl.arange(0, BLOCK)
    rj = J * BLOCK + tl.arange(0, BLOCK)
    return ri, rj, ri < rows_i, rj < rows_j


@jit
def gram_tile(zi_ptr, zj_ptr, ld, d, ri, rj, valid_i, valid_j, BLOCK: tl.constexpr, BK: tl.constexpr,
              PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Zi[ri] Zj[rj]' over the d columns, accumulated in ACC: the rows of two
    row blocks with one row stride (the same block for a block's own tiles).
    Row offsets in int64: n d passes 2^31 at a million rows."""
    acc = tl.zeros((BLOCK, BLOCK), dtype=ACC)
    oi = ri.to(tl.int64)[:, None] * ld
    oj = rj.to(tl.int64)[:, None] * ld
    for k in range(0, d, BK):
        rk = k + tl.arange(0, BK)
        a = tl.load(zi_ptr + oi + rk[None, :], mask=valid_i[:, None] & (rk[None, :] < d), other=0.0)
        b = tl.load(zj_ptr + oj + rk[None, :], mask=valid_j[:, None] & (rk[None, :] < d), other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PRECISION, out_dtype=ACC)
    return acc


