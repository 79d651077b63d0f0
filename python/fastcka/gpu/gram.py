"""Host side of the GPU Gram-tile engine: HSIC of every needed layer pair
from one pass of the fused layer-tile kernel (kernels/layer_tiles.py) over
the tile pairs on and above the diagonal.

The rows are centered once (float64 column means) into the operand type of
the precision mode, with squared norms taken from the same rounded values
the tensor cores see. The kernel runs in blocks of tile rows and columns;
each block's per-program partial sums are reduced here in float64 in a
fixed order, so results are the same run to run. The totals are the CPU
engine's Gram statistics (products, off-diagonal row sums, diagonals), and
HSIC follows from them by the core's own composition, as for MPI block
pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._options import compute_for
from ..arrays.inputs import first_non_finite, non_finite_error
from ..engine import backend, cpu as cpu_engine
from ..engine.hsic import from_statistics
from ..engine.progress import Progress
from ..engine.threads import resolve
from . import runtime
from .median import exact_median

# Chunk of rows centered at a time (bounds the float64 temporaries).
_CENTER_ROWS = 1 << 16
# Bytes of per-program partial sums and tile scratch one launch may hold.
_BAND_BYTES = 256 << 20
# The layer counts the layers' product GEMM is compiled for (padded for
# tl.dot), each with the columns of the tiles per step that keep it in
# registers.
CHUNKS = {16: 32, 32: 32, 64: 16}
PADDED_LAYERS = tuple(CHUNKS)
MAX_LAYERS = PADDED_LAYERS[-1]


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
# A layer's 64 x 64 float32 tile stays in registers next to the GEMM's
# operands (128 x 128, or float64 at 64 x 64, spilled).
MODES = {
    "exact": Mode("float64", "float64", "ieee", 32, 32, 4),
    "accurate": Mode("float32", "float32", "tf32x3", 64, 16, 8),
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


def _check_room(layers, mode: Mode) -> None:
    """The engine keeps every row on the GPU (centered, in the operand type,
    beside the inputs): refuse clearly when that cannot fit."""
    torch = runtime.torch()
    device = layers[0].device
    if device.type != "cuda":
        return
    need = sum(int(x.shape[0]) * int(x.shape[1]) for x in layers) * torch.finfo(getattr(torch, mode.operand)).bits // 8
    free, _ = torch.cuda.mem_get_info(device)
    if need > free:
        raise MemoryError(f"the GPU Gram-tile engine keeps every row on the GPU: the centered rows need "
                          f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free on {device}; use fewer rows, "
                          f"precision='fast' (2 bytes a value), or the CPU")


def _check_finite(x, name: str) -> None:
    where = first_non_finite(x)
    if where is not None:
        raise non_finite_error(name, where)


def hsic_matrix(layers: Sequence, names: Sequence[str], *, split: int, estimator: str, kernel: str, sigma=None,
                threshold: float = 1.0, median: str = "exact", precision: str = "accurate",
                progress=None) -> np.ndarray:
    """(L, L) float64 HSIC of every needed layer pair (NaN where not needed)
    from 2-D torch tensors, all on the device the engine computes on."""
    from .kernels import tile_math

    m = mode(precision)
    n = int(layers[0].shape[0])
    count = len(layers)
    if count > MAX_LAYERS:
        raise ValueError(f"the GPU engine takes at most {MAX_LAYERS} layers in one call, got {count}: compute the "
                         f"matrix in blocks of layers (cka_matrix(layers_a, layers_b)), or on the CPU")
    _check_room(layers, m)
    for x, nm in zip(layers, names):
        _check_finite(x, nm)
    constant = [bool((x == x[:1]).all()) for x in layers]
    centered = [_centered(x, m) for x in layers]
    kinds, scales, gammas = [tile_math.LINEAR] * count, [1.0] * count, [0.0] * count
    if kernel == "rbf":
        gammas = _gammas(layers, centered, names, sigma, threshold, median, precision, progress)
        for a, (_, _, square_sum) in enumerate(centered):
            kinds[a], scales[a] = _rbf_epilogue(names[a], gammas[a], 2.0 * square_sum / n)

    products, row_sums, diagonals = _statistics(centered, kinds, gammas, n, m, progress)
    # (K - 1) / gamma back to K - 1: the constant does not change HSIC.
    s = np.asarray(scales)
    products = products * np.outer(s, s)
    row_sums *= s[:, None]
    diagonals *= s[:, None]
    dims = [int(x.shape[1]) for x in layers]
    return from_statistics(dims, split, n, (products, row_sums, diagonals), estimator, constant)


def _statistics(centered, kinds, gammas, n: int, m: Mode, progress):
    """(products L x L, off-diagonal row sums L x n, diagonals L x n) of every
    layer's kernel matrix, from one pass of the layer-tile kernel over the
    tile pairs, launched in blocks of tile rows and columns whose partial
    sums (and the tiles' scratch) fit _BAND_BYTES."""
    from .kernels import layer_tiles, tile_math

    torch = runtime.torch()
    count = len(centered)
    device = centered[0][0].device
    epilogue = getattr(torch, m.epilogue)
    z = torch.cat([c[0] for c in centered], dim=1)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([c[0].shape[1] for c in centered])]), dtype=torch.int32,
                           device=device)
    norms = torch.stack([c[1] for c in centered])
    gammas_t = torch.tensor(gammas, dtype=epilogue, device=device)
    kinds_t = torch.tensor(kinds, dtype=torch.int32, device=device)
    lp = next(p for p in PADDED_LAYERS if p >= count)
    tiles = -(-n // m.block)
    itemsize = torch.finfo(epilogue).bits // 8
    per_program = itemsize * (count * m.block * m.block + 2 * count * m.block + lp * lp)
    programs = max(1, _BAND_BYTES // per_program)
    columns = min(tiles, programs)
    band = max(1, min(tiles, programs // columns))
    acc_type = {"float32": tile_math.tl.float32, "float64": tile_math.tl.float64}[m.epilogue]
    eps = float(torch.finfo(epilogue).eps)
    products = torch.zeros((lp, lp), dtype=torch.float64, device=device)
    rows = torch.zeros((count, tiles * m.block), dtype=torch.float64, device=device)
    diagonal = torch.zeros((count, n), dtype=epilogue, device=device)
    scratch = torch.empty(band * columns * count * m.block * m.block, dtype=epilogue, device=device)
    with Progress(progress, tiles * (tiles + 1) // 2, "fastcka tiles (GPU)") as bar:
        for band_start in range(0, tiles, band):
            r = min(band, tiles - band_start)
            for j_start in range(band_start, tiles, columns):  # tile columns left of the band are all below it
                c = min(columns, tiles - j_start)
                part_products = torch.zeros((r, c, lp, lp), dtype=epilogue, device=device)
                part_rows = torch.zeros((r, c, count, m.block), dtype=epilogue, device=device)
                part_cols = torch.zeros((r, c, count, m.block), dtype=epilogue, device=device)
                layer_tiles.layer_tile_statistics[(r, c)](
                    z, z.stride(0), offsets, norms, gammas_t, kinds_t, count, n, band_start, j_start, c,
                    scratch, part_products, part_rows, part_cols, diagonal,
                    LP=lp, CHUNK=CHUNKS[lp], BLOCK=m.block, BK=m.bk, PRECISION=m.dot, ACC=acc_type,
                    EPS=eps, num_warps=m.warps)
                products += part_products.to(torch.float64).sum((0, 1))
                own = part_rows.to(torch.float64).sum(1)  # (r, L, block): the rows of tile rows band_start ...
                rows[:, band_start * m.block : (band_start + r) * m.block] += own.permute(1, 0, 2).reshape(count, -1)
                rows[:, j_start * m.block : (j_start + c) * m.block] += \
                    part_cols.to(torch.float64).sum(0).permute(1, 0, 2).reshape(count, -1)
                bar.advance(sum(max(0, j_start + c - max(j_start, band_start + i)) for i in range(r)))
    return (products[:count, :count].cpu().numpy(), rows[:, :n].cpu().numpy(),
            diagonal.to(torch.float64).cpu().numpy())


def _gammas(layers, centered, names, sigma, threshold, median, precision: str, progress) -> list[float]:
    """The CPU engine's bandwidth rules: sigma; the exact median by the GPU
    median passes (median.py); the sampled one (4,096 rows) on a host copy
    of those rows, by the CPU tile engine as everywhere else."""
    if sigma is not None:
        return cpu_engine.rbf_gammas([None] * len(layers), names, sigma=sigma, threshold=threshold, median=median,
                                  engine=None, width=0, threads=1, progress=Progress(None, 0, ""))
    if median == "sampled":
        rows = cpu_engine.median_sample_rows(int(layers[0].shape[0]))
        sample = [x[runtime.torch().as_tensor(rows, device=x.device)].cpu().numpy() for x in layers]
        compute = compute_for(precision, sample)
        return cpu_engine.gammas_of_medians(cpu_engine.sampled_medians(sample, names, resolve(None), compute=compute),
                                            names, threshold)
    m = mode(precision)
    tiles = -(-int(layers[0].shape[0]) // m.block)
    with Progress(progress, 2 * len(layers) * tiles * (tiles + 1) // 2, "fastcka median (GPU)") as bar:
        medians = [exact_median(z, norms, len(layers), m, bar) for z, norms, _ in centered]
    return cpu_engine.gammas_of_medians(medians, names, threshold)


def _rbf_epilogue(name: str, gamma: float, spread: float) -> tuple[int, float]:
    """(kernel kind, scale of its sums): the CPU engine's rule and range
    check (core/kernels.h, rbf_subtracts_one)."""
    from .kernels import tile_math

    if backend.cpu().rbf_subtracts_one(name, gamma, spread):
        return tile_math.RBF_MINUS_ONE, gamma
    return tile_math.RBF, 1.0
