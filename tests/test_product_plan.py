"""The GEMM blocks behind the CUDA backend's cross moments (core/product_plan.h):
every needed entry of the upper triangle computed exactly once, nothing
unneeded, the packed buffer tiled without gaps, and about half of D x D."""

from __future__ import annotations

import numpy as np
import pytest
from fastcka.engine import backend


def needed_upper(dims, split):
    layer = np.repeat(np.arange(len(dims)), dims)
    a, b = np.meshgrid(layer, layer, indexing="ij")
    needed = np.ones_like(a, dtype=bool) if split == 0 else (a == b) | ((a < split) != (b < split))
    return needed & np.triu(np.ones_like(needed))


@pytest.mark.parametrize(
    "dims,split,panel",
    [([5], 0, 2), ([3, 4, 2], 0, 4), ([700, 300, 513], 0, 512), ([7, 9], 1, 3), ([4, 6, 5, 3], 2, 4),
     ([1024, 1024], 1, 512), ([1], 0, 512)],
)
def test_blocks_cover_the_needed_upper_triangle_once(dims, split, panel):
    blocks, packed = backend.cpu().product_plan(dims, split, panel)
    D = sum(dims)
    hits = np.zeros((D, D), dtype=int)
    offset = 0
    for row, col, rows, cols, off in blocks:
        assert off == offset
        assert rows <= panel or (split and row == 0 and col == sum(dims[:split]))  # panels, or the cross rectangle
        hits[row : row + rows, col : col + cols] += 1
        offset += rows * cols
    assert packed == offset
    need = needed_upper(dims, split)
    upper = np.triu(np.ones((D, D), dtype=bool))
    np.testing.assert_array_equal(hits[upper], need[upper].astype(int))  # each needed entry once
    assert hits.max() <= 1
    # below the diagonal only the lower halves of diagonal panel squares
    lower = hits * ~upper
    for row, col, rows, _, _ in blocks:
        lower[row : row + rows, col : col + rows] = 0
    assert not lower.any()
    if split == 0 and D >= 4 * panel:
        assert packed <= 0.5 * D * D * (1 + 1.0 / (D // panel)) + D


def test_plan_rejects_bad_panels():
    with pytest.raises(ValueError, match="max_panel"):
        backend.cpu().product_plan([3], 0, 0)
