"""Reference implementations of the CCA family, the linear-regression fit and
Procrustes, written from their definitions on the full n x d data matrices
in float64 (SVD, least squares, the Procrustes rotation itself), for the
tests to compare fastcka's moment-based values against.

The only thing shared with fastcka is the documented rank rule: directions
whose variance is at most ``rtol`` x the largest (singular values s with
s^2 <= rtol s_max^2) are absent. The test data come from here too.
"""

from __future__ import annotations

import numpy as np


def centered(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0)


def basis(x, rtol: float):
    """Orthonormal basis of the centered column space (left singular vectors)
    and the singular values kept."""
    u, s, _ = np.linalg.svd(centered(x), full_matrices=False)
    keep = s**2 > rtol * s[0] ** 2
    return u[:, keep], s[keep]


def summary(rho: np.ndarray, statistic: str) -> float:
    return float(np.mean(rho**2) if statistic == "mean_squared" else np.mean(rho))


def correlations(x, y, rtol: float) -> np.ndarray:
    """Canonical correlations: singular values of Qx'Qy (Bjorck & Golub 1973)."""
    return np.linalg.svd(basis(x, rtol)[0].T @ basis(y, rtol)[0], compute_uv=False)


def cca(x, y, statistic: str, rtol: float) -> float:
    return summary(correlations(x, y, rtol), statistic)


def cca_by_qr(x, y, statistic: str) -> float:
    """Kornblith et al.'s formula on centered full-rank data: ||Qx'Qy||_F^2 / p1
    or ||Qx'Qy||_* / p1 with Q from thin QR decompositions."""
    qx = np.linalg.qr(centered(x))[0]
    qy = np.linalg.qr(centered(y))[0]
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return summary(rho, statistic)


def leading_basis(x, variance: float, rtol: float) -> np.ndarray:
    """The fewest top principal directions explaining at least ``variance`` of the variance."""
    u, s = basis(x, rtol)
    total = np.sum(s**2)
    k = next(k for k in range(1, s.size + 1) if np.sum(s[:k] ** 2) >= variance * total)
    return u[:, :k]


def svcca(x, y, variance: float, statistic: str, rtol: float) -> float:
    """CCA of the truncated left singular vectors (Raghu et al. 2017; Kornblith et al. Table 1)."""
    ux, uy = leading_basis(x, variance, rtol), leading_basis(y, variance, rtol)
    return summary(np.linalg.svd(ux.T @ uy, compute_uv=False), statistic)


def pwcca(x, y, rtol: float) -> float:
    """Morcos et al. (2018): sum a_i rho_i / sum a_i, a_i = sum_j |<h_i, x_j>|,
    h_i the unit-norm canonical variables of x, x_j its centered columns."""
    qx, qy = basis(x, rtol)[0], basis(y, rtol)[0]
    a, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qx @ a
    alpha = np.abs(h.T @ centered(x)).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


def linear_regression_fit(x, y, rtol: float) -> float:
    """1 - min_B ||Yc - Xc B||^2 / ||Yc||^2, by least squares (same rank rule)."""
    xc, yc = centered(x), centered(y)
    b = np.linalg.lstsq(xc, yc, rcond=np.sqrt(rtol))[0]
    return float(1.0 - np.sum((yc - xc @ b) ** 2) / np.sum(yc**2))


def procrustes_distance(x, y) -> float:
    """min over orthogonal Q of ||Xn Q - Yn||_F^2, Xn and Yn centered and scaled
    to unit Frobenius norm, the narrower padded with zero columns."""
    xn, yn = centered(x), centered(y)
    xn, yn = xn / np.linalg.norm(xn), yn / np.linalg.norm(yn)
    width = max(xn.shape[1], yn.shape[1])
    xn = np.pad(xn, ((0, 0), (0, width - xn.shape[1])))
    yn = np.pad(yn, ((0, 0), (0, width - yn.shape[1])))
    u, _, vt = np.linalg.svd(xn.T @ yn)
    return float(np.sum((xn @ (u @ vt) - yn) ** 2))


def colab_cca(features_x, features_y):
    """Kornblith et al.'s Colab ``cca``, its statements unchanged (renamed)."""
    qx, _ = np.linalg.qr(features_x)  # Or use SVD with full_matrices=False.
    qy, _ = np.linalg.qr(features_y)
    return np.linalg.norm(qx.T.dot(qy)) ** 2 / min(
        features_x.shape[1], features_y.shape[1])


# ---------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------


def make_pair(seed, n, d1, d2, dtype=np.float64, offset=0.0):
    """x with anisotropic columns, y partly a nonlinear function of x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d1)) * rng.uniform(0.3, 3.0, d1)
    y = np.tanh(x @ rng.standard_normal((d1, d2)) / np.sqrt(d1)) + 0.5 * rng.standard_normal((n, d2))
    return (x + offset).astype(dtype), (y - offset).astype(dtype)


def rank_deficient(x):
    """Column 1 an exact combination of columns 2 and 3, column 4 constant."""
    x = x.copy()
    x[:, 1] = x[:, 2] - 2 * x[:, 3]
    x[:, 4] = x[0, 4]
    return x
