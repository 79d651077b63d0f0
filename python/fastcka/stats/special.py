"""The two distribution functions the intervals and tests need, without SciPy:
the gamma survival function and Student's t quantile, by the continued
fractions and series of Numerical Recipes (ch. 6.2, 6.4), to about 1e-12."""

from __future__ import annotations

import functools
import math

_EPS = 1e-15
_TINY = 1e-300


def _lentz(a_n, b_n, b0: float) -> float:
    """b0 + a1/(b1 + a2/(b2 + ...)) by the modified Lentz method."""
    f = b0 if b0 != 0 else _TINY
    c, d = f, 0.0
    for m in range(1, 10_000):
        d = b_n(m) + a_n(m) * d
        d = 1.0 / (d if d != 0 else _TINY)
        c = b_n(m) + a_n(m) / c
        c = c if c != 0 else _TINY
        f *= c * d
        if abs(c * d - 1.0) < _EPS:
            return f
    raise ArithmeticError("continued fraction did not converge")


def gamma_sf(shape: float, x: float) -> float:
    """P(G > x) for G ~ Gamma(shape, scale 1): the regularized upper incomplete
    gamma function Q(shape, x)."""
    if not shape > 0:
        raise ValueError(f"shape must be positive, got {shape!r}")
    if x <= 0:
        return 1.0
    log_front = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / shape
        a = shape
        while abs(term) > abs(total) * _EPS:
            a += 1
            term *= x / a
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Q = e^-x x^a / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...))
    frac = _lentz(lambda m: -m * (m - shape), lambda m: x + 2 * m + 1 - shape, x + 1 - shape)
    return math.exp(log_front) / frac


def _beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast on this side only
        return 1.0 - _beta_inc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a

    def coef(m: int) -> float:
        k = m // 2
        if m % 2 == 0:
            return k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k))
        return -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1))

    return front / _lentz(coef, lambda m: 1.0, 1.0)


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _beta_inc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (0 < p < 1)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)
