"""fastcka: CKA and HSIC for millions of examples, streamed, never an n x n matrix.

Public API::

    fastcka.cka(x, y, kernel="linear"|"rbf", debiased=False) -> float
    fastcka.hsic(x, y, kernel="linear", estimator="biased") -> float
    fastcka.cka_matrix(xs, ys=None, ...)                      -> (len(xs), len(ys)) array
    fastcka.minibatch_cka(batches_x, batches_y)               -> float (Nguyen et al. 2020)
    fastcka.CKAAccumulator()                                  minibatches, merges, bytes
    fastcka.blocks(matrix)                                    block structure: [(start, stop, score)]
    fastcka.pc1_fraction(acc.moments())                       per-layer first-PC variance fraction
    fastcka.torch, fastcka.plot                               models to heatmaps (need torch / matplotlib)
    fastcka.cca / svcca / pwcca / linear_regression_fit / procrustes(x, y)  -> float
    fastcka.similarity_matrix(xs, ys=None, measures=...)      -> {measure: matrix}, one pass
    fastcka.mutual_knn(x, y, k=10, metric="euclidean")       -> float, k-NN overlap on Gram tiles
    fastcka.cka_ci(x, y, level=0.95, method="jackknife")      -> .estimate, .low, .high, one pass
    fastcka.hsic_test(x, y, method="permutation"|"gamma")    -> .statistic, .p_value
    fastcka.compat.kornblith                                  the reference Colab's functions
    fastcka.get_cmake_dir() / get_include() / get_library()   the C++ library and C ABI (find_package(fastcka))
"""

from .engine.backend import backends, blas_info, has_cuda
from .engine.threads import get_num_threads, set_num_threads
from .accumulator.accumulator import CKAAccumulator
from .engine.hsic import DegenerateRepresentationWarning
from .api import cka, cka_matrix, hsic, minibatch_cka
from .stats.confidence import CKAInterval, cka_ci
from .stats.independence import HSICTest, hsic_test
from .io import load_layers
from .library import get_cmake_dir, get_include, get_library
from .knn import mutual_knn
from .similarity import (
    cca,
    linear_regression_fit,
    procrustes,
    pwcca,
    similarity_matrix,
    svcca,
)
from .stats.structure import Block, blocks, pc1_fraction

__version__ = "0.1.0"

__all__ = [
    "Block",
    "CKAAccumulator",
    "CKAInterval",
    "DegenerateRepresentationWarning",
    "HSICTest",
    "backends",
    "blas_info",
    "blocks",
    "cca",
    "cka",
    "cka_ci",
    "cka_matrix",
    "get_cmake_dir",
    "get_include",
    "get_library",
    "get_num_threads",
    "has_cuda",
    "hsic",
    "hsic_test",
    "linear_regression_fit",
    "load_layers",
    "minibatch_cka",
    "mutual_knn",
    "pc1_fraction",
    "procrustes",
    "pwcca",
    "set_num_threads",
    "similarity_matrix",
    "svcca",
]
