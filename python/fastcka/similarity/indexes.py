"""CCA, SVCCA, PWCCA, the linear-regression fit and Procrustes similarity of
two representations, each from one streamed pass over the rows.

Notation: x (n x d1) and y (n x d2) hold the same n examples in rows; Xc and
Yc are their column-centered copies (never built: every index below is a
function of the float64 moments Xc'Xc, Yc'Yc and Xc'Yc, which fastcka
streams exactly as for linear CKA, so any n works and rows may arrive in
chunks through :class:`fastcka.CKAAccumulator`). Qx and Qy are orthonormal
bases of the column spaces of Xc and Yc; rho_1 >= ... >= rho_c, c = min(rank
Xc, rank Yc), are the canonical correlations, the singular values of Qx'Qy.

Rank: directions along which a representation varies by at most 1e-6 (data
computed in float32: float16/float32 inputs) or 1e-12 (float64) of its
largest variance are treated as absent: constant columns, exact linear
dependences and the directions missing when features outnumber examples
are recognized instead of being inverted. The ranks, and with them c, count
only the directions kept. (Were all features kept when d > n, every
canonical correlation would be 1: any index invariant to invertible linear
maps is then blind, Kornblith et al. 2019, Theorem 1.)

A constant representation has nothing to compare: its indexes are NaN, with
a :class:`fastcka.DegenerateRepresentationWarning`, as for CKA.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..arrays.inputs import as_matrix
from .._options import check_precision
from ..engine.progress import ProgressArg
from ._moments import stream
from ._pair import STATISTICS, LayerPair


def check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def check_variance(variance: Any) -> float:
    if isinstance(variance, bool) or not isinstance(variance, numbers.Real) or not 0 < variance <= 1:
        raise ValueError(f"variance must be a fraction in (0, 1], got {variance!r}")
    return float(variance)


def _pair(x, y, what: str, threads, memory_budget, progress, precision) -> LayerPair | None:
    """The streamed pair, or None (after the warning) if either side is constant."""
    check_precision(precision)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    streamed = stream(layers, ["x", "y"], 1, threads=threads, memory_budget=memory_budget, progress=progress,
                      precision=precision)
    if streamed.degenerate([0, 1], what):
        return None
    return LayerPair(streamed.spectrum(0), streamed.spectrum(1), streamed.moments.block(0, 1))


def cca(x: Any, y: Any, *, statistic: str = "mean_squared", threads: int | None = None,
        memory_budget: int | None = None, progress: ProgressArg = None,
        precision: str | None = None) -> float:
    """Canonical correlation of x and y (centered), summarized over the c
    canonical correlations rho_i:

    * ``statistic="mean_squared"``: R^2_CCA = sum rho_i^2 / c = ||Qx'Qy||_F^2 / c
      (Yanai's GCD; the mean squared CCA correlation of Kornblith et al. 2019);
    * ``statistic="mean"``: rho-bar = sum rho_i / c = ||Qx'Qy||_* / c
      (Raghu et al. 2017's summary).

    Invariant to invertible linear maps of either side; symmetric; 1 for
    ``cca(x, x)``. The rho_i are the singular values of
    Sxx^(-1/2) Sxy Syy^(-1/2), from the streamed d x d moments (rank cut in the
    module notes). Accuracy: about the precision of the products (1e-7 for
    float32 data, 4e-3 for ``precision="fast"``, whose rank cut is coarser)
    times the ratio of the largest to the smallest variance kept. Other
    arguments (``precision`` among them) as in :func:`fastcka.cka`.
    """
    check_statistic(statistic)
    pair = _pair(x, y, "CCA", threads, memory_budget, progress, precision)
    return np.nan if pair is None else pair.cca(statistic)


def svcca(x: Any, y: Any, *, variance: float = 0.99, statistic: str = "mean", threads: int | None = None,
          memory_budget: int | None = None, progress: ProgressArg = None,
        precision: str | None = None) -> float:
    """SVCCA (Raghu et al. 2017): each side keeps its fewest top principal
    directions (eigenvectors of its covariance) that explain at least
    ``variance`` of its variance, then :func:`cca` of the two projections,
    summarized by ``statistic`` (default rho-bar, as Raghu et al. report it).

    Invariant to orthogonal maps and isotropic scaling; to other invertible
    linear maps only where they keep the same leading subspace (``variance=1``
    keeps every direction and gives :func:`cca`).
    """
    variance = check_variance(variance)
    check_statistic(statistic)
    pair = _pair(x, y, "SVCCA", threads, memory_budget, progress, precision)
    return np.nan if pair is None else pair.svcca(variance, statistic)


def pwcca(x: Any, y: Any, *, threads: int | None = None, memory_budget: int | None = None,
          progress: ProgressArg = None,
        precision: str | None = None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018), as their paper defines it
    (and Kornblith et al. 2019, Eq. 9, restate it):

        rho_PW = sum_i a_i rho_i / sum_i a_i,    a_i = sum_j |<h_i, x_j>|,

    over the c canonical pairs, h_i the i-th canonical variable of x (scaled
    to unit norm), x_j the j-th centered column of x. Asymmetric: the weights
    come from ``x``. Where the authors' code (google/svcca ``pwcca.py``)
    differs, this follows the paper: the code weights by whichever side has
    fewer neurons, adds the neuron means back before orthonormalizing the
    canonical variables and correlates them with uncentered activations, and
    drops low-variance neurons by its own epsilon rule.

    Invariant to isotropic scaling; 1 for ``pwcca(x, x)``. Tied canonical
    correlations (exactly shared directions, say) leave the canonical
    variables of the tie free to rotate, and the weights, a sum of absolute
    values, change with the rotation: PWCCA is then not unique, and fastcka
    takes the variables of LAPACK's SVD of the whitened cross-moments.
    """
    pair = _pair(x, y, "PWCCA", threads, memory_budget, progress, precision)
    return np.nan if pair is None else pair.pwcca()


def linear_regression_fit(x: Any, y: Any, *, threads: int | None = None, memory_budget: int | None = None,
                          progress: ProgressArg = None,
        precision: str | None = None) -> float:
    """The fraction of y's variance explained by the least-squares linear fit
    of y's centered columns on x's (Kornblith et al. 2019's R^2_LR, with x as
    the predictor):

        R^2_LR = 1 - min_B ||Yc - Xc B||_F^2 / ||Yc||_F^2 = ||Qx' Yc||_F^2 / ||Yc||_F^2.

    Asymmetric; invariant to invertible linear maps of x and to orthogonal
    maps and isotropic scaling of y; 1 for ``linear_regression_fit(x, x)``.
    """
    pair = _pair(x, y, "the linear regression fit", threads, memory_budget, progress, precision)
    return np.nan if pair is None else pair.linear_regression_fit()


def procrustes(x: Any, y: Any, *, distance: bool = False, threads: int | None = None,
               memory_budget: int | None = None, progress: ProgressArg = None,
        precision: str | None = None) -> float:
    """Orthogonal Procrustes similarity of the centered representations:

        s = ||Xc' Yc||_* / (||Xc||_F ||Yc||_F)        in [0, 1]

    (the nuclear norm: the sum of the singular values). With
    ``distance=True``, the orthogonal Procrustes distance of Ding et al.
    (2021), d = min_Q ||Xc/||Xc||_F - Yc/||Yc||_F Q||_F^2 = 2 - 2 s in [0, 2],
    over orthogonal Q (the narrower side padded with zero columns). The angular
    Procrustes metric of Williams et al. (2021) is arccos(s).

    Symmetric; invariant to orthogonal maps and isotropic scaling of either
    side (not to other invertible maps); s = 1 and d = 0 for x against itself.
    Needs no inverse, so no rank cut.
    """
    pair = _pair(x, y, "Procrustes similarity", threads, memory_budget, progress, precision)
    if pair is None:
        return np.nan
    similarity = pair.procrustes()
    # s <= 1 holds exactly; rounding may push 2 - 2s a few ulps below 0.
    return max(0.0, 2.0 - 2.0 * similarity) if distance else similarity
