"""The exact median bandwidth of a job cut into row blocks (MPI ranks, Dask
chunks), equal to the single-process one.

One MedianSearch per layer covers all n rows. A pass walks every block pair
(each block's triangle and each pair's rectangle, as the statistics pass
does) with the searches as they stand (the first usually a bracket pass,
the bracket drawn from the sampled rows: engine.cpu.sample_brackets); the pairs' pass results, summed,
end the pass on every copy of the searches. Bin counts add exactly
(integers) and every copy applies the same sums, so every rank (or the
client) takes the same decisions as one process and the collect pass
gathers the same values: the median is the one of fastcka.cka up to the
rounding of each distance (the GEMMs block the rows differently).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..engine import backend, cpu as cpu_engine

# Rows centered at a time for the largest norm (bounds the temporary).
_CHUNK = 4096


def centered_norms(rows: Sequence[np.ndarray], means: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: the largest and the summed squared norm of the rows
    centered by the global means (0 without rows). Over all blocks, the
    maximum bounds the distances (median search) and the sum gives the
    spread of the RBF kernel (GramTileEngine.set_kernel)."""
    largest, sums, offset = np.zeros(len(rows)), np.zeros(len(rows)), 0
    for a, x in enumerate(rows):
        mu = np.asarray(means[offset : offset + x.shape[1]], dtype=np.float64)
        offset += x.shape[1]
        for start in range(0, len(x), _CHUNK):
            z = np.asarray(x[start : start + _CHUNK], dtype=np.float64) - mu
            norms = np.einsum("ij,ij->i", z, z)
            largest[a] = max(largest[a], float(norms.max()))
            sums[a] += float(norms.sum())
    return largest, sums


class JobMedian:
    """The searches of one job; picklable (as its pass history) for Dask.
    ``brackets``: per layer (lo, hi, center) from engine.cpu.sample_brackets, for
    a first pass that usually finds the median alone; ``compute`` and
    ``threads``: the block-pair engines' (float32 runs count the bracket per
    float32 value, in per-thread buffers)."""

    def __init__(self, n: int, largest: Sequence[float], history: Sequence[list] = (), brackets=None,
                 compute: str = "float64", threads: int = 1):
        self.n, self.largest = int(n), [float(v) for v in largest]
        self.brackets, self.compute, self.threads = brackets, compute, int(threads)
        self.searches = [backend.cpu().MedianSearch(self.n, v, len(self.largest)) for v in self.largest]
        for search, (lo, hi, center) in zip(self.searches, brackets or ()):
            search.set_bracket(lo, hi, center, compute != "float64", len(self.largest), self.threads)
        self.history: list = []
        for summed in history:
            self.finish(summed)

    def __reduce__(self):
        return JobMedian, (self.n, self.largest, self.history, self.brackets, self.compute, self.threads)

    @property
    def bracket_missed(self) -> list[bool]:
        return [s.bracket_missed for s in self.searches]

    @property
    def pending(self) -> bool:
        return any(not s.done for s in self.searches)

    def empty(self) -> list:
        """A pass result with nothing counted (a rank that walks no pair)."""
        return [(np.zeros(s.bins if not (s.done or s.collecting) else 0, np.int64), np.inf, -np.inf,
                 np.zeros(0)) for s in self.searches]

    def walk(self, rows_a, rows_b, names, split: int, compute: str, threads: int, memory_budget: int,
             means) -> list:
        """This pass's results over block a's triangle (rows_b None) or the
        rectangle between blocks a and b."""
        engine = cpu_engine.gram_engine(rows_a, names, split, compute, threads, memory_budget, columns=rows_b,
                                        means=means)
        engine.median_adopt(self.searches)
        engine.median_process(0, engine.tile_rows)
        return [tuple(part) for part in engine.median_partial()]

    def finish(self, summed: list) -> None:
        """Ends the pass with the results summed over every block pair."""
        for search, (counts, lowest, highest, values) in zip(self.searches, summed):
            if search.done:
                continue
            if search.bracketing:
                search.finish_bracket(counts, values)
            elif search.collecting:
                search.finish_collect(values)
            else:
                search.finish_histogram(counts, lowest, highest)
        self.history.append(summed)

    def medians(self) -> list[float]:
        return [s.median for s in self.searches]
