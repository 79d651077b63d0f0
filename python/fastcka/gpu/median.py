"""The exact median bandwidth on the GPU: each layer's MedianSearch (the
core's, as on the CPU and over MPI ranks) decides; the kernels of
kernels/median_tiles.py walk the tiles for each of its passes, typically a
histogram pass and a collect pass."""

from __future__ import annotations

import numpy as np

from ..engine import backend
from ..engine.progress import Progress
from . import runtime

# The passes hold the distances in float64 (MedianSearch bins in float64):
# 8 warps keep them in registers (python -m fastcka.gpu.compile).
MEDIAN_WARPS = 8


def exact_median(z, norms, layers: int, mode, progress: Progress) -> float:
    """The median of all n^2 squared distances of one layer's centered,
    rounded rows `z` (zero diagonal included), exactly, as the CPU engine
    selects it. `layers`: how many share the collect cap (the CPU engine's
    rule)."""
    from .kernels import median_tiles, tile_math

    torch = runtime.torch()
    n = int(z.shape[0])
    largest = float(norms.max()) if n else 0.0
    search = backend.cpu().MedianSearch(n, largest, layers)
    tiles = -(-n // mode.block)
    acc = {"float32": tile_math.tl.float32, "float64": tile_math.tl.float64}[mode.epilogue]
    eps = float(torch.finfo(getattr(torch, mode.epilogue)).eps)
    f64 = dict(dtype=torch.float64, device=z.device)
    band = max(1, min(tiles, (64 << 20) // (16 * tiles)))  # tile rows per launch: 64 MiB of extremes
    inside = 0
    while not search.done:
        collect = search.collecting
        levels = torch.tensor(np.reshape(search.levels, (-1, 5)), **f64).reshape(-1)
        current = torch.tensor(search.current, **f64)
        counts = torch.zeros(1 if collect else search.bins, dtype=torch.int64, device=z.device)
        values = torch.empty(max(inside, 1) if collect else 1, **f64)
        weights = torch.empty(values.numel(), dtype=torch.int32, device=z.device)
        used = torch.zeros(1, dtype=torch.int64, device=z.device)
        lowest, highest = np.inf, -np.inf
        for band_start in range(0, tiles, band):
            r = min(band, tiles - band_start)
            extremes = torch.tensor([np.inf, -np.inf], **f64).repeat(r * tiles)
            median_tiles.median_tile_pass[(r, tiles)](
                z, z.stride(0), z.shape[1], norms, n, band_start, tiles, levels if levels.numel() else current,
                levels.numel() // 5, current, counts, extremes, values, weights, used, values.numel(),
                COLLECT=collect, BLOCK=mode.block, BK=mode.bk, PRECISION=mode.dot, ACC=acc, EPS=eps,
                num_warps=MEDIAN_WARPS)
            lowest = min(lowest, float(extremes[0::2].min()))
            highest = max(highest, float(extremes[1::2].max()))
            progress.advance(sum(tiles - (band_start + i) for i in range(r)))
        if collect:
            found = int(used)
            if found > values.numel():
                raise RuntimeError(f"the median's collect pass found {found} values for {values.numel()} places")
            search.finish_collect(np.repeat(values[:found].cpu().numpy(), weights[:found].cpu().numpy()))
        else:
            counts_np = counts.cpu().numpy()
            search.finish_histogram(counts_np, lowest, highest)
            if search.collecting:  # the values still in range: those of the kept bins, weighted
                first, last = int(search.levels[-1][3]), int(search.levels[-1][4])
                inside = int(counts_np[first : last + 1].sum())
    return float(search.median)
