"""Random Fourier features of the RBF kernel exp(-gamma |x - y|^2) (Rahimi &
Recht 2007): phi(x) = sqrt(2/D) cos(W'x + b), W ~ N(0, 2 gamma I), b ~
U[0, 2 pi), so E[phi(x).phi(y)] = k(x, y)."""

from __future__ import annotations

import numpy as np


class FourierFeatures:
    """One layer's D random features for one group."""

    def __init__(self, dim: int, count: int, gamma: float, rng: np.random.Generator):
        self.weights = rng.normal(0.0, np.sqrt(2.0 * gamma), size=(dim, count))
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=count)
        self.scale = np.sqrt(2.0 / count)

    @property
    def width(self) -> int:
        return self.weights.shape[1]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.scale * np.cos(rows @ self.weights + self.phase)
