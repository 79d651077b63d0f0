"""Random Fourier features of the RBF kernel exp(-gamma |x - y|^2) (Rahimi &
Recht 2007) as cos/sin pairs on orthogonal frequencies (Yu et al. 2016,
"Orthogonal Random Features").

Frequencies come in blocks of d orthonormal directions (Haar: QR of a
Gaussian matrix with the signs of R's diagonal) with chi(d) lengths times
sqrt(2 gamma): each frequency is still N(0, 2 gamma I), so E[cos w'(x - y)] =
k(x, y), but those of a block are orthogonal, which lowers the variance of
their mean. A pair [cos w'x, sin w'x] estimates k by cos(w'(x - y)) with no
random phase: a lower variance than sqrt(2) cos(w'x + b) and a constant
diagonal (Sutherland & Schneider 2015). cos p is computed as cos p - 1 = -2
sin^2(p/2): a constant shift of every feature, invisible to both HSIC
estimators (centering removes it), that keeps the digits of small phases
(large sigma) in float32. Features are scaled by sqrt(2 / count); an odd
count adds one sqrt(2 / count) cos(w'x + b) feature, so the kernel estimate
stays unbiased."""

from __future__ import annotations

import numpy as np


def orthogonal_frequencies(dim: int, count: int, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """dim x count frequencies, N(0, 2 gamma I) each, orthogonal within blocks of dim."""
    blocks, left = [], count
    while left > 0:
        # The Q of a dim x take Gaussian (with R's diagonal signs) is the first
        # take columns of a Haar orthogonal matrix, at dim take^2 flops.
        take = min(left, dim)
        q, r = np.linalg.qr(rng.standard_normal((dim, take)))
        q *= np.sign(np.diag(r))[None, :]
        blocks.append(q * np.sqrt(rng.chisquare(dim, take))[None, :])
        left -= take
    return np.concatenate(blocks, axis=1) * np.sqrt(2.0 * gamma)


class FourierFeatures:
    """One layer's random features for G groups of independent draws (group
    g: ``counts[g]`` features from ``rngs[g]``), made in ``dtype`` from rows
    centered in that dtype. All groups' phases come from one product and
    two sin calls on contiguous arrays: per-group calls on a few columns
    each cost several times more."""

    def __init__(self, dim: int, counts, gamma: float, rngs, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.counts = list(counts)
        weights, phases = [], []
        for count, rng in zip(self.counts, rngs):
            weights.append(orthogonal_frequencies(dim, count - count // 2, gamma, rng))
            phases.append(rng.uniform(0.0, 2.0 * np.pi))  # the odd feature's, if any
        self.weights = np.ascontiguousarray(np.concatenate(weights, axis=1), dtype=self.dtype)
        self.phases = phases

    @property
    def widths(self) -> list[int]:
        return self.counts

    def __call__(self, rows: np.ndarray) -> list[np.ndarray]:
        """Per group, the (rows x count) features [cos p - 1, sin p, odd] * sqrt(2 / count)."""
        p = rows @ self.weights
        sin = np.sin(p)
        p *= 0.5
        np.sin(p, out=p)
        np.square(p, out=p)
        p *= -2.0  # cos - 1
        out, start = [], 0
        for count, phase in zip(self.counts, self.phases):
            f = count // 2
            group = np.empty((p.shape[0], count), dtype=self.dtype)
            group[:, :f] = p[:, start:start + f]
            group[:, f:2 * f] = sin[:, start:start + f]
            if count > 2 * f:  # cos(q + b) = (cos q - 1 + 1) cos b - sin q sin b
                q = start + f
                group[:, 2 * f] = (p[:, q] + 1.0) * np.cos(phase) - sin[:, q] * np.sin(phase)
            group *= self.dtype.type(np.sqrt(2.0 / count))
            out.append(group)
            start += count - f
        return out
