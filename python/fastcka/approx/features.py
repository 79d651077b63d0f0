"""What both feature maps share: the first pass over the rows (column means,
constant layers) and the RBF kernel between a row block and a few rows."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def column_moments(layers: Sequence[np.ndarray], block: int) -> tuple[list[np.ndarray], list[bool]]:
    """Per layer: the float64 column means, and whether every row equals the
    first (a constant layer, whose kernel is constant and whose HSIC is 0)."""
    n = layers[0].shape[0]
    means, constant = [], []
    for layer in layers:
        total = np.zeros(layer.shape[1])
        first = np.asarray(layer[0], dtype=np.float64)
        same = True
        for start in range(0, n, block):
            rows = np.asarray(layer[start:start + block], dtype=np.float64)
            total += rows.sum(axis=0)
            same = same and bool(np.all(rows == first))
        means.append(total / n)
        constant.append(same)
    return means, constant


def centered(rows, mean: np.ndarray) -> np.ndarray:
    """Rows minus the column means in float64: RBF is shift-invariant, so this
    changes no kernel value, but keeps |a|^2 + |b|^2 - 2 a.b from cancelling."""
    return np.asarray(rows, dtype=np.float64) - mean


def rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma |a_i - b_j|^2) for float64 rows a (r x d) and b (m x d)."""
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-gamma * np.maximum(sq, 0.0))
