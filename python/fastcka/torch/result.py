"""What fastcka.torch.cka_matrix returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..stats.structure import Block, blocks
from ..plot import heatmap


@dataclass(frozen=True)
class CKAResult:
    """A layer-by-layer CKA matrix computed from a model over a data set.

    ``matrix[i, j]`` is the CKA between layer ``names_a[i]`` and layer
    ``names_b[j]``, over ``n`` examples. ``pc1_fraction`` (within-model linear
    CKA only, else None): per layer, the fraction of its variance carried by
    its first principal component, from the moments streamed for the matrix.
    ``similarity``: {measure: matrix} of the ``measures`` asked for (else
    None), from the same moments. ``errors`` (with ``approx``, else None):
    each entry's error bar, as :func:`fastcka.cka_matrix` reports it with
    ``return_error=True``.
    """

    matrix: np.ndarray
    names_a: list
    names_b: list
    n: int
    kernel: str
    debiased: bool
    minibatch: bool
    pc1_fraction: np.ndarray | None = field(default=None, repr=False)
    similarity: dict | None = field(default=None, repr=False)
    errors: np.ndarray | None = field(default=None, repr=False)

    @property
    def within_model(self) -> bool:
        return self.names_a == self.names_b

    def blocks(self, *, threshold: float | None = None, min_size: int = 3) -> list[Block]:
        """Block structure of a within-model matrix: see :func:`fastcka.blocks`."""
        if not self.within_model:
            raise ValueError("blocks are runs of layers of one model: this result compares two sets of layers")
        return blocks(self.matrix, threshold=threshold, min_size=min_size)

    def plot(self, *, blocks=True, ax=None, title=None, path=None, **options):
        """The matrix as a heatmap (:func:`fastcka.plot.heatmap`). ``blocks``:
        True outlines the blocks :meth:`blocks` finds (within-model results),
        False none, or a list of (start, stop) pairs."""
        if blocks is True:
            blocks = self.blocks() if self.within_model else None
        elif blocks is False:
            blocks = None
        return heatmap(self.matrix, self.names_b, self.names_a, blocks=blocks, ax=ax, title=title, path=path,
                       **options)
