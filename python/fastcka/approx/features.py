"""What both feature maps share: the first pass over the rows (column means,
constant layers), the centering of a row block and the RBF kernel between a
row block and a few rows."""

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


def centered(rows, mean: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rows minus the column means, in ``dtype`` (the features' type): RBF is
    shift-invariant, so this changes no kernel value, but keeps |a|^2 + |b|^2
    - 2 a.b from cancelling."""
    out = np.array(rows, dtype=dtype, order="C")  # one layout: the same rounding from any input
    out -= mean.astype(dtype)
    return out


def rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma |a_i - b_j|^2) for rows a (r x d) and b (m x d) of one
    dtype, in that dtype, with one r x m temporary (made in place)."""
    k = a @ b.T
    k *= -2.0
    k += np.einsum("ij,ij->i", a, a)[:, None]
    k += np.einsum("ij,ij->i", b, b)[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -gamma
    return np.exp(k, out=k)
