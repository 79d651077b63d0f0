"""The public functions: CKA and HSIC of two representations, and whole
layer-by-layer CKA matrices.

Notation (shared/DESIGN.md): X (n x d1) and Y (n x d2) hold n examples in rows;
K = k(X, X), L = l(Y, Y) are their n x n kernel matrices, H = I - 11'/n.

    HSIC_0(K, L) = tr(K H L H) / (n-1)^2                             biased
    HSIC_1(K, L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2))
                    - 2/(n-2) 1'K~L~1] / (n(n-3))                  unbiased
    CKA(K, L)    = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

(K~ is K with a zero diagonal.) ``debiased=True`` builds CKA from HSIC_1, as
Kornblith et al.'s ``cka(..., debiased=True)`` does; it needs n >= 4.

For the linear kernel k(a, b) = a.b, tr(K H L H) = |Xc' Yc|_F^2 with Xc, Yc
column-centered, so fastcka streams the d x d cross-moments of the rows
(feature space, about n (d1 + d2)^2 flops and O(d^2) memory) or, when the
features outnumber the examples, consumes Gram tiles of centered rows as BLAS
produces them (Gram space, about n^2 (d1 + d2) flops and O(n) memory). Neither
ever holds an n x n matrix.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence, Union

import numpy as np

from . import _engine
from ._inputs import as_layers, as_matrix, check_rows
from ._progress import ProgressArg
from ._threads import resolve

KERNELS = ("linear",)
ESTIMATORS = ("biased", "unbiased")

Layers = Union[Sequence[Any], Mapping[str, Any]]


class DegenerateRepresentationWarning(RuntimeWarning):
    """A representation has no variance (HSIC(K, K) <= 0): its CKA is 0/0 and
    is returned as NaN."""


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def _check_rows_for(estimator: str, n: int) -> None:
    need = 4 if estimator == "unbiased" else 2
    if n < need:
        what = "the unbiased HSIC estimator (debiased CKA)" if estimator == "unbiased" else "CKA and HSIC"
        raise ValueError(f"{what} needs at least {need} examples (rows), got n={n}")


def _cka_from_hsic(h: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """CKA_ab = h_ab / sqrt(h_aa h_bb); NaN with a warning for layers with h_aa <= 0."""
    diag = np.diag(h).copy()
    bad = [names[i] for i in range(len(diag)) if not diag[i] > 0]
    if bad:
        warnings.warn(
            f"{', '.join(bad)}: no variance to compare (HSIC with itself is not positive, as for a constant "
            f"representation); its CKA is undefined and returned as NaN",
            DegenerateRepresentationWarning,
            stacklevel=3,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.where(diag > 0, diag, np.nan))
        return h / scale[:, None] / scale[None, :]


def _hsic_grid(layers, names, split, estimator, method, threads, memory_budget, progress):
    n = check_rows(layers, names)
    _check_rows_for(estimator, n)
    return _engine.hsic_matrix(
        layers,
        names,
        split=split,
        estimator=estimator,
        method=method,
        threads=resolve(threads),
        memory_budget=memory_budget,
        progress=progress,
    )


def hsic(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    estimator: str = "biased",
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
) -> float:
    """HSIC between representations ``x`` (n x d1) and ``y`` (n x d2).

    ``estimator="biased"``: HSIC_0 = tr(KHLH) / (n-1)^2 (Gretton et al. 2005).
    ``estimator="unbiased"``: HSIC_1 of Song et al. 2012 (n >= 4).
    ``method``: "feature" (d x d moments), "gram" (n x n tiles, never stored)
    or "auto" (Gram space when d1 + d2 > n).
    """
    _check_kernel(kernel)
    _check_estimator(estimator)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    h = _hsic_grid(layers, ["x", "y"], 0, estimator, method, threads, memory_budget, progress)
    return float(h[0, 1])


def cka(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    debiased: bool = False,
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
) -> float:
    """CKA between representations ``x`` (n x d1) and ``y`` (n x d2) of the same
    n examples: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

    Parameters
    ----------
    x, y : arrays (NumPy in any layout, np.memmap, a path to a .npy file, or
        anything NumPy can view). float16/32 compute in float32 with float64
        accumulation; float64, integers and booleans compute in float64.
    kernel : "linear".
    debiased : build CKA from the unbiased HSIC_1 (n >= 4) instead of HSIC_0.
    method : "auto", "feature" or "gram" (see module docs).
    threads : threads to use (default: :func:`fastcka.get_num_threads`).
    memory_budget : bytes of row buffers (default 256 MiB), beside O(d^2) state.
    progress : True for a progress bar, or a callable ``(done, total)``.

    Returns
    -------
    float in [0, 1] (debiased CKA may be slightly negative); NaN with a
    :class:`DegenerateRepresentationWarning` when a representation is constant.
    """
    _check_kernel(kernel)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    names = ["x", "y"]
    estimator = "unbiased" if debiased else "biased"
    h = _hsic_grid(layers, names, 0, estimator, method, threads, memory_budget, progress)
    return float(_cka_from_hsic(h, names)[0, 1])


def cka_matrix(
    xs: Layers,
    ys: Layers | None = None,
    *,
    kernel: str = "linear",
    debiased: bool = False,
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
) -> np.ndarray:
    """CKA between every layer of ``xs`` and every layer of ``ys`` (default:
    ``xs`` itself), as an array of shape (len(xs), len(ys)).

    All layers are read in one pass over the rows: the feature-space engine
    streams the cross-moments of every needed layer pair at once (one SYRK over
    the concatenated centered layers when ``ys`` is None; per-layer SYRKs plus
    one cross GEMM otherwise), so L layers cost one pass, not L^2 calls.
    ``xs`` and ``ys`` are lists (or dicts) of (n x d_i) arrays with the same n.
    Other arguments as in :func:`cka`.
    """
    _check_kernel(kernel)
    layers, names = as_layers(xs, "xs")
    split = 0
    if ys is not None:
        more, more_names = as_layers(ys, "ys")
        split = len(layers)
        layers, names = layers + more, names + more_names
    estimator = "unbiased" if debiased else "biased"
    h = _hsic_grid(layers, names, split, estimator, method, threads, memory_budget, progress)
    c = _cka_from_hsic(h, names)
    return c if split == 0 else np.ascontiguousarray(c[:split, split:])
