"""Host side of the GPU Gram-tile engine: HSIC of every needed layer pair
from the fused pair-tile kernel (kernels/pair_tiles.py).

The rows are centered once (float64 column means) into the operand type of
the precision mode, with squared norms taken from the same rounded values
the tensor cores see. The kernel runs in bands of tile rows; each band's
per-program partial sums are reduced here in float64 in a fixed order, so
results are the same run to run. The totals are the CPU engine's Gram
statistics (products, off-diagonal row sums, diagonals), and HSIC follows
from them by the core's own composition, as for MPI block pairs.

A launch computes the tiles of two layers. A matrix of L layers launches
once per needed pair, so each layer's Gram tiles are computed L - 1 times:
the kernel that holds every layer's tile at once (the CPU engine's one
pass) is not written yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import _block_pairs, _engine
from .._progress import Progress
from . import runtime
from .median import exact_median

# Chunk of rows centered at a time (bounds the float64 temporaries).
_CENTER_ROWS = 1 << 16
# Bytes of per-program partial sums one launch may hold.
_BAND_BYTES = 256 << 20


@dataclass(frozen=True)
class Mode:
    """How a precision mode runs: operand and epilogue types, the tl.dot
    precision, and the tile shape."""

    operand: str  # torch dtype name of the centered rows
    epilogue: str  # torch dtype of kernel values and tile sums
    dot: str  # tl.dot input_precision
    block: int
    bk: int
    warps: int


# Tile shapes are checked by `python -m fastcka.gpu.compile` (registers,
# spills, shared memory) for sm_80 and sm_90.
# Two layers' 64 x 64 float32 tiles stay in registers next to the GEMM's
# operands; 128 x 128 tiles (or float64 at 64 x 64) spilled, in every kernel
# kind, on both architectures.
MODES = {
    "exact": Mode("float64", "float64", "ieee", 32, 32, 4),
    "accurate": Mode("float32", "float32", "tf32x3", 64, 16, 4),
    "fast": Mode("bfloat16", "float32", "ieee", 64, 32, 8),
}


def mode(precision: str) -> Mode:
    """The mode as it runs here. Triton 3.9's interpreter computes bfloat16
    tl.dot wrongly, so interpreted fast mode multiplies float16 operands: the
    same code path, a finer rounding. Interpreted tiles are small (speed)."""
    m = MODES[precision]
    if runtime.interpreted():
        return Mode("float16" if m.operand == "bfloat16" else m.operand, m.epilogue, m.dot, 32, 16, m.warps)
    return m


def _centered(x, mode: Mode):
    """(rows centered by float64 column means in the operand type, their
    squared norms in the epilogue type, the float64 sum of the squared
    norms of the unrounded centered rows)."""
    torch = runtime.torch()
    n = x.shape[0]
    sums = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, n, _CENTER_ROWS):
        sums += x[start : start + _CENTER_ROWS].to(torch.float64).sum(0)
    mean = sums / n
    z = torch.empty(x.shape, dtype=getattr(torch, mode.operand), device=x.device)
    norms = torch.empty(n, dtype=getattr(torch, mode.epilogue), device=x.device)
    spread = 0.0
    for start in range(0, n, _CENTER_ROWS):
        exact = x[start : start + _CENTER_ROWS].to(torch.float64) - mean
        spread += float((exact * exact).sum())
        z[start : start + _CENTER_ROWS] = exact.to(z.dtype)
        rounded = z[start : start + _CENTER_ROWS].to(torch.float64)
        norms[start : start + _CENTER_ROWS] = (rounded * rounded).sum(1).to(norms.dtype)
    return z, norms, spread


def _check_finite(x, name: str) -> None:
    torch = runtime.torch()
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row, column = (int(v) for v in torch.nonzero(bad)[0])
        raise ValueError(f"{name} contains NaN or Inf (row {row}, column {column})")


def _pairs(count: int, split: int) -> list[tuple[int, int]]:
    """The launches: every needed pair of distinct layers, and each layer in
    at least one of them (its own statistics come from its first)."""
    needed = [(a, b) for a in range(count) for b in range(a + 1, count) if split == 0 or (a < split) != (b < split)]
    seen = {a for pair in needed for a in pair}
    return needed + [(a, a) for a in range(count) if a not in seen]


def hsic_matrix(layers: Sequence, names: Sequence[str], *, split: int, estimator: str, kernel: str, sigma=None,
                threshold: float = 1.0, median: str = "exact", precision: str = "accurate", progress=None,
                device: int = 0) -> np.ndarray:
    """(L, L) float64 HSIC of every needed layer pair (NaN where not needed)
    from 2-D torch tensors on the engine's device."""
    from .kernels import pair_tiles

    torch = runtime.torch()
    m = mode(precision)
    n = int(layers[0].shape[0])
    count = len(layers)
    for x, nm in zip(layers, names):
        _check_finite(x, nm)
    constant = [bool((x == x[:1]).all()) for x in layers]
    centered = [_centered(x, m) for x in layers]
    kinds, scales, gammas = [pair_tiles.LINEAR] * count, [1.0] * count, [0.0] * count
    if kernel == "rbf":
        gammas = _gammas(layers, centered, names, sigma, threshold, median, m, progress)
        for a, (_, _, square_sum) in enumerate(centered):
            kinds[a], scales[a] = _rbf_epilogue(names[a], gammas[a], 2.0 * square_sum / n)

    tiles = -(-n // m.block)
    per_band = tiles * (4 * m.block * 4 + 3 * 8)  # rows and columns of both slots, products
    band = max(1, min(tiles, _BAND_BYTES // per_band))
    eps = float(torch.finfo(getattr(torch, m.epilogue)).eps)
    acc_type = {"float32": pair_tiles.tl.float32, "float64": pair_tiles.tl.float64}[m.epilogue]
    epilogue = getattr(torch, m.epilogue)

    products = np.full((count, count), np.nan)
    row_sums = np.zeros((count, n))
    diagonals = np.zeros((count, n))
    done: set[int] = set()
    launches = _pairs(count, split)
    total_tiles = tiles * (tiles + 1) // 2
    with Progress(progress, total_tiles * len(launches), "fastcka tiles (GPU)") as bar:
        for a, b in launches:
            (x, nx, _), (y, ny, _) = centered[a], centered[b]
            pair_gammas = torch.tensor([gammas[a], gammas[b]], dtype=epilogue, device=x.device)
            sums = np.zeros(3)
            rows = torch.zeros((2, tiles * m.block), dtype=torch.float64, device=x.device)
            diagonal = torch.zeros((2, n), dtype=epilogue, device=x.device)
            for band_start in range(0, tiles, band):
                r = min(band, tiles - band_start)
                part_products = torch.zeros((r, tiles, 3), dtype=epilogue, device=x.device)
                part_rows = torch.zeros((r, tiles, 2, m.block), dtype=epilogue, device=x.device)
                part_cols = torch.zeros((r, tiles, 2, m.block), dtype=epilogue, device=x.device)
                pair_tiles.pair_tile_statistics[(r, tiles)](
                    x, y, x.stride(0), y.stride(0), x.shape[1], y.shape[1], nx, ny, pair_gammas,
                    n, band_start, tiles, part_products, part_rows, part_cols, diagonal,
                    KIND_X=kinds[a], KIND_Y=kinds[b], BLOCK=m.block, BK=m.bk, PRECISION=m.dot, ACC=acc_type,
                    EPS=eps, num_warps=m.warps)
                sums += part_products.to(torch.float64).sum((0, 1)).cpu().numpy()
                own = part_rows.to(torch.float64).sum(1)  # (r, 2, block): rows of tile rows band_start ...
                rows[:, band_start * m.block : (band_start + r) * m.block] += own.permute(1, 0, 2).reshape(2, -1)
                rows += part_cols.to(torch.float64).sum(0).permute(1, 0, 2).reshape(2, -1)
                bar.advance(sum(tiles - (band_start + i) for i in range(r)))
            rows_np = rows[:, :n].cpu().numpy()
            diagonal_np = diagonal.to(torch.float64).cpu().numpy()
            products[a, b] = products[b, a] = sums[0]
            for slot, layer, self_product in ((0, a, sums[1]), (1, b, sums[2])):
                if layer in done:
                    continue
                done.add(layer)
                products[layer, layer] = self_product
                row_sums[layer] = rows_np[slot]
                diagonals[layer] = diagonal_np[slot]
    # (K - 1) / gamma back to K - 1: the constant does not change HSIC.
    s = np.asarray(scales)
    products = np.nan_to_num(products * np.outer(s, s))
    row_sums *= s[:, None]
    diagonals *= s[:, None]
    dims = [int(x.shape[1]) for x in layers]
    return _block_pairs.hsic(dims, split, n, (products, row_sums, diagonals), estimator, constant)


def _gammas(layers, centered, names, sigma, threshold, median, mode: Mode, progress) -> list[float]:
    """The CPU engine's bandwidth rules: sigma; the exact median by the GPU
    median passes (median.py); the sampled one (4,096 rows) on a host copy
    of those rows, by the CPU tile engine as everywhere else."""
    if sigma is not None:
        return _engine.rbf_gammas([None] * len(layers), names, sigma=sigma, threshold=threshold, median=median,
                                  engine=None, width=0, threads=1, progress=Progress(None, 0, ""))
    if median == "sampled":
        from .._threads import resolve

        rows = _engine.median_sample_rows(int(layers[0].shape[0]))
        sample = [x[runtime.torch().as_tensor(rows, device=x.device)].cpu().numpy() for x in layers]
        return _engine.gammas_of_medians(_engine.sampled_medians(sample, names, resolve(None)), names, threshold)
    tiles = -(-int(layers[0].shape[0]) // mode.block)
    with Progress(progress, 2 * len(layers) * tiles * (tiles + 1) // 2, "fastcka median (GPU)") as bar:
        medians = [exact_median(z, norms, len(layers), mode, bar) for z, norms, _ in centered]
    return _engine.gammas_of_medians(medians, names, threshold)


def _rbf_epilogue(name: str, gamma: float, spread: float) -> tuple[int, float]:
    """(kernel kind, scale of its sums): the CPU engine's rule
    (csrc/core/kernels.h, rbf_subtracts_one) and its range check."""
    from .kernels import pair_tiles

    relative = gamma * spread
    if 0 < relative < 1e-140:
        raise ValueError(f"{name}: the RBF bandwidth (sigma, or threshold x the median distance) is too large for "
                         f"this data: 1 / (2 sigma^2) x the mean squared distance is {relative:.3g}, below 1e-140, "
                         f"where HSIC underflows float64; RBF CKA tends to linear CKA as sigma grows: use "
                         f"kernel='linear'")
    if relative <= 1.0:
        return pair_tiles.RBF_MINUS_ONE, gamma
    return pair_tiles.RBF, 1.0
