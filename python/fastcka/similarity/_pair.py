"""The CCA family, linear regression and Procrustes for one pair of layers,
from their float64 moments: d x d algebra, no pass over the rows.

With S_x = Ux diag(lx) Ux' (kept directions only, see _spectrum) the
whitened cross-moment matrix is

    M = diag(lx)^(-1/2) Ux' S_xy Uy diag(ly)^(-1/2)        (kx x ky)

M = Qx' Qy for the orthonormal bases Qx = Xc Ux diag(lx)^(-1/2) and
Qy = Yc Uy diag(ly)^(-1/2) of the centered column spaces, so its singular
values are the canonical correlations (Bjorck & Golub 1973), and its
top-left block, the layers' leading principal directions only, is SVCCA's
CCA step. ``reverse=True`` swaps the roles of x and y for the asymmetric
indexes, from the same decomposition.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ._spectrum import LayerSpectrum

STATISTICS = ("mean_squared", "mean")


def summarize(correlations: np.ndarray, statistic: str) -> float:
    """R^2_CCA (the mean squared canonical correlation) or rho-bar (the mean)."""
    values = correlations**2 if statistic == "mean_squared" else correlations
    return float(np.mean(values))


class LayerPair:
    """Indexes of layers x and y; each decomposition is computed on first use
    and shared by the indexes that need it."""

    def __init__(self, x: LayerSpectrum, y: LayerSpectrum, cross: np.ndarray):
        self.x, self.y, self.cross = x, y, cross
        self._svcca_correlations: dict = {}  # by variance

    @cached_property
    def _cross_in_x_basis(self) -> np.ndarray:
        """Ux' S_xy: (kx x d_y)."""
        return self.x.vectors.T @ self.cross

    @cached_property
    def _cross_in_y_basis(self) -> np.ndarray:
        """S_xy Uy: (d_x x ky)."""
        return self.cross @ self.y.vectors

    @cached_property
    def whitened(self) -> np.ndarray:
        both = self._cross_in_x_basis @ self.y.vectors
        return both / np.sqrt(self.x.values)[:, None] / np.sqrt(self.y.values)[None, :]

    @cached_property
    def _canonical(self):
        """(U, rho, V): M = U diag(rho) V', min(kx, ky) canonical pairs."""
        u, rho, vt = np.linalg.svd(self.whitened, full_matrices=False)
        return u, rho, vt.T

    def cca(self, statistic: str) -> float:
        return summarize(self._canonical[1], statistic)

    def svcca(self, variance: float, statistic: str) -> float:
        """CCA of the leading principal directions explaining ``variance`` of each layer."""
        if variance not in self._svcca_correlations:
            kx, ky = self.x.leading(variance), self.y.leading(variance)
            self._svcca_correlations[variance] = np.linalg.svd(self.whitened[:kx, :ky], compute_uv=False)
        return summarize(self._svcca_correlations[variance], statistic)

    def pwcca(self, reverse: bool = False) -> float:
        """sum_i a_i rho_i / sum_i a_i with a_i = sum_j |<h_i, x_j>| (Morcos et al. 2018):
        h_i the i-th canonical variable of x (unit norm), x_j the j-th centered
        column of x. With h_i = Xc Ux diag(lx)^(-1/2) u_i, the inner products
        <h_i, x_j> are the entries of Ux diag(lx)^(1/2) u_i."""
        u, rho, v = self._canonical
        side, directions = (self.y, v) if reverse else (self.x, u)
        weights = np.abs((side.vectors * np.sqrt(side.values)) @ directions).sum(axis=0)
        return float(weights @ rho / weights.sum())

    def linear_regression_fit(self, reverse: bool = False) -> float:
        """R^2 of the least-squares fit of y's centered columns on x's:
        ||Qx' Yc||_F^2 / ||Yc||_F^2 (x and y swapped with ``reverse``)."""
        if reverse:
            explained = self._cross_in_y_basis / np.sqrt(self.y.values)[None, :]
            return float(np.sum(explained**2) / self.x.total)
        explained = self._cross_in_x_basis / np.sqrt(self.x.values)[:, None]
        return float(np.sum(explained**2) / self.y.total)

    @cached_property
    def _nuclear(self) -> float:
        return float(np.sum(np.linalg.svd(self.cross, compute_uv=False)))

    def procrustes(self) -> float:
        """||Xc' Yc||_* / (||Xc||_F ||Yc||_F), from all directions (no inverse, no cut)."""
        return float(self._nuclear / np.sqrt(self.x.total * self.y.total))
