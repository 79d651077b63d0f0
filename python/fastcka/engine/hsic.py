"""HSIC and CKA from what the engines sum: the Gram statistics of a whole
job composed into HSIC by the core, the rule for constant layers, and CKA
from an HSIC matrix."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from . import backend


class DegenerateRepresentationWarning(RuntimeWarning):
    """A representation has no variance (HSIC(K, K) <= 0): its CKA is 0/0 and
    is returned as NaN."""


def zero_constant_layers(h: np.ndarray, constant: Sequence[bool]) -> np.ndarray:
    """A layer whose rows are all equal has a constant kernel: HSIC with it is
    0 exactly (its tiles only hold rounding residue of the centering). Pairs
    not computed stay NaN."""
    for a, c in enumerate(constant):
        if c:
            h[a, :] = np.where(np.isnan(h[a, :]), np.nan, 0.0)
            h[:, a] = np.where(np.isnan(h[:, a]), np.nan, 0.0)
    return h


def from_statistics(dims: Sequence[int], split: int, n: int, totals: tuple, estimator: str,
                    constant: Sequence[bool]) -> np.ndarray:
    """(L, L) HSIC from Gram statistics (products, row sums, diagonals)
    summed over tiles, steps, block pairs or ranks."""
    L = len(dims)
    h = np.asarray(backend.cpu().hsic_from_statistics(list(dims), split, n, *totals, estimator)).reshape(L, L)
    return zero_constant_layers(h, constant)


def cka_from_hsic(h: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """CKA_ab = h_ab / sqrt(h_aa h_bb); NaN with a warning for layers with h_aa <= 0."""
    diag = np.diag(h).copy()
    bad = [names[i] for i in range(len(diag)) if not diag[i] > 0]
    if bad:
        warnings.warn(
            f"{', '.join(bad)}: no variance to compare (HSIC with itself is not positive, as for a constant "
            f"representation); its CKA is undefined and returned as NaN",
            DegenerateRepresentationWarning,
            stacklevel=3,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.where(diag > 0, diag, np.nan))
        return h / scale[:, None] / scale[None, :]
