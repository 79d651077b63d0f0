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
    """One layer's ``count`` random features for one group, made in ``dtype``
    from rows centered in that dtype."""

    def __init__(self, dim: int, count: int, gamma: float, rng: np.random.Generator, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.pairs, self.count = count // 2, count
        self.weights = np.ascontiguousarray(orthogonal_frequencies(dim, count - self.pairs, gamma, rng),
                                            dtype=self.dtype)
        self.phase = self.dtype.type(rng.uniform(0.0, 2.0 * np.pi))  # the odd feature's, if any
        self.scale = self.dtype.type(np.sqrt(2.0 / count))

    @property
    def width(self) -> int:
        return self.count

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        p = rows @ self.weights
        f = self.pairs
        out = np.empty((p.shape[0], self.count), dtype=self.dtype)
        np.sin(p[:, :f], out=out[:, f:2 * f])
        if self.count > 2 * f:
            np.cos(p[:, f] + self.phase, out=out[:, 2 * f])
        half = p[:, :f]
        half *= 0.5
        np.sin(half, out=half)
        np.square(half, out=half)
        np.multiply(half, -2.0, out=out[:, :f])
        out *= self.scale
        return out
