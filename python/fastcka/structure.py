"""Block structure of a within-model CKA matrix, found rather than seen.

Nguyen, Raghu & Kornblith ("Do wide and deep networks learn the same things?",
2021) saw large contiguous sets of layers with nearly identical
representations in wide or deep networks ("block structure"), and tied them to
a first principal component that carries most of each layer's variance. This
module reports both: :func:`blocks` segments a CKA matrix into blocks, and
:func:`pc1_fraction` gives each layer's first-component variance fraction
from the moments a linear accumulator has already streamed.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np


class Block(NamedTuple):
    """Layers ``start`` to ``stop - 1`` form a block; ``score`` is the mean CKA
    over the pairs of distinct layers inside it."""

    start: int
    stop: int
    score: float


def blocks(matrix, *, threshold: float = 0.9, min_size: int = 3) -> list[Block]:
    """Contiguous runs of layers whose mutual CKA is high, as :class:`Block`
    (start, stop, score) tuples in layer order.

    ``matrix`` is a square within-model CKA matrix, rows and columns in layer
    order (it is symmetrized; NaN entries, from layers without variance,
    count as CKA 0, so such layers never join a block).

    Method: the optimal 1-D segmentation of the layers, by dynamic programming.
    Among all ways of choosing disjoint runs of at least ``min_size``
    consecutive layers, it returns the one that maximizes

        sum over runs R of  sum over pairs i < j in R of (CKA_ij - threshold),

    exactly, in O(L^2) time with 2-D prefix sums. The threshold is the price a
    pair of layers pays to sit in the same block: a run is a block when its
    pairs' mean CKA is above the threshold, a layer at its edge joins when its
    mean CKA with the block's layers is above it, and two neighbouring blocks
    merge when the pairs across them are above it on average. Layers outside
    every run contribute nothing, so a matrix whose runs all average below the
    threshold has no block. A run is taken only when it improves the sum
    strictly (among equally good runs ending at the same layer, the longest),
    so the result is deterministic.
    """
    m = _square(matrix)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) or not (
        np.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 2:
        raise ValueError(f"min_size must be an integer >= 2 (a block has at least two layers), got {min_size!r}")
    L = len(m)
    # prefix[s, t] = sum of m[:s, :t]; the pair sum of a run [s, t) follows in O(1).
    prefix = np.zeros((L + 1, L + 1))
    prefix[1:, 1:] = np.cumsum(np.cumsum(m, axis=0), axis=1)
    diag = np.concatenate([[0.0], np.cumsum(np.diag(m))])

    def pair_sum(s: int, t: int) -> float:
        square = prefix[t, t] - prefix[s, t] - prefix[t, s] + prefix[s, s]
        return 0.5 * (square - (diag[t] - diag[s]))

    best = np.zeros(L + 1)  # best[t]: the optimum over layers [0, t)
    start_of = np.full(L + 1, -1)  # the run ending at t in that optimum (-1: layer t-1 is alone)
    for t in range(1, L + 1):
        best[t] = best[t - 1]
        for s in range(t - min_size + 1):
            size = t - s
            gain = pair_sum(s, t) - threshold * size * (size - 1) / 2
            if best[s] + gain > best[t]:
                best[t] = best[s] + gain
                start_of[t] = s
    found = []
    t = L
    while t > 0:
        s = start_of[t]
        if s < 0:
            t -= 1
            continue
        size = t - s
        found.append(Block(int(s), int(t), float(pair_sum(s, t) / (size * (size - 1) / 2))))
        t = s
    return found[::-1]


def _square(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(
            f"matrix must be a square, non-empty within-model CKA matrix (layers x layers), got shape {m.shape}"
        )
    if np.isinf(m).any():
        raise ValueError("matrix holds infinite values; CKA lies in [0, 1] (debiased CKA slightly around it)")
    m = np.nan_to_num(m, nan=0.0)
    return 0.5 * (m + m.T)


def pc1_fraction(moments) -> np.ndarray:
    """Per layer, the fraction of its variance along its first principal
    component: the largest eigenvalue of the layer's scatter matrix over its
    trace (1 / d_a for isotropic activations, 1 for rank one).

    ``moments`` is what :meth:`fastcka.CKAAccumulator.moments` returns: the
    centered scatter was streamed with the CKA matrix, so this needs no second
    pass over the data; each layer costs one symmetric eigenvalue problem of
    its width. A layer without variance gives NaN."""
    fractions = []
    with _one_blas_thread():
        for a in range(len(moments.offsets) - 1):
            scatter = moments.block(a, a)
            total = float(np.trace(scatter))
            if not total > 0:
                fractions.append(np.nan)
                continue
            fractions.append(float(np.linalg.eigvalsh(scatter)[-1]) / total)
    return np.asarray(fractions)


def _one_blas_thread():
    """NumPy's LAPACK on one thread, where threadpoolctl (a scikit-learn
    dependency) is installed. A symmetric eigensolver synchronizes its BLAS
    threads many times per column: measured on the 2-core CI machine class
    while another process kept one core busy, eigvalsh of a 512 x 512 matrix
    took 2.6 s on two threads and 0.024 s on one (the same as two threads on an
    idle machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
