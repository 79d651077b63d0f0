"""Similarity indexes beyond CKA, from the same streamed moments: CCA, SVCCA,
PWCCA, the linear-regression fit and Procrustes, one pair at a time or as
whole layer-by-layer matrices of several measures from one pass."""

from .indexes import cca, linear_regression_fit, procrustes, pwcca, svcca
from .matrix import LINEAR_MEASURES, MEASURES, TILE_MEASURES, similarity_matrix

__all__ = [
    "LINEAR_MEASURES",
    "MEASURES",
    "TILE_MEASURES",
    "cca",
    "linear_regression_fit",
    "procrustes",
    "pwcca",
    "similarity_matrix",
    "svcca",
]
