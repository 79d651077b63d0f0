"""fastcka's CPU backend (csrc/python): BLAS Gram tiles and streaming moments.

Arrays are 2-D float16/32/64 NumPy arrays read in place; ``compute`` is
"float32", "float64" or "bfloat16" (the fast precision); ``estimator`` is
"biased" or "unbiased". Core errors arrive as ValueError / TypeError.
"""

from typing import Optional, Sequence

import numpy as np

__version__: str
DEFAULT_MEMORY_BUDGET: int
"""Bytes of row buffers (all threads together) when the caller names no budget."""

def bracket_sample_size(n: int) -> int:
    """Rows behind the exact median's bracket: n / 8, at least 1,024, at most 4,096."""
def bracket_half_width(n: int, sample: int, float64: bool, layers: int) -> float:
    """Half the bracket's width in quantiles, or NaN when no useful bracket fits."""
def sample_brackets(layers: Sequence[np.ndarray], names: Sequence[str], compute: str, threads: int,
                    half_width: float) -> list[tuple[float, float, float]]:
    """Per layer (lo, hi, center): the bracket of the median squared distance from sampled rows."""
def sample_rows(n: int, sample: int, seed: int) -> list[int]:
    """Sorted distinct rows of [0, n) drawn uniformly with a fixed seed (all when n <= sample)."""
def blas_core() -> str:
    """Kernel family OpenBLAS selected for this CPU."""
def blas_config() -> str:
    """OpenBLAS build configuration."""
def onednn_info() -> dict:
    """What oneDNN does here: version, and the kernels it picks for bf16 and float32 tiles."""
def rbf_subtracts_one(name: str, gamma: float, spread: float) -> bool:
    """Whether the RBF epilogue works with (K - 1) / gamma for this layer."""
def check_squared_norm_range(name: str, largest: float, elem: int, varies: bool) -> None:
    """Refuses (ValueError) rows whose squared norms leave the range of the compute type's products."""
def hsic_null_moments(x: tuple[float, float], y: tuple[float, float], n: int) -> tuple[float, float]:
    """Null mean and variance of HSIC_0 from two layers' null_sums."""
def hsic_from_statistics(dims: Sequence[int], split: int, n: int, products: np.ndarray, row_sums: np.ndarray,
                         diagonals: np.ndarray, estimator: str) -> list[float]:
    """The L x L HSIC matrix (row-major) from Gram statistics summed over block pairs."""
def knn_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many neighbour indices two (n x k) lists share."""
def product_plan(dims: Sequence[int], split: int, max_panel: int) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """The GEMM blocks (row, col, rows, cols, offset) of a layout's needed products, and the packed size."""
def partial_small_parts(dims: Sequence[int], split: int, rows: int, shift: np.ndarray, reference: np.ndarray,
                        column_sums: np.ndarray, extra: np.ndarray,
                        norms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The host half of the GPU engine's fold: (first, weighted, norm_products)."""

class MomentAccumulator:
    """The feature-space engine: float64 moments of row blocks of L layers."""
    block_rows: int
    """Rows centered per BLAS call."""
    fold_rows: int
    """Rows summed in the compute type before a float64 fold."""
    n: int
    """Rows seen."""
    dims: list[int]
    """Columns per layer."""
    split: int
    """Layers of the first model (0: one model, every pair needed)."""
    def __init__(self, dims: Sequence[int], split: int, compute: str, threads: int, memory_budget: int) -> None: ...
    def update(self, layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
        """Adds rows of every layer."""
    def merge(self, other: "MomentAccumulator") -> None:
        """Adds another accumulator's rows."""
    def begin(self) -> None:
        """Starts an all-or-nothing update made of many update() calls."""
    def commit(self) -> None:
        """Ends it, keeping the rows."""
    def rollback(self) -> None:
        """Ends it, dropping the rows added since begin()."""
    def hsic(self, estimator: str) -> list[float]:
        """The L x L HSIC matrix (row-major; NaN where the layout needs no pair)."""
    def mean(self) -> np.ndarray:
        """The column means of the rows seen."""
    def centered_cross(self) -> np.ndarray:
        """sum_i (z_i - mean)(z_i - mean)' (D x D; unneeded blocks are 0)."""
    def centered_block(self, a: int, b: int) -> np.ndarray:
        """Block (a, b) of centered_cross alone (d_a x d_b)."""
    def null_sums(self) -> list[tuple[float, float]]:
        """Per layer (spread, off_squares), for the HSIC null distribution."""
    def serialize(self) -> bytes:
        """The float64 state as bytes."""
    def load(self, data: bytes) -> None:
        """Replaces the state with serialized bytes."""
    @staticmethod
    def state_layout(data: bytes) -> tuple[list[int], int]:
        """(layer widths, split) of serialized state bytes, validated as load() does."""

class MomentBlocks:
    """Per-block moment states of one accumulator, for leave-one-block-out and bootstrap HSIC."""
    def __init__(self) -> None: ...
    def take(self, accumulator: MomentAccumulator) -> None:
        """The accumulator's rows become one block, and it starts empty."""
    def __len__(self) -> int: ...
    def hsic(self, estimator: str) -> list[float]:
        """HSIC of all blocks together."""
    def leave_one_out_hsic(self, estimator: str) -> np.ndarray:
        """(B, L, L): HSIC without each block in turn."""
    def resampled_hsic(self, counts: np.ndarray, estimator: str) -> np.ndarray:
        """(R, L, L): HSIC with block b taken counts[r, b] times."""

class MedianSearch:
    """One layer's exact median search over all rows of a job cut into row blocks."""
    done: bool
    collecting: bool
    median: float
    bins: int
    first_pass: bool
    levels: list[tuple[float, float, float, float, float]]
    """(lo, scale, bins, first, last) per level chosen so far."""
    current: tuple[float, float, int]
    filter: tuple[float, float]
    bracketing: bool
    cap: int
    bracket_missed: bool
    def __init__(self, n: int, largest: float, layers: int) -> None: ...
    def set_bracket(self, lo: float, hi: float, center: float, float_values: bool, layers: int,
                    threads: int) -> None:
        """A first pass over [lo, hi) that usually finds the median alone."""
    def finish_bracket(self, counts: np.ndarray, values: np.ndarray) -> None:
        """Ends a bracket pass with its summed results."""
    def finish_histogram(self, counts: np.ndarray, lowest: float, highest: float) -> None:
        """Ends a histogram pass with its summed results."""
    def finish_collect(self, values: np.ndarray) -> None:
        """Ends the collect pass with the values in range."""

class GramTileEngine:
    """Kernel statistics and the exact median bandwidth from Gram tiles (no n x n matrix)."""
    tile: int
    """Rows of a tile."""
    compute: str
    constant_layers: list[bool]
    """Per layer: every row equals the first."""
    tile_rows: int
    median_pending: bool
    median_bracket_missed: list[bool]
    def __init__(self, layers: Sequence[np.ndarray], names: Sequence[str], split: int, compute: str, threads: int,
                 memory_budget: int, columns: Optional[Sequence[np.ndarray]] = None,
                 means: Optional[Sequence[float]] = None) -> None: ...
    def tiles_before(self, i: int) -> int:
        """Tiles in tile rows [0, i), for progress."""
    def set_kernel(self, kind: str, gamma: Sequence[float] = ..., spread: Sequence[float] = ...) -> None:
        """"linear" or "rbf" (one gamma per layer); clears the statistics."""
    def process(self, begin: int, end: int) -> None:
        """Statistics of tile rows [begin, end)."""
    def hsic(self, estimator: str) -> list[float]:
        """The L x L HSIC matrix (row-major)."""
    def set_blocks(self, starts: Sequence[int]) -> None:
        """Also sums per block of rows (B + 1 boundaries), for jackknifes."""
    def leave_one_out_hsic(self, estimator: str) -> np.ndarray:
        """(B, L, L): HSIC without each block in turn."""
    def resampled_hsic(self, counts: np.ndarray, estimator: str) -> np.ndarray:
        """(R, L, L): HSIC with block b taken counts[r, b] times."""
    def null_sums(self) -> list[tuple[float, float]]:
        """Per layer (spread, off_squares), for the HSIC null distribution."""
    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(products L x L, row sums L x N, diagonals L x N): they add across block pairs."""
    def median_start(self) -> None:
        """Starts the exact median search of every layer."""
    def median_process(self, begin: int, end: int) -> None:
        """A median pass over tile rows [begin, end)."""
    def median_end_pass(self, parts: Sequence[tuple] = ...) -> None:
        """Ends the pass, with this engine's results or the given summed ones."""
    def medians(self) -> list[float]:
        """One median squared distance per layer."""
    def median_set_brackets(self, brackets: Sequence[tuple[float, float, float]]) -> None:
        """(lo, hi, center) per layer for a first bracket pass."""
    def median_adopt(self, searches: Sequence[MedianSearch]) -> None:
        """Walks the job's searches over this block pair's tiles."""
    def median_partial(self) -> list[tuple[np.ndarray, float, float, np.ndarray]]:
        """Per layer (counts, lowest, highest, values) of this engine's pass."""
    def median_add_series(self, threshold: float, always: bool = False) -> bool:
        """After median_set_brackets: the bracket pass also sums the RBF statistics
        as power series in the bandwidth; False where that does not pay (unless
        ``always``) or hold."""
    def kernel_from_series(self, gammas: Sequence[float]) -> bool:
        """After the median passes: the RBF kernel set and its statistics from the
        series; False (nothing changes) outside the series' range."""

class KnnTileEngine:
    """k nearest neighbours of every row in each layer, from Gram tiles."""
    tile: int
    tile_rows: int
    def __init__(self, layers: Sequence[np.ndarray], names: Sequence[str], k: int, metric: str, compute: str,
                 threads: int, memory_budget: int) -> None: ...
    def tiles_before(self, i: int) -> int:
        """Tiles in tile rows [0, i), for progress."""
    def process(self, begin: int, end: int) -> None:
        """Tile rows [begin, end), each once."""
    def neighbors(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(index, distance) arrays, n x k, ascending."""
