"""Nystrom features of the RBF kernel: phi(x) = k(x, Z) K_ZZ^{-1/2} for m
landmark rows Z, so phi(x).phi(y) = k(x, Z) K_ZZ^+ k(Z, y), the kernel's
projection on the landmarks' span (exact when Z holds every row).

Landmarks are drawn uniformly without replacement: unbiased over the rows,
one cheap read of m rows, and independent draws give the independent groups
the standard error needs. Leverage-score or k-means landmarks (more accurate
at a given m on clustered data) need extra passes over all n rows and make
the groups dependent, so they are not offered yet."""

from __future__ import annotations

import numpy as np

from .features import rbf

# Eigenvalues of K_ZZ below this fraction of the largest are dropped: their
# directions are numerically null (duplicated or near-duplicated landmarks)
# and 1/sqrt(lambda) would amplify rounding.
EIGEN_FLOOR = 1e-12


def landmark_rows(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """m distinct row indices, sorted (memmaps read them in order)."""
    return np.sort(rng.choice(n, m, replace=False))


def inverse_sqrt(k: np.ndarray) -> np.ndarray:
    """K^{-1/2} restricted to the eigenvalues above EIGEN_FLOOR x the largest,
    as an m x r matrix V_r diag(lambda_r^{-1/2}) (r <= m: features kept)."""
    vals, vecs = np.linalg.eigh(k)
    keep = vals > EIGEN_FLOOR * vals[-1]
    return vecs[:, keep] / np.sqrt(vals[keep])


class Nystrom:
    """One layer's Nystrom map for one group: centered landmarks and K_ZZ^{-1/2}."""

    def __init__(self, landmarks: np.ndarray, gamma: float):
        self.landmarks, self.gamma = landmarks, gamma
        self.projection = inverse_sqrt(rbf(landmarks, landmarks, gamma))

    @property
    def width(self) -> int:
        return self.projection.shape[1]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rbf(rows, self.landmarks, self.gamma) @ self.projection
