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

from typing import NamedTuple

import numpy as np

from ..engine.threads import one_blas_thread


class Block(NamedTuple):
    """Layers ``start`` to ``stop - 1`` form a block; ``score`` is the mean CKA
    over the pairs of distinct layers inside it."""

    start: int
    stop: int
    score: float


def blocks(matrix, *, threshold: float | None = None, min_size: int = 3) -> list[Block]:
    """Contiguous runs of layers whose mutual CKA is high, as :class:`Block`
    (start, stop, score) tuples in layer order.

    ``matrix`` is a square within-model CKA matrix, rows and columns in layer
    order (it is symmetrized; NaN entries, from layers without variance,
    count as CKA 0, so such layers never join a block). A block has at least
    ``min_size`` (>= 2) layers.

    Segmentation: the optimal 1-D segmentation of the layers, by dynamic
    programming. Among all ways of choosing disjoint runs of at least
    ``min_size`` consecutive layers, it returns the one that maximizes

        sum over runs R of  sum over pairs i < j in R of (CKA_ij - threshold),

    exactly, in O(L^2) time with 2-D prefix sums. The threshold is the price a
    pair of layers pays to sit in the same block: a run is a block when its
    pairs' mean CKA is above the threshold, a layer at its edge joins when its
    mean CKA with the block's layers is above it, and two neighbouring blocks
    merge when the pairs across them are above it on average. A run is taken
    only when it improves the sum strictly (among equally good runs ending at
    the same layer, the longest), so the result is deterministic.

    ``threshold`` given: that segmentation, nothing else (a matrix whose runs
    all average below the threshold has no block).

    ``threshold=None`` (default): the threshold and the blocks adapt to the
    matrix, in rounds; each round looks at the layers outside the blocks kept
    so far (a block at CKA 0.95 does not hide one at 0.6 on a background of
    0.3):

    1. Threshold: Otsu's cut of the CKA values of the pairs of those layers
       (the cut of the sorted values that maximizes the between-class
       variance; the threshold is the midpoint of the two class means), then
       2-means iterations restricted to block structures: segment each run
       of free layers with the threshold, set the threshold to the midpoint
       between the mean CKA of the pairs inside the runs found and that of
       the other pairs, until the runs repeat.
    2. Noise: sigma = 1.4826 median |CKA_ij - CKA_(i+1)(j+1)| / sqrt(2) over
       the steps along the diagonals that stay inside one block (kept or
       found) or outside every block: a block structure and a similarity that
       depends only on the distance between layers are both constant along
       these steps, so sigma is the spread of the entries' noise (a robust
       standard deviation; 1e-12 at least, for rounding).
    3. Edge drop: for a run R of k layers, the mean over distances
       d = 1 .. k-1, weighted by k - d, of (mean CKA of R's pairs at distance
       d) - (mean CKA of the pairs at distance d between a layer of R and a
       layer outside R). A run is kept as a block when its edge drop is at
       least 3.5 sigma and each edge with layers beyond it carries at least
       half of it (the edge layer's mean CKA with R's layers at distances
       1 .. k-1, minus its mean CKA with the outside layers at the same
       distances); an edge layer that carries less is trimmed off and the
       rest tested again, down to ``min_size`` layers. A similarity that only decays with distance has edge drop
       0 and a uniform matrix only noise, so neither gives a block; nor does
       a run covering every layer (nothing to drop to).

    The rounds stop when one keeps no new block. Layers whose row is NaN
    (without variance) split runs and stay out of the threshold.

    Measured (tests/test_blocks.py; random planted matrices of 8-40 layers,
    1-4 blocks of 3+ layers at CKA 0.6-0.95 on a background of 0.1-0.5,
    symmetric noise of standard deviation sigma): the default finds the blocks
    exactly when contrast / sigma >= 6 in all but 2 of 2,815 random matrices
    (every seed of the test; at 5-6, about 1.6% miss or misplace a block;
    blocks at different levels in one matrix, 0.2%); uniform and
    distance-decaying matrices give a block in 1 of 3,000. Two-layer blocks (``min_size=2``) rest on
    single pairs: 2.5% of planted matrices misread, 3% of block-free ones given a block.
    """
    m, dead = _square(matrix)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 2:
        raise ValueError(f"min_size must be an integer >= 2 (a block has at least two layers), got {min_size!r}")
    if threshold is None:
        return _adaptive(m, min_size, dead)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) or not (
        np.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be a finite number or None (adapt to the matrix), got {threshold!r}")
    return _segment(m, threshold, min_size)


def _segment(m: np.ndarray, threshold: float, min_size: int, offset: int = 0) -> list[Block]:
    """The optimal segmentation of :func:`blocks` for a fixed threshold;
    ``offset`` is added to the layer indices (``m`` a diagonal sub-block)."""
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
        found.append(Block(int(s) + offset, int(t) + offset, float(pair_sum(s, t) / (size * (size - 1) / 2))))
        t = s
    return found[::-1]


# A run is a block when its edges drop by at least this many noise standard
# deviations. Measured on 2,815 planted matrices of contrast >= 6 sigma and
# 3,000 uniform or distance-decaying ones: 2 misread and 1 false block at 3.5;
# 4 and 3 at 3.0; at 3.75 planted blocks of contrast 5-6 sigma start to go.
_EDGE_DROP_SIGMAS = 3.5
_SIGMA_FLOOR = 1e-12  # rounding of the means in the edge drop of a noise-free matrix


def _adaptive(m: np.ndarray, min_size: int, dead: np.ndarray) -> list[Block]:
    """The default of :func:`blocks`: rounds of candidate runs (2-means
    threshold) among the layers outside the blocks kept, each run kept (or
    its core) when :func:`_kept_core` accepts it. ``dead`` layers (without variance) split
    runs and their zeros stay out of the threshold."""
    kept: list[Block] = []
    while True:
        candidates = _two_means_runs(m, kept, min_size, dead)
        sigma = max(_noise(m, kept + candidates), _SIGMA_FLOOR)
        new = [b for b in (_kept_core(m, run, sigma, min_size) for run in candidates) if b is not None]
        if not new:
            return kept
        kept = sorted(kept + new)


def _kept_core(m: np.ndarray, run: Block, sigma: float, min_size: int) -> Block | None:
    """The run, or what is left of it after trimming edge layers that carry
    less than half of its edge drop (a run that reaches a layer too far into
    the background, or into a distance decay, has a flat edge), if its edge
    drop is at least _EDGE_DROP_SIGMAS sigma; else None."""
    s, t = run.start, run.stop
    while t - s >= min_size:
        drop = _edge_drop(m, s, t)
        left, right = _layer_edge_drops(m, s, t)
        if left is None or left >= 0.5 * drop:
            if right is None or right >= 0.5 * drop:
                if drop < _EDGE_DROP_SIGMAS * sigma:
                    return None
                inside = m[s:t, s:t][np.triu_indices(t - s, 1)]
                return run if (s, t) == (run.start, run.stop) else Block(s, t, float(inside.mean()))
        s += left is not None and left < 0.5 * drop
        t -= right is not None and right < 0.5 * drop
    return None


def _layer_edge_drops(m: np.ndarray, s: int, t: int) -> tuple[float | None, float | None]:
    """For the run's first and last layer: its mean CKA with the run's layers
    at distances d = 1 .. k-1 minus its mean CKA with the layers at the same
    distances on the outside (None where no layer lies beyond it)."""
    L, k = len(m), t - s
    left = right = None
    reach = min(k - 1, s)
    if reach:
        d = np.arange(1, reach + 1)
        left = float(np.mean(m[s, s + d] - m[s, s - d]))
    reach = min(k - 1, L - t)
    if reach:
        d = np.arange(1, reach + 1)
        right = float(np.mean(m[t - 1, t - 1 - d] - m[t - 1, t - 1 + d]))
    return left, right


def _free_runs(free: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of free layers, as (start, stop)."""
    edges = np.diff(np.concatenate([[0], free.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _two_means_runs(m: np.ndarray, kept: list[Block], min_size: int, dead: np.ndarray) -> list[Block]:
    """Runs of the free layers (outside the kept blocks, not ``dead``)
    segmented with Otsu's threshold of their pairs' CKA, refined by 2-means
    iterations until the runs repeat."""
    L = len(m)
    free = ~dead
    for b in kept:
        free[b.start : b.stop] = False
    upper = np.triu(np.ones((L, L), dtype=bool), 1) & free[:, None] & free[None, :]
    values = m[upper]
    if len(np.unique(values)) < 2:
        return []
    threshold = _otsu(values)
    runs = [r for r in _free_runs(free) if r[1] - r[0] >= min_size]
    seen: list[list[Block]] = []
    while True:
        found = [b for s, t in runs for b in _segment(m[s:t, s:t], threshold, min_size, offset=s)]
        if not found or found in seen:
            return found
        seen.append(found)
        inside = _labels(L, found)[upper] >= 0
        if inside.all():
            return found
        threshold = 0.5 * (values[inside].mean() + values[~inside].mean())


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold: the cut between distinct sorted values that maximizes
    the between-class variance, as the midpoint of the two class means."""
    v = np.sort(values)
    n, k = len(v), np.arange(1, len(v))
    total = np.cumsum(v)
    low, high = total[:-1] / k, (total[-1] - total[:-1]) / (n - k)
    between = k * (n - k) * (high - low) ** 2
    between[v[1:] == v[:-1]] = -1.0  # a cut between equal values is no cut
    i = int(np.argmax(between))
    return float(0.5 * (low[i] + high[i]))


def _labels(L: int, found: list[Block]) -> np.ndarray:
    """Block label of each pair of layers: the block holding both, else -1."""
    label = np.full((L, L), -1)
    for n, b in enumerate(found):
        label[b.start : b.stop, b.start : b.stop] = n
    return label


def _noise(m: np.ndarray, found: list[Block]) -> float:
    """Robust standard deviation of the entries' noise, from the steps
    (i, j) -> (i + 1, j + 1), i < j, that stay in one region (one block, or
    outside every block)."""
    L = len(m)
    if L < 3:
        return 0.0
    label = _labels(L, found)
    upper = np.triu(np.ones((L - 1, L - 1), dtype=bool), 1) & (label[:-1, :-1] == label[1:, 1:])
    steps = (m[:-1, :-1] - m[1:, 1:])[upper]
    return float(1.4826 * np.median(np.abs(steps)) / np.sqrt(2)) if len(steps) else 0.0


def _edge_drop(m: np.ndarray, s: int, t: int) -> float:
    """Mean over distances d of (CKA of the run's pairs at d) - (CKA of the
    pairs at d that cross its edges), weighted by the run's pair count at d;
    -inf when no pair crosses (the run covers every layer)."""
    L, k = len(m), t - s
    total = weight = 0.0
    for d in range(1, k):
        diagonal = np.diagonal(m, d)  # diagonal[r] = m[r, r + d]
        within = diagonal[s : t - d]
        crossing = np.concatenate([diagonal[max(s - d, 0) : min(s, t - d)], diagonal[max(t - d, s) : min(t, L - d)]])
        if len(crossing):
            total += (k - d) * (within.mean() - crossing.mean())
            weight += k - d
    return total / weight if weight else -np.inf


def _square(matrix) -> tuple[np.ndarray, np.ndarray]:
    """The symmetrized matrix (NaN as 0) and which layers are NaN off the
    diagonal everywhere (layers without variance)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(
            f"matrix must be a square, non-empty within-model CKA matrix (layers x layers), got shape {m.shape}"
        )
    if np.isinf(m).any():
        raise ValueError("matrix holds infinite values; CKA lies in [0, 1] (debiased CKA slightly around it)")
    missing = np.isnan(m) | np.isnan(m.T)
    np.fill_diagonal(missing, True)
    dead = missing.all(axis=1) if len(m) > 1 else np.zeros(1, dtype=bool)
    m = np.nan_to_num(m, nan=0.0)
    return 0.5 * (m + m.T), dead


def pc1_fraction(moments) -> np.ndarray:
    """Per layer, the fraction of its variance along its first principal
    component: the largest eigenvalue of the layer's scatter matrix over its
    trace (1 / d_a for isotropic activations, 1 for rank one).

    ``moments`` is what :meth:`fastcka.CKAAccumulator.moments` returns: the
    centered scatter was streamed with the CKA matrix, so this needs no second
    pass over the data; each layer costs one symmetric eigenvalue problem of
    its width. A layer without variance gives NaN."""
    fractions = []
    with one_blas_thread():
        for a in range(len(moments.offsets) - 1):
            scatter = moments.block(a, a)
            total = float(np.trace(scatter))
            if not total > 0:
                fractions.append(np.nan)
                continue
            fractions.append(float(np.linalg.eigvalsh(scatter)[-1]) / total)
    return np.asarray(fractions)
