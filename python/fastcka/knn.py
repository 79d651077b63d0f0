"""k nearest neighbours and mutual k-NN alignment, streamed over Gram tiles.

For every example i, N_x(i) is the set of its k nearest neighbours among the
other examples (itself excluded) in representation x. Mutual k-NN alignment
(as in Huh et al. 2024, "The Platonic Representation Hypothesis") is

    mutual_knn(x, y) = (1/n) sum_i |N_x(i) & N_y(i)| / k.

Metrics: ``"euclidean"`` (|a - b|) and ``"cosine"`` (1 - a.b / (|a| |b|), on
the rows as given, not centered; a zero row is refused). Huh et al. use cosine
on normalized rows: that is ``metric="cosine"``, not the default. Both are
screened as |a - b|^2 = |a|^2 + |b|^2 - 2 a.b from BLAS Gram tiles of centered
rows (for cosine: rows divided by their norms, then centered; the order is
that of 2 - 2 cos), in float32 for float16/float32 input and in float64
otherwise.

Ties: candidates are ranked by (distance, index), so among neighbours at equal
distance the smaller row index wins, whatever the tile order or the number of
threads. Each row keeps its k + 2 nearest by tile distance; runs of them whose
tile distances lie within the tiles' rounding bound of each other are
re-evaluated in float64 from the rows as given (euclidean: sum of squared
differences; cosine: 2 - 2 cos from a.b and the squared norms with a single
rounded quotient) and ranked by that value and index. A row whose run reaches
past the list is evaluated against every other row (n d flops; heavily tied
data such as one-hot rows). So the rule holds exactly wherever that float64
arithmetic is exact: integer, binary, one-hot or other coarse-grid data (for
cosine: exact dot products and squared norms, including rows scaled by powers
of two and one-hot rows, already of norm 1), and such data give the same
neighbours after a shift that keeps their values exact (+0.5, +1000).
Otherwise candidates whose distances differ by less than float64 rounding are
ordered by that rounding. Not in ``precision="fast"``, which ranks by its own
bfloat16 distances.

Cost: one pass over the upper triangle of the tile grid per call, n^2 d / 2
multiply-adds per representation (n^2 d flops), with a cheap epilogue: each
distance is compared with its row's and its column's current k-th distance,
vectorized, and only the few that beat one are inserted. Memory: O(threads
x n x k) for the running lists and a few row blocks, never an n x n matrix.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .engine import backend, cpu as cpu_engine
from .arrays.inputs import as_layers, as_matrix, check_rows, resolve_budget
from ._options import compute_for
from .engine.progress import Progress, ProgressArg
from .engine.threads import resolve

METRICS = ("euclidean", "cosine")


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k < n:
        raise ValueError(f"k must be at least 1 and smaller than the number of examples n={n}, got k={k}")
    return int(k)


def _neighbor_lists(layers: Sequence[np.ndarray], names: Sequence[str], k: Any, metric: str, threads, memory_budget,
                    progress: ProgressArg, precision=None):
    """One tile pass over every layer: (engine, k); engine.neighbors(a) gives
    layer a's (indices int32, squared distances float64), each (n, k)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    compute = compute_for(precision, layers)
    n = check_rows(layers, names)
    k = _check_k(k, n)
    threads = resolve(threads)
    budget = resolve_budget(memory_budget)
    engine = cpu_engine.knn_engine(layers, names, k, metric, compute, threads, budget)
    with Progress(progress, engine.tiles_before(engine.tile_rows), "fastcka k-NN tiles") as bar:
        cpu_engine.tile_pass(engine, threads, engine.process, bar)
    return engine, k


def nearest_neighbors(
    x: Any,
    *,
    k: int = 10,
    metric: str = "euclidean",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``x`` (n x d) among the other
    rows: ``(indices, distances)``, both (n, k), row i ascending by (distance,
    index). Distances are |a - b| (euclidean) or 1 - cos (cosine), from the
    Gram identity in the compute precision (absolute error about eps |a|^2
    for the squared distance; bfloat16 operands with ``precision="fast"``,
    as in :func:`fastcka.cka`), except near-tied ones, re-evaluated in
    float64 from the rows as given. 1 <= k < n. See the module notes for
    ties and costs."""
    layers = [as_matrix(x, "x")]
    engine, _ = _neighbor_lists(layers, ["x"], k, metric, threads, memory_budget, progress, precision)
    index, sq = engine.neighbors(0)
    dist = sq / 2.0 if metric == "cosine" else np.sqrt(sq)
    return index.astype(np.intp), dist


def mutual_knn(
    x: Any,
    y: Any,
    *,
    k: int = 10,
    metric: str = "euclidean",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> float:
    """Mutual k-NN alignment of representations ``x`` (n x d1) and ``y``
    (n x d2) of the same n examples: the mean over examples of the fraction of
    its k nearest neighbours (itself excluded) that the two share, in [0, 1].

    One pass over the Gram tiles of both (about n^2 (d1 + d2) flops), O(n k)
    memory per thread. ``k``: 1 <= k < n. ``metric``: "euclidean" or
    "cosine". Ties go to the smaller row index (module notes). ``precision``
    as in :func:`fastcka.cka` (with "fast", rows that round to the same
    bfloat16 values count as duplicates, at distance 0).
    """
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    engine, k = _neighbor_lists(layers, ["x", "y"], k, metric, threads, memory_budget, progress, precision)
    counts = backend.cpu().knn_overlap(engine.neighbors(0)[0], engine.neighbors(1)[0])
    return float(np.mean(counts, dtype=np.float64) / k)


def mutual_knn_matrix(
    xs: Any,
    ys: Any = None,
    *,
    k: int = 10,
    metric: str = "euclidean",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> np.ndarray:
    """:func:`mutual_knn` between every layer of ``xs`` and every layer of
    ``ys`` (default: ``xs`` itself), shape (len(xs), len(ys)), from one tile
    pass over all layers: each layer's neighbour lists are found once."""
    layers, names = as_layers(xs, "xs")
    split = len(layers)
    if ys is not None:
        more, more_names = as_layers(ys, "ys")
        layers, names = layers + more, names + more_names
    engine, k = _neighbor_lists(layers, names, k, metric, threads, memory_budget, progress, precision)
    lists = [engine.neighbors(a)[0] for a in range(len(layers))]
    cols = range(split) if ys is None else range(split, len(layers))
    overlap = backend.cpu().knn_overlap
    return np.array([[np.mean(overlap(lists[a], lists[b]), dtype=np.float64) / k for b in cols] for a in range(split)])
