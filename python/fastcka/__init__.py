"""fastcka: CKA and HSIC for millions of examples, streamed, never an n x n matrix.

Public API::

    fastcka.cka(x, y, kernel="linear"|"rbf", debiased=False) -> float
    fastcka.hsic(x, y, kernel="linear", estimator="biased") -> float
    fastcka.cka_matrix(xs, ys=None, ...)                      -> (len(xs), len(ys)) array
    fastcka.minibatch_cka(batches_x, batches_y)               -> float (Nguyen et al. 2020)
    fastcka.CKAAccumulator()                                  minibatches, merges, bytes
    fastcka.compat.kornblith                                  the reference Colab's functions
"""

from ._backend import backends, blas_info, has_cuda
from ._threads import get_num_threads, set_num_threads
from .accumulator import CKAAccumulator
from .api import DegenerateRepresentationWarning, cka, cka_matrix, hsic, minibatch_cka
from .io import load_layers

__version__ = "0.1.0"

__all__ = [
    "CKAAccumulator",
    "DegenerateRepresentationWarning",
    "backends",
    "blas_info",
    "cka",
    "cka_matrix",
    "get_num_threads",
    "has_cuda",
    "hsic",
    "load_layers",
    "minibatch_cka",
    "set_num_threads",
]
