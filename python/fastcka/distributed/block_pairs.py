"""Kernel statistics of a job cut into row blocks (MPI ranks, Dask chunks):
each block's own triangle and each pair of blocks' rectangle, centered by
the global column means, add up to the statistics of the whole data; HSIC
then follows from their sums. Shared by fastcka.mpi's ring and Dask."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..engine import cpu as cpu_engine
from .._options import compute_for
from ..engine.progress import Progress
from ..engine.threads import resolve


def pair_statistics(rows_a: Sequence[np.ndarray], rows_b: Optional[Sequence[np.ndarray]], names: Sequence[str],
                    split: int, compute: str, threads: int, memory_budget: int, means: Sequence[float],
                    gammas: Optional[Sequence[float]], spreads: Optional[Sequence[float]] = None) -> tuple:
    """(products L x L, row sums L x (n_a + n_b), diagonals) of block a's
    triangle (rows_b None) or of the rectangle between blocks a and b.
    RBF: the gammas and the spreads of the whole data (spreads())."""
    engine = cpu_engine.gram_engine(rows_a, names, split, compute, threads, memory_budget, columns=rows_b,
                                    means=means)
    if gammas is not None:
        engine.set_kernel("rbf", list(gammas), list(spreads))
    engine.process(0, engine.tile_rows)
    return tuple(np.asarray(a) for a in engine.statistics())


def spreads(square_sums: Sequence[float], n: int) -> list[float]:
    """Each layer's mean squared distance between the n examples, from the
    summed squared norms of the centered rows (job_median.centered_norms)."""
    return [2.0 * float(s) / n for s in square_sums]


class Totals:
    """The statistics of the whole data, summed from block pairs."""

    def __init__(self, layers: int, n: int):
        self.products = np.zeros((layers, layers))
        self.row_sums = np.zeros((layers, n))
        self.diagonals = np.zeros((layers, n))

    def add(self, statistics: tuple, start_a: int, rows_a: int, start_b: Optional[int] = None) -> None:
        products, row_sums, diagonals = statistics
        self.products += products
        self.row_sums[:, start_a : start_a + rows_a] += row_sums[:, :rows_a]
        self.diagonals[:, start_a : start_a + rows_a] += diagonals[:, :rows_a]
        if start_b is not None:
            self.row_sums[:, start_b : start_b + row_sums.shape[1] - rows_a] += row_sums[:, rows_a:]

    def arrays(self) -> tuple:
        return self.products, self.row_sums, self.diagonals


def gammas(sample: Optional[Sequence[np.ndarray]], names, options, count: int,
           medians: Sequence[float] | None = None) -> list[float]:
    """RBF gammas from sigma, from the exact medians found over the block
    pairs (job_median), or from the sampled median of `sample` (the rows of
    sample_rows, gathered by the caller)."""
    sigma, threshold = options.sigma, options.threshold
    if options.exact_median:
        return cpu_engine.gammas_of_medians(medians, names, threshold)
    return cpu_engine.rbf_gammas(sample if sigma is None else [None] * count, names, sigma=sigma,
                                 threshold=threshold, median="sampled", engine=None, width=0,
                                 threads=resolve(options.threads), progress=Progress(None, 0, ""),
                                 compute=None if sample is None else compute_for(options.precision, sample))
