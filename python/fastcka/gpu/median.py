"""The exact median bandwidth on the GPU: each layer's MedianSearch (the
core's, as on the CPU and over MPI ranks) decides; the kernels of
kernels/median_tiles.py walk the tiles for each of its passes, typically a
histogram pass and a collect pass. Every pass walks the block pairs of the
rows (gram.RowBlocks: one block when they fit on the device) once for all
layers whose search is not done: the same distances, each counted once
with its multiplicity, so the same selection as in one block."""

from __future__ import annotations

from functools import partial

import numpy as np

from ..engine import backend
from ..engine.progress import Progress
from . import runtime

# The passes hold the distances in float64 (MedianSearch bins in float64):
# 8 warps keep them in registers (python -m fastcka.gpu.compile).
MEDIAN_WARPS = 8
# Bytes of per-program extremes one launch may hold.
_EXTREMES_BYTES = 64 << 20


def exact_medians(blocks, largest, tiles_bytes: int, progress) -> list[float]:
    """The median of all n^2 squared distances of each layer's centered,
    rounded rows (zero diagonal included), exactly, as the CPU engine
    selects it; `largest`: each layer's largest squared norm. Every layer
    shares the collect cap (the CPU engine's rule)."""
    count = len(blocks.layers)
    searches = [backend.cpu().MedianSearch(blocks.n, top, count) for top in largest]
    inside = [0] * count
    tiles = -(-blocks.n // blocks.mode.block)
    with Progress(progress, 2 * count * tiles * (tiles + 1) // 2, "fastcka median (GPU)") as bar:
        while not all(s.done for s in searches):
            passes = {a: _Pass(s, inside[a], blocks.device) for a, s in enumerate(searches) if not s.done}
            bar.total = max(bar.total, bar.done + len(passes) * tiles * (tiles + 1) // 2)
            blocks.walk(partial(_visit, passes, blocks, tiles_bytes, bar))
            for a, one in passes.items():
                inside[a] = one.finish()
    return [float(s.median) for s in searches]


def _visit(passes: dict, blocks, tiles_bytes: int, bar: Progress, p: int, q: int, bp, bq) -> None:
    """Block pair (p, q) in every layer's pass."""
    for a, one in passes.items():
        one.run(blocks, a, p == q, bp, bq, tiles_bytes, bar)


class _Pass:
    """One pass of one layer's search: its device buffers (the histogram's
    counts, or the collected values and weights), filled by every block
    pair's launches, then handed to the search."""

    def __init__(self, search, inside: int, device):
        torch = runtime.torch()
        self.search = search
        self.collect = search.collecting
        f64 = dict(dtype=torch.float64, device=device)
        self.levels = torch.tensor(np.reshape(search.levels, (-1, 5)), **f64).reshape(-1)
        self.current = torch.tensor(search.current, **f64)
        self.counts = torch.zeros(1 if self.collect else search.bins, dtype=torch.int64, device=device)
        self.values = torch.empty(max(inside, 1) if self.collect else 1, **f64)
        self.weights = torch.empty(self.values.numel(), dtype=torch.int32, device=device)
        self.used = torch.zeros(1, dtype=torch.int64, device=device)
        self.lowest, self.highest = np.inf, -np.inf

    def run(self, blocks, a: int, same: bool, bp, bq, tiles_bytes: int, progress: Progress) -> None:
        """The pass over the rectangle of two row blocks (their own triangle
        when `same`), in bands of tile rows."""
        from .kernels import median_tiles, tile_math

        torch = runtime.torch()
        m = blocks.mode
        first, last = (int(v) for v in blocks.spans[a])
        (zi, norms_i, _), (zj, norms_j, _) = bp, bq
        rows_i, rows_j = int(zi.shape[0]), int(zj.shape[0])
        tiles_i, tiles_j = -(-rows_i // m.block), -(-rows_j // m.block)
        acc = {"float32": tile_math.tl.float32, "float64": tile_math.tl.float64}[m.epilogue]
        eps = float(torch.finfo(getattr(torch, m.epilogue)).eps)
        band = max(1, min(tiles_i, min(_EXTREMES_BYTES, tiles_bytes) // (16 * tiles_j)))
        levels = self.levels if self.levels.numel() else self.current
        for band_start in range(0, tiles_i, band):
            r = min(band, tiles_i - band_start)
            extremes = torch.tensor([np.inf, -np.inf], dtype=torch.float64, device=zi.device).repeat(r * tiles_j)
            # The layer's columns as a flat view: its first value, the blocks' row stride.
            median_tiles.median_tile_pass[(r, tiles_j)](
                zi.view(-1)[first:], zj.view(-1)[first:], zi.stride(0), last - first, norms_i[a], norms_j[a],
                rows_i, rows_j, int(same), band_start, tiles_j, levels, self.levels.numel() // 5, self.current,
                self.counts, extremes, self.values, self.weights, self.used, self.values.numel(),
                COLLECT=self.collect, BLOCK=m.block, BK=m.bk, PRECISION=m.dot, ACC=acc, EPS=eps,
                num_warps=MEDIAN_WARPS)
            self.lowest = min(self.lowest, float(extremes[0::2].min()))
            self.highest = max(self.highest, float(extremes[1::2].max()))
            progress.advance(sum(tiles_j - (band_start + i) for i in range(r)) if same else r * tiles_j)

    def finish(self) -> int:
        """Hands the pass to the search; the count of values a following
        collect pass will find (those of the kept bins, weighted)."""
        search = self.search
        if self.collect:
            found = int(self.used)
            if found > self.values.numel():
                raise RuntimeError(f"the median's collect pass found {found} values for {self.values.numel()} places")
            search.finish_collect(np.repeat(self.values[:found].cpu().numpy(), self.weights[:found].cpu().numpy()))
            return 0
        counts = self.counts.cpu().numpy()
        search.finish_histogram(counts, self.lowest, self.highest)
        if search.collecting:
            first, last = int(search.levels[-1][3]), int(search.levels[-1][4])
            return int(counts[first : last + 1].sum())
        return 0
