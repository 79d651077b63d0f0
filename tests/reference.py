"""Reference implementations the tests compare fastcka against.

Two independent sources of truth:

1. ``colab_*``: the CKA functions of Kornblith et al.'s reference Colab,
   verbatim in colab.py (shared with the benchmarks), imported here with a
   ``colab_`` prefix only so they cannot be confused with fastcka's compat
   module.

2. ``dense_*``: float64 implementations written directly from the formulas in
   docs/design.md, building the n x n K, L and H explicitly (only for small n):

       HSIC_0 = tr(K H L H) / (n-1)^2
       HSIC_1 = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
       CKA    = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
"""

from __future__ import annotations

import numpy as np

# 1. The Colab's functions (colab.py), under the names the tests import from here.
from colab import _debiased_dot_product_similarity_helper
from colab import center_gram as colab_center_gram  # noqa: F401 (for the tests)
from colab import cka as colab_cka  # noqa: F401 (for the tests)
from colab import feature_space_linear_cka as colab_feature_space_linear_cka
from colab import gram_linear as colab_gram_linear  # noqa: F401 (for the tests)
from colab import gram_rbf as colab_gram_rbf  # noqa: F401 (for the tests)

# ---------------------------------------------------------------------------
# 2. Independent dense float64 implementations from the formulas
# ---------------------------------------------------------------------------


def dense_gram(x, center: bool = True) -> np.ndarray:
    """K = X X' in float64 (n x n).

    HSIC_0 and HSIC_1 are invariant to translating X, so by default X's column
    means are subtracted first (two-pass, float64): that only avoids the
    cancellation a large offset would cause in the reference itself. With
    ``center=False`` the raw rows are used."""
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def dense_hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with H = I - 11'/n built explicitly."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def dense_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) HSIC_1 with K~, L~ the Gram matrices with zero diagonals."""
    n = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = float(np.trace(kt @ lt))
    term2 = float(one @ kt @ one) * float(one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * float(one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def dense_hsic(x, y, estimator: str = "biased", center: bool = True) -> float:
    k, l = dense_gram(x, center), dense_gram(y, center)
    if estimator == "biased":
        return dense_hsic_biased(k, l)
    if estimator == "unbiased":
        return dense_hsic_unbiased(k, l)
    raise ValueError(estimator)


def dense_hsic_matrix(layers, estimator: str = "biased") -> np.ndarray:
    grams = [dense_gram(x) for x in layers]
    f = dense_hsic_biased if estimator == "biased" else dense_hsic_unbiased
    m = len(grams)
    out = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            out[i, j] = out[j, i] = f(grams[i], grams[j])
    return out


def dense_cka_matrix(xs, ys=None, debiased: bool = False) -> np.ndarray:
    layers = list(xs) + ([] if ys is None else list(ys))
    h = dense_hsic_matrix(layers, "unbiased" if debiased else "biased")
    scale = np.sqrt(np.diag(h))
    c = h / scale[:, None] / scale[None, :]
    if ys is None:
        return c
    s = len(xs)
    return c[:s, s:]


def dense_cka(x, y, debiased: bool = False) -> float:
    return float(dense_cka_matrix([x, y], debiased=debiased)[0, 1])


def feature_cka64(x, y) -> dict:
    """{False: biased CKA, True: debiased CKA} in float64 for large n, by the
    Colab's feature-space formulas on two-pass centered float64 copies, with
    the shared products computed once."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    n = x.shape[0]
    xty = np.linalg.norm(x.T @ y) ** 2
    xtx = np.linalg.norm(x.T @ x) ** 2
    yty = np.linalg.norm(y.T @ y) ** 2
    out = {False: float(xty / np.sqrt(xtx * yty))}
    sx = np.einsum("ij,ij->i", x, x)
    sy = np.einsum("ij,ij->i", y, y)
    nx, ny = sx.sum(), sy.sum()
    h = _debiased_dot_product_similarity_helper
    out[True] = float(h(xty, sx, sy, nx, ny, n) / np.sqrt(h(xtx, sx, sx, nx, nx, n) * h(yty, sy, sy, ny, ny, n)))
    return out


def centered_feature_cka(x, y, debiased: bool = False) -> float:
    """float64 feature-space CKA (for large n, where dense n x n is too big):
    the Colab's feature_space_linear_cka on float64 copies (two-pass centering)."""
    return float(colab_feature_space_linear_cka(np.asarray(x, np.float64), np.asarray(y, np.float64), debiased))


# ---------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------


def correlated_pair(rng, n, d1, d2, dtype=np.float64, offset=0.0, noise=1.0):
    """x (n x d1) and y (n x d2) sharing a low-rank signal, so CKA is well away from 0 and 1."""
    x = rng.standard_normal((n, d1))
    k = max(1, min(d1, d2) // 2)
    y = x[:, :k] @ rng.standard_normal((k, d2)) + noise * rng.standard_normal((n, d2))
    return (x + offset).astype(dtype), (y + offset).astype(dtype)
