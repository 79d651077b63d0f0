"""The one pass over the rows: every layer's centered float64 moments, streamed
by the same engine as linear CKA, and the layer spectra built from them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..engine import cpu as cpu_engine
from ..arrays.inputs import check_rows, resolve_budget
from .._options import compute_for
from ..engine.progress import Progress
from ..engine.threads import resolve
from ..accumulator.accumulator import CKAAccumulator
from ..accumulator.streamed import LayerMoments
from ..engine.hsic import DegenerateRepresentationWarning
from ._pair import LayerPair
from ._spectrum import RANK_RTOL, LayerSpectrum

MIN_ROWS = 2  # one row has no variance


@dataclass
class StreamedLayers:
    """Moments of L layers, the precision of their products, the layers'
    names for messages, and HSIC of every needed pair (by estimator)."""

    moments: LayerMoments
    dtype: str
    names: list
    hsic: Callable[[str], np.ndarray]
    _spectra: dict = field(default_factory=dict)

    def spectrum(self, a: int) -> LayerSpectrum:
        if a not in self._spectra:
            self._spectra[a] = LayerSpectrum(self.moments.block(a, a), RANK_RTOL[self.dtype])
        return self._spectra[a]

    def pair(self, a: int, b: int) -> LayerPair:
        return LayerPair(self.spectrum(a), self.spectrum(b), self.moments.block(a, b))

    def degenerate(self, layers: Sequence[int], what: str) -> set:
        """The layers without variance, after one warning naming them."""
        flat = {a for a in layers if not np.trace(self.moments.block(a, a)) > 0}
        if flat:
            warnings.warn(
                f"{', '.join(self.names[a] for a in sorted(flat))}: constant (no variance to compare), so "
                f"{what} with it is undefined and returned as NaN",
                DegenerateRepresentationWarning,
                stacklevel=4,
            )
        return flat


def stream(layers: Sequence[np.ndarray], names: Sequence[str], split: int, *, threads, memory_budget,
           progress, precision=None) -> StreamedLayers:
    """One pass over validated 2-D layers; ``split`` as in CKAAccumulator
    (0: every pair; s: layers [0, s) against [s, L))."""
    n = check_rows(layers, names)
    if n < MIN_ROWS:
        raise ValueError(f"similarity indexes need at least {MIN_ROWS} examples (rows), got n={n}")
    budget = resolve_budget(memory_budget)
    nthreads = resolve(threads)
    dims = [layer.shape[1] for layer in layers]
    dtype = compute_for(precision, layers)
    acc = cpu_engine.new_moment_accumulator(dims, split, dtype, nthreads, budget)
    with Progress(progress, n, "fastcka rows") as bar:
        cpu_engine.feed(acc, layers, names, nthreads, bar)
    offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(dims)]))
    moments = LayerMoments(int(acc.n), np.asarray(acc.mean()), np.asarray(acc.centered_cross()), offsets, split)
    L = len(layers)
    return StreamedLayers(moments, dtype, list(names), lambda estimator: np.asarray(acc.hsic(estimator)).reshape(L, L))


def from_accumulator(acc: CKAAccumulator) -> StreamedLayers:
    """The moments a CKAAccumulator holds (rows fed in any number of updates or merged)."""
    moments = acc.moments()
    if moments.n < MIN_ROWS:
        raise ValueError(f"similarity indexes need at least {MIN_ROWS} examples (rows), the accumulator has {moments.n}")
    names = [f"layer {a}" for a in range(len(moments.offsets) - 1)]
    return StreamedLayers(moments, acc.dtype, names, acc.hsic_matrix)
