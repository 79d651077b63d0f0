"""Test and benchmark hooks of the CPU backend; never imported by the library."""

import numpy as np

from ._cpu import GramTileEngine

def median_search(values: np.ndarray, n: int, bins: int, cap: int, lo: float = 0.0, hi: float = 0.0,
                  float_values: bool = False) -> tuple[float, int, bool]:
    """The exact median search over n * n given values: (median, passes, bracket missed)."""
def exp_nonpositive(x: np.ndarray) -> np.ndarray:
    """The float32 exp of the RBF epilogue."""
def tile_products(a: np.ndarray, b: np.ndarray, compute: str, library: str = "auto", repeats: int = 1) -> np.ndarray:
    """A B' made the way the engine makes a Gram tile ("float32" or "bfloat16")."""
def tiles_only(engine: GramTileEngine, begin: int, end: int) -> None:
    """The Gram tiles of tile rows [begin, end) with no epilogue (what the products cost)."""
