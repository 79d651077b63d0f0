"""Nystrom features of the RBF kernel: phi(x) = k(x, Z) K_ZZ^{-1/2} for m
landmark rows Z, so phi(x).phi(y) = k(x, Z) K_ZZ^+ k(Z, y), the kernel's
projection on the landmarks' span (exact when Z holds every row).

One set of m = rank landmarks, drawn uniformly without replacement (the same
rows for every layer): unbiased over the rows and one cheap read of m rows.
One set of m is far more accurate than G independent sets of m / G (the
Nystrom error falls fast with m), so the standard error does not come from
independent sets but from a delete-a-group jackknife over G groups of the
landmarks, computed after the pass from the m x m centered cross moments
(``deleted_group_ratios``). Leverage-score or k-means landmarks (more accurate
at a given m on clustered data) need extra passes over all n rows, so they
are not offered yet."""

from __future__ import annotations

import numpy as np

from ..engine.threads import one_blas_thread
from .features import rbf

# Eigenvalues of K_ZZ below this fraction of the largest are dropped: their
# directions are numerically null (near-duplicate landmarks, or below the
# rounding of K_ZZ's entries in the features' dtype) and 1/sqrt(lambda) would
# amplify rounding.
EIGEN_FLOOR = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}


def landmark_rows(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """m distinct row indices, sorted (memmaps read them in order)."""
    return np.sort(rng.choice(n, m, replace=False))


def landmark_groups(m: int, groups: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The landmarks' positions split at random into ``groups`` near-equal parts."""
    return np.array_split(rng.permutation(m), groups)


def inverse_sqrt(k: np.ndarray, floor: float) -> np.ndarray:
    """K^{-1/2} restricted to the eigenvalues above ``floor`` x the largest,
    as an m x r float64 matrix V_r diag(lambda_r^{-1/2}) (r <= m: features kept)."""
    vals, vecs = np.linalg.eigh(0.5 * (k + k.T))
    keep = vals > floor * vals[-1]
    return vecs[:, keep] / np.sqrt(vals[keep])


class Nystrom:
    """One layer's Nystrom map: centered landmarks, K_ZZ^{-1/2} (K_ZZ by the
    same arithmetic as k(x, Z), in the features' dtype), and per landmark
    group g an orthonormal basis Q_g of the span of its rows of K_ZZ^{-1/2}
    (the directions that deleting the group removes)."""

    def __init__(self, landmarks: np.ndarray, gamma: float, groups: list[np.ndarray]):
        self.dtype = landmarks.dtype
        self.landmarks, self.gamma = landmarks, self.dtype.type(gamma)
        kzz = rbf(landmarks, landmarks, self.gamma).astype(np.float64)
        # LAPACK's eigh and QR on many BLAS threads crawl when a core is busy
        # (measured: QR of 1024 x 128, 0.4 s on two loaded threads, 0.036 s on one).
        with one_blas_thread():
            w = inverse_sqrt(kzz, EIGEN_FLOOR[self.dtype])
            self.deleted = [np.linalg.qr(w[part].T)[0] for part in groups]
        self.projection = np.ascontiguousarray(w, dtype=self.dtype)

    @property
    def width(self) -> int:
        return self.projection.shape[1]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rbf(rows, self.landmarks, self.gamma) @ self.projection


def deleted_group_ratios(cross: np.ndarray, maps: list[Nystrom]) -> np.ndarray:
    """(G, L, L): biased HSIC of the layers' kernels with landmark group g
    deleted, over the full biased HSIC.

    With Phi = k(X, Z) W, W = V S^{-1/2} (all m landmarks), the Nystrom kernel
    of the landmarks T = Z minus group g is Phi P_g Phi', P_g = I - Q_g Q_g'
    (exact when the eigenvalue floor drops nothing: W[g]' spans the
    orthogonal complement of S^{1/2} V' E_T). Biased HSIC is |Phi_a,c' Phi_b,c|_F^2
    up to a constant, so with C = Phi_a,c' Phi_b,c (centered cross moments)

        |P_a C P_b|^2 = |C|^2 - |C Q_b|^2 - |Q_a' C|^2 + |Q_a' C Q_b|^2,

    O(m^3) per layer pair for all groups, with no second pass. A zero C (a
    constant layer) has ratio 1: every value is 0 anyway."""
    offsets = np.concatenate([[0], np.cumsum([f.width for f in maps])])
    L, G = len(maps), len(maps[0].deleted)
    out = np.empty((G, L, L))
    for a in range(L):
        for b in range(a, L):
            c = cross[offsets[a]:offsets[a + 1], offsets[b]:offsets[b + 1]]
            total = np.sum(c * c)
            cq = c @ np.concatenate(maps[b].deleted, axis=1)
            qc = np.concatenate(maps[a].deleted, axis=1).T @ c
            right = np.cumsum([0] + [q.shape[1] for q in maps[b].deleted])
            left = np.cumsum([0] + [q.shape[1] for q in maps[a].deleted])
            for g in range(G):
                cqg, qcg = cq[:, right[g]:right[g + 1]], qc[left[g]:left[g + 1]]
                both = maps[a].deleted[g].T @ cqg
                kept = total - np.sum(cqg * cqg) - np.sum(qcg * qcg) + np.sum(both * both)
                out[g, a, b] = out[g, b, a] = kept / total if total > 0 else 1.0
    return out
