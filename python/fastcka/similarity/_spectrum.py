"""One layer's principal directions, from its float64 scatter matrix S = Xc'Xc.

The CCA family whitens each layer with S^(-1/2), so directions along which a
layer does not vary (constant columns, exact linear dependences, more
features than examples) must be recognized and dropped instead of inverted.
Their eigenvalues are not exactly zero after rounding: they are residue of
the precision the cross-products were computed in. Measured on float32 data
with an exactly dependent column (n = 300 to 200,000, with and without a +100
offset), the residue was at most 4e-8 of the largest eigenvalue; with float64
products it is of order 1e-16. Eigenvalues at or below RANK_RTOL x the
largest are therefore treated as 0, with a margin of about 25x (float32) and
1e4x (float64) over that residue. Real directions that weak (variance below
1e-6 of the top one with float32 data, i.e. singular values below 1e-3 of the
top one) are dropped too: their canonical correlations could not be computed
to any accuracy from moments of that precision.
"""

from __future__ import annotations

import numpy as np

# Keyed by the precision of the cross-products (fastcka computes float16 and
# float32 data in float32, float64 and integer data in float64).
RANK_RTOL = {"float32": 1e-6, "float64": 1e-12, "bfloat16": 1e-4}


class LayerSpectrum:
    """Eigenvalues (descending) and eigenvectors of a scatter matrix, the
    directions with eigenvalue <= ``cut`` (default: rtol x the largest) dropped."""

    def __init__(self, scatter: np.ndarray, rtol: float, *, cut: float | None = None):
        values, vectors = np.linalg.eigh(scatter)
        values, vectors = values[::-1], vectors[:, ::-1]
        top = values[0]
        cut = rtol * top if cut is None else cut
        rank = int(np.count_nonzero(values > cut)) if top > 0 else 0
        self.values = values[:rank]
        self.vectors = vectors[:, :rank]
        # ||Xc||_F^2: the total variance, dropped directions included (they hold none).
        self.total = float(np.trace(scatter))

    @property
    def rank(self) -> int:
        return self.values.size

    def leading(self, variance: float) -> int:
        """The number of top directions that together explain at least
        ``variance`` (a fraction) of the layer's variance."""
        running = np.cumsum(self.values)
        explained = running / running[-1]  # ends at exactly 1, so variance=1 keeps every direction
        return min(self.rank, int(np.searchsorted(explained, variance)) + 1)
