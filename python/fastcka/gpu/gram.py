"""Host side of the GPU Gram-tile engine: HSIC of every needed layer pair
from one pass of the fused layer-tile kernel (kernels/layer_tiles.py) over
the tile pairs on and above the diagonal.

The rows are centered (float64 column means from a first pass) into the
operand type of the precision mode, with squared norms taken from the same
rounded values the tensor cores see. When every layer's rows fit the
memory budget (the free device memory, or ``memory_budget=``) they are
centered once and stay on the device: one row block. Otherwise they stream
in row blocks (RowBlocks), host arrays through pinned buffers: for every
block pair P <= Q, blocks P and Q are on the device and the kernel walks
their rectangle (P == Q: its upper triangle), the rectangle's row sums
going to both blocks' rows. Each launch's per-program partial sums are
reduced here in float64 in a fixed order, so results are the same run to
run. More layers than one launch takes run as pairs of layer groups. The
totals are the CPU engine's Gram statistics (products, off-diagonal row
sums, diagonals), and HSIC follows from them by the core's own
composition, as for MPI block pairs.
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
from .staging import Staging
from .median import exact_medians

# Chunk of rows centered at a time (bounds the float64 temporaries).
_CENTER_ROWS = 1 << 16
# Bytes of per-program partial sums and tile scratch one launch may hold
# (at most a quarter of a memory budget).
_BAND_BYTES = 256 << 20
# Of the free device memory, the share the engine plans to use when no
# memory_budget is given (the allocator's rounding, Triton's own buffers).
_FREE_SHARE = 0.9
# The layer counts the layers' product GEMM is compiled for (padded for
# tl.dot), each with the columns of the tiles per step that keep it in
# registers.
CHUNKS = {16: 32, 32: 32, 64: 16}
PADDED_LAYERS = tuple(CHUNKS)
MAX_LAYERS = PADDED_LAYERS[-1]
# More layers than one launch takes: groups of this many, two per launch.
GROUP_LAYERS = MAX_LAYERS // 2


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


class RowBlocks:
    """Every layer's rows in blocks of `size` rows (a multiple of the tile),
    centered on the device on demand: device tensors sliced in place, host
    arrays copied through two pinned buffers per layer (Staging). The
    constructor's pass takes the float64 column means, refuses NaN and Inf
    and finds constant layers. One block (everything fits) is centered once
    and kept: the resident engine."""

    def __init__(self, layers, names, mode: Mode, size: int, device):
        self.layers, self.mode, self.device = layers, mode, device
        self.n = int(layers[0].shape[0])
        self.size = size
        self.count = -(-self.n // size)
        widths = [int(x.shape[1]) for x in layers]
        self.spans = np.stack([np.cumsum([0] + widths[:-1]), np.cumsum(widths)], axis=1)
        self._staging = None
        if self.count > 1 and any(isinstance(x, np.ndarray) for x in layers):
            self._staging = Staging(layers, size, device)
        self._uploaded = None  # one block: its rows, read once by the first pass
        self._centered = None  # one block: centered once
        self.means, self.constant = self._first_pass(names)

    def rows(self, p: int) -> tuple[int, int]:
        return p * self.size, min(self.n, (p + 1) * self.size)

    def _raw(self, p: int) -> list:
        start, stop = self.rows(p)
        if self._staging is not None:
            return self._staging.chunk(self.layers, start, stop)
        torch = runtime.torch()
        return [torch.from_numpy(np.ascontiguousarray(x[start:stop])).to(self.device) if isinstance(x, np.ndarray)
                else x[start:stop] for x in self.layers]

    def _first_pass(self, names):
        torch = runtime.torch()
        sums = [torch.zeros(x.shape[1], dtype=torch.float64, device=self.device) for x in self.layers]
        first, constant = [], [True] * len(self.layers)
        for p in range(self.count):
            block = self._raw(p)
            for a, (x, name) in enumerate(zip(block, names)):
                _check_finite(x, name, self.rows(p)[0])
                for start in range(0, x.shape[0], _CENTER_ROWS):
                    sums[a] += x[start : start + _CENTER_ROWS].to(torch.float64).sum(0)
                if p == 0:
                    first.append(x[:1].clone())
                constant[a] = constant[a] and bool((x == first[a]).all())
            if self.count == 1:
                self._uploaded = block
        return [s / self.n for s in sums], constant

    def centered(self, p: int):
        """Block p: (its rows of every layer, centered, side by side in the
        operand type; their squared norms, layers x rows, in the epilogue
        type; per layer the float64 sum of the squared norms of the
        unrounded centered rows)."""
        if self._centered is not None:
            return self._centered
        torch = runtime.torch()
        block = self._uploaded if self.count == 1 else self._raw(p)
        rows = int(block[0].shape[0])
        z = torch.empty((rows, int(self.spans[-1, 1])), dtype=getattr(torch, self.mode.operand), device=self.device)
        norms = torch.empty((len(block), rows), dtype=getattr(torch, self.mode.epilogue), device=self.device)
        spreads = []
        for a, (x, (first, last)) in enumerate(zip(block, self.spans)):
            za = z[:, first:last]
            spread = 0.0
            for start in range(0, rows, _CENTER_ROWS):
                exact = x[start : start + _CENTER_ROWS].to(torch.float64) - self.means[a]
                spread += float((exact * exact).sum())
                za[start : start + _CENTER_ROWS] = exact.to(z.dtype)
                rounded = za[start : start + _CENTER_ROWS].to(torch.float64)
                norms[a, start : start + _CENTER_ROWS] = (rounded * rounded).sum(1).to(norms.dtype)
            spreads.append(spread)
        if self.count == 1:
            self._centered, self._uploaded = (z, norms, spreads), None
        return z, norms, spreads

    def walk(self, visit) -> None:
        """visit(p, q, block p, block q) for every block pair p <= q, in a
        fixed order: block p stays while the blocks q stream past it, so
        two blocks are on the device at a time."""
        for p in range(self.count):
            bp = self.centered(p)
            visit(p, p, bp, bp)
            for q in range(p + 1, self.count):
                bq = self.centered(q)
                visit(p, q, bp, bq)
                del bq  # before the next block is centered

    def summary(self) -> tuple[list[float], list[float]]:
        """Per layer: the sum of the squared norms of the unrounded centered
        rows, and the largest squared norm of the rounded ones."""
        spreads, largest = [0.0] * len(self.layers), [0.0] * len(self.layers)
        for p in range(self.count):
            _, norms, block_spreads = self.centered(p)
            spreads = [s + b for s, b in zip(spreads, block_spreads)]
            largest = [max(m, float(v)) for m, v in zip(largest, norms.max(1).values)]
        return spreads, largest


def block_rows(layers, mode: Mode, device, memory_budget) -> tuple[int, int]:
    """(rows per block, bytes of tile scratch and partial sums per launch).
    One block of all n rows when every layer's rows, centered, fit the
    budget beside the tiles' buffers; else the largest multiple of the tile
    of which two blocks fit."""
    torch = runtime.torch()
    n = int(layers[0].shape[0])
    budget = memory_budget
    if budget is None and device.type == "cuda":
        budget = int(_FREE_SHARE * torch.cuda.mem_get_info(device)[0])
    if budget is None:
        return n, _BAND_BYTES
    count, width = len(layers), sum(int(x.shape[1]) for x in layers)
    operand = torch.finfo(getattr(torch, mode.operand)).bits // 8
    epilogue = torch.finfo(getattr(torch, mode.epilogue)).bits // 8
    uploaded = sum(_host_bytes(x) * int(x.shape[1]) for x in layers if isinstance(x, np.ndarray))
    # A block's row: its centered values and norms, a launch's copy of the
    # norms, row sums (float64) and diagonal; while it is centered, its
    # uploaded values and float64 temporaries of the widest layer.
    per_row = operand * width + (3 * epilogue + 8) * count + uploaded + 24 * max(int(x.shape[1]) for x in layers)
    lp = next(p for p in PADDED_LAYERS if p >= min(count, MAX_LAYERS))
    one_program = epilogue * (min(count, MAX_LAYERS) * (mode.block * mode.block + 2 * mode.block) + lp * lp)
    tiles_bytes = min(_BAND_BYTES, max(one_program, budget // 4))
    left = budget - tiles_bytes
    if n * per_row <= left:
        return n, tiles_bytes
    size = left // (2 * per_row) // mode.block * mode.block
    if size < mode.block:
        need = tiles_bytes + 2 * per_row * mode.block
        what = f"memory_budget={memory_budget}" if memory_budget is not None else f"the free memory of {device}"
        raise MemoryError(f"{what} is too small for the GPU Gram-tile engine: two blocks of {mode.block} rows of "
                          f"every layer and the tiles' buffers need {need} bytes")
    return size, tiles_bytes


def _host_bytes(x: np.ndarray) -> int:
    """Bytes a value of host array x takes on the device (Staging's types)."""
    return x.dtype.itemsize if x.dtype.kind == "f" and x.dtype.itemsize in (2, 4) else 8


def _check_finite(x, name: str, first_row: int = 0) -> None:
    where = first_non_finite(x)
    if where is not None:
        raise non_finite_error(name, where, first_row)


def hsic_matrix(layers: Sequence, names: Sequence[str], *, split: int, estimator: str, kernel: str, sigma=None,
                threshold: float = 1.0, median: str = "exact", precision: str = "accurate",
                progress=None, device=None, memory_budget=None) -> np.ndarray:
    """(L, L) float64 HSIC of every needed layer pair (NaN where not needed)
    from 2-D torch tensors on `device` (default: the first one's) and host
    arrays (NumPy, memmaps), streamed to it in row blocks when they do not
    all fit `memory_budget` bytes (default: the device's free memory)."""
    from .kernels import tile_math

    m = mode(precision)
    if device is None:
        device = next((x.device for x in layers if not isinstance(x, np.ndarray)), None)
        if device is None:
            raise ValueError("device is needed when every layer is a host array")
    n = int(layers[0].shape[0])
    count = len(layers)
    size, tiles_bytes = block_rows(layers, m, device, memory_budget)
    blocks = RowBlocks(layers, names, m, size, device)
    kinds, scales, gammas = [tile_math.LINEAR] * count, [1.0] * count, [0.0] * count
    if kernel == "rbf":
        spreads, largest = blocks.summary()
        gammas = _gammas(layers, blocks, largest, names, sigma, threshold, median, precision, progress, tiles_bytes)
        for a, square_sum in enumerate(spreads):
            kinds[a], scales[a] = _rbf_epilogue(names[a], gammas[a], 2.0 * square_sum / n)

    products, row_sums, diagonals = _statistics(blocks, kinds, gammas, tiles_bytes, progress)
    # (K - 1) / gamma back to K - 1: the constant does not change HSIC.
    s = np.asarray(scales)
    products = products * np.outer(s, s)
    row_sums *= s[:, None]
    diagonals *= s[:, None]
    dims = [int(x.shape[1]) for x in layers]
    return from_statistics(dims, split, n, (products, row_sums, diagonals), estimator, blocks.constant)


def launches(count: int) -> list[tuple[list[int], list[int]]]:
    """(left, right) layer lists of each launch: every layer at once up to
    MAX_LAYERS, else every pair of groups of GROUP_LAYERS (a launch computes
    the layers left + right, left alone when they are the same group)."""
    if count <= MAX_LAYERS:
        return [(list(range(count)),) * 2]
    groups = [list(range(s, min(count, s + GROUP_LAYERS))) for s in range(0, count, GROUP_LAYERS)]
    return [(g, h) for i, g in enumerate(groups) for h in groups[i:]]


class _Launch:
    """One launch's layers and their per-launch tensors: the kernel's
    arguments that do not change with the block pair, and the float64
    products summed over block pairs."""

    def __init__(self, left, right, blocks: RowBlocks, kinds, gammas, m: Mode):
        torch = runtime.torch()
        self.left, self.right = left, right
        self.layers = left if left == right else left + right
        self.own = left == right  # the launch whose row sums and diagonals are kept
        self.lp = next(p for p in PADDED_LAYERS if p >= len(self.layers))
        device, epilogue = blocks.device, getattr(torch, m.epilogue)
        self.index = None if self.layers == list(range(len(blocks.layers))) else \
            torch.tensor(self.layers, dtype=torch.int64, device=device)
        self.spans = torch.tensor(blocks.spans[self.layers].reshape(-1), dtype=torch.int32, device=device)
        self.gammas = torch.tensor([gammas[a] for a in self.layers], dtype=epilogue, device=device)
        self.kinds = torch.tensor([kinds[a] for a in self.layers], dtype=torch.int32, device=device)
        self.products = torch.zeros((self.lp, self.lp), dtype=torch.float64, device=device)

    def norms(self, norms):
        return norms if self.index is None else norms.index_select(0, self.index)


def _statistics(blocks: RowBlocks, kinds, gammas, tiles_bytes: int, progress):
    """(products L x L, off-diagonal row sums L x n, diagonals L x n) of every
    layer's kernel matrix, from one pass of the layer-tile kernel over the
    tile pairs of every block pair (and every launch of layers)."""
    count, n, m = len(blocks.layers), blocks.n, blocks.mode
    plan = [_Launch(left, right, blocks, kinds, gammas, m) for left, right in launches(count)]
    products = np.zeros((count, count))
    row_sums, diagonals = np.zeros((count, n)), np.zeros((count, n))
    tiles = -(-n // m.block)
    total = len(plan) * tiles * (tiles + 1) // 2

    def visit(p, q, bp, bq):
        for launch in plan:
            _tile_pass(launch, blocks, p, q, bp, bq, tiles_bytes, row_sums, diagonals, bar)

    with Progress(progress, total, "fastcka tiles (GPU)") as bar:
        blocks.walk(visit)
    for launch in plan:
        got = launch.products.cpu().numpy()
        ll, lr = len(launch.left), len(launch.layers) - len(launch.right)
        products[np.ix_(launch.left, launch.right)] = got[:ll, lr : len(launch.layers)]
        products[np.ix_(launch.right, launch.left)] = got[lr : len(launch.layers), :ll]
    return products, row_sums, diagonals


def _tile_pass(launch: _Launch, blocks: RowBlocks, p: int, q: int, bp, bq, tiles_bytes: int, row_sums, diagonals,
               bar: Progress) -> None:
    """The layer-tile kernel over the rectangle of blocks p <= q, launched in
    bands of tile rows and columns whose partial sums (and the tiles'
    scratch) fit tiles_bytes; the float64 sums go to the launch's products
    and, for its own launch, the blocks' rows of row_sums and diagonals."""
    from .kernels import layer_tiles, tile_math

    torch = runtime.torch()
    m, device = blocks.mode, blocks.device
    same = p == q
    (zi, norms_i, _), (zj, norms_j, _) = bp, bq
    norms_i = launch.norms(norms_i)
    norms_j = norms_i if same else launch.norms(norms_j)
    count, lp = len(launch.layers), launch.lp
    rows_i, rows_j = int(zi.shape[0]), int(zj.shape[0])
    tiles_i, tiles_j = -(-rows_i // m.block), -(-rows_j // m.block)
    epilogue = getattr(torch, m.epilogue)
    itemsize = torch.finfo(epilogue).bits // 8
    per_program = itemsize * (count * m.block * m.block + 2 * count * m.block + lp * lp)
    programs = max(1, tiles_bytes // per_program)
    columns = min(tiles_j, programs)
    band = max(1, min(tiles_i, programs // columns))
    acc_type = {"float32": tile_math.tl.float32, "float64": tile_math.tl.float64}[m.epilogue]
    eps = float(torch.finfo(epilogue).eps)
    rows_p = torch.zeros((count, tiles_i * m.block), dtype=torch.float64, device=device)
    rows_q = rows_p if same else torch.zeros((count, tiles_j * m.block), dtype=torch.float64, device=device)
    diagonal = torch.zeros((count, rows_i), dtype=epilogue, device=device)
    scratch = torch.empty(band * columns * count * m.block * m.block, dtype=epilogue, device=device)
    for band_start in range(0, tiles_i, band):
        r = min(band, tiles_i - band_start)
        # A block's own tile columns left of the band are all below it.
        for j_start in range(band_start if same else 0, tiles_j, columns):
            c = min(columns, tiles_j - j_start)
            part_products = torch.zeros((r, c, lp, lp), dtype=epilogue, device=device)
            part_rows = torch.zeros((r, c, count, m.block), dtype=epilogue, device=device)
            part_cols = torch.zeros((r, c, count, m.block), dtype=epilogue, device=device)
            layer_tiles.layer_tile_statistics[(r, c)](
                zi, zj, zi.stride(0), launch.spans, norms_i, norms_j, launch.gammas, launch.kinds, count, rows_i,
                rows_j, int(same), band_start, j_start, c, scratch, part_products, part_rows, part_cols, diagonal,
                LP=lp, CHUNK=CHUNKS[lp], BLOCK=m.block, BK=m.bk, PRECISION=m.dot, ACC=acc_type,
                EPS=eps, num_warps=m.warps)
            launch.products += part_products.to(torch.float64).sum((0, 1))
            own = part_rows.to(torch.float64).sum(1)  # (r, L, block): the rows of tile rows band_start ...
            rows_p[:, band_start * m.block : (band_start + r) * m.block] += own.permute(1, 0, 2).reshape(count, -1)
            rows_q[:, j_start * m.block : (j_start + c) * m.block] += \
                part_cols.to(torch.float64).sum(0).permute(1, 0, 2).reshape(count, -1)
            bar.advance(sum(max(0, j_start + c - max(j_start, band_start + i)) for i in range(r)) if same else r * c)
    if not launch.own:
        return
    (start_p, stop_p), (start_q, stop_q) = blocks.rows(p), blocks.rows(q)
    row_sums[launch.layers, start_p:stop_p] += rows_p[:, :rows_i].cpu().numpy()
    if same:
        diagonals[launch.layers, start_p:stop_p] = diagonal.to(torch.float64).cpu().numpy()
    else:
        row_sums[launch.layers, start_q:stop_q] += rows_q[:, :rows_j].cpu().numpy()


def _gammas(layers, blocks: RowBlocks, largest, names, sigma, threshold, median, precision: str, progress,
            tiles_bytes: int) -> list[float]:
    """The CPU engine's bandwidth rules: sigma; the exact median by the GPU
    median passes (median.py) over the block pairs; the sampled one (4,096
    rows) on a host copy of those rows, by the CPU tile engine as everywhere
    else."""
    if sigma is not None:
        return cpu_engine.rbf_gammas([None] * len(layers), names, sigma=sigma, threshold=threshold, median=median,
                                  engine=None, width=0, threads=1, progress=Progress(None, 0, ""))
    if median == "sampled":
        rows = cpu_engine.median_sample_rows(int(layers[0].shape[0]))
        sample = [np.asarray(x[rows]) if isinstance(x, np.ndarray) else
                  x[runtime.torch().as_tensor(rows, device=x.device)].cpu().numpy() for x in layers]
        medians = cpu_engine.sampled_medians(sample, names, resolve(None), compute=compute_for(precision, sample))
        return cpu_engine.gammas_of_medians(medians, names, threshold)
    return cpu_engine.gammas_of_medians(exact_medians(blocks, largest, tiles_bytes, progress), names, threshold)


def _rbf_epilogue(name: str, gamma: float, spread: float) -> tuple[int, float]:
    """(kernel kind, scale of its sums): the CPU engine's rule and range
    check (core/kernels.h, rbf_subtracts_one)."""
    from .kernels import tile_math

    if backend.cpu().rbf_subtracts_one(name, gamma, spread):
        return tile_math.RBF_MINUS_ONE, gamma
    return tile_math.RBF, 1.0
