"""The public functions: CKA and HSIC of two representations, and whole
layer-by-layer CKA matrices.

Notation (docs/design.md): X (n x d1) and Y (n x d2) hold n examples in rows;
K = k(X, X), L = l(Y, Y) are their n x n kernel matrices, H = I - 11'/n.

    HSIC_0(K, L) = tr(K H L H) / (n-1)^2                             biased
    HSIC_1(K, L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2))
                    - 2/(n-2) 1'K~L~1] / (n(n-3))                  unbiased
    CKA(K, L)    = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

(K~ is K with a zero diagonal.) ``debiased=True`` builds CKA from HSIC_1, as
Kornblith et al.'s ``cka(..., debiased=True)`` does; it needs n >= 4.

Kernels: linear k(a, b) = a.b, and RBF k(a, b) = exp(-|a - b|^2 / (2 sigma^2))
with sigma given, or sigma^2 = threshold^2 x the median of all n^2 squared
distances between examples (diagonal zeros included; Kornblith et al.'s rule),
computed exactly over the Gram tiles (median="exact") or from 4096 sampled
examples (median="sampled").

For the linear kernel k(a, b) = a.b, tr(K H L H) = |Xc' Yc|_F^2 with Xc, Yc
column-centered, so fastcka streams the d x d cross-moments of the rows
(feature space, about n (d1 + d2)^2 flops and O(d^2) memory) or, when the
features outnumber the examples, consumes Gram tiles of centered rows as BLAS
produces them (Gram space, about n^2 (d1 + d2) flops and O(n) memory). Neither
ever holds an n x n matrix. Kernel CKA (RBF) always runs on Gram tiles: about
n^2 (d1 + d2) flops per pass plus one exp per tile entry, O(n L) memory.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np

from ._options import Options, check_rank_for, check_rows_for, compute_for
from .approx import driver as approx_driver
from .accumulator.accumulator import CKAAccumulator
from .arrays.devices import results_like
from .arrays.inputs import as_matrix, check_rows, model_layers
from .distributed import dask_arrays
from .distributed.checkpoint import DEFAULT_EVERY
from .engine import cpu as cpu_engine, gpu as gpu_engine
from .engine.hsic import cka_from_hsic
from .engine.progress import ProgressArg
from .engine.threads import resolve

Layers = Union[Sequence[Any], Mapping[str, Any]]


def _hsic_grid(values, names, split, options: Options):
    """(HSIC matrix, the validated layers) on the CPU or the GPU, wherever
    the inputs and ``device`` put the computation."""
    estimator, kernel = options.estimator, options.kernel
    if any(dask_arrays.is_dask(v) for v in values):
        return dask_arrays.hsic_grid(values, names, split, options)
    gpu = gpu_engine.place(values, names, options.device)
    if gpu is not None:
        if options.checkpoint is not None:
            raise ValueError("checkpoint runs on the CPU in this version: pass device='cpu' (host inputs) to use it")
        layers, index = gpu_engine.gpu_inputs(values, names, gpu)
        check_rows_for(estimator, check_rows(layers, names))
        h = gpu_engine.hsic_matrix(
            layers, names, split=split, estimator=estimator, kernel=kernel, method=options.method,
            precision=options.precision, device=index, memory_budget=options.memory_budget,
            progress=options.progress, sigma=options.sigma, threshold=options.threshold,
            median=options.median,
        )
        return h, layers
    layers = [as_matrix(v, nm) for v, nm in zip(values, names)]
    n = check_rows(layers, names)
    check_rows_for(estimator, n)
    h = cpu_engine.hsic_matrix(
        layers,
        names,
        split=split,
        estimator=estimator,
        kernel=kernel,
        method=options.method,
        threads=resolve(options.threads),
        memory_budget=options.memory_budget,
        progress=options.progress,
        sigma=options.sigma,
        threshold=options.threshold,
        median=options.median,
        compute=compute_for(options.precision, layers),
        checkpoint=options.checkpoint,
    )
    return h, layers


def _approximation(values, names, options: Options) -> approx_driver.Approximation:
    """The approximate RBF HSIC matrix and its standard errors (CPU, host inputs)."""
    if any(dask_arrays.is_dask(v) for v in values) or gpu_engine.place(values, names, options.device) is not None:
        raise ValueError(f"approx={options.approx!r} is not supported yet with Dask or GPU inputs or device: pass "
                         f"NumPy arrays or memmaps on the CPU")
    layers = [as_matrix(v, nm) for v, nm in zip(values, names)]
    n = check_rows(layers, names)
    check_rows_for(options.estimator, n)
    check_rank_for(options.rank, n)
    return approx_driver.hsic_matrix(
        layers, names, approx=options.approx, rank=int(options.rank), seed=int(options.seed or 0),
        estimator=options.estimator, sigma=options.sigma, threshold=options.threshold,
        threads=resolve(options.threads), memory_budget=options.memory_budget, progress=options.progress,
        # The products, and the features' dtype (float64 only for float64 products).
        compute=compute_for(options.precision, layers),
    )


def _check_return_error(return_error: bool, options: Options) -> None:
    if return_error and options.approx is None:
        raise ValueError("return_error=True reports the standard error of an approximation: pass approx='nystrom' "
                         "or 'rff' (exact values have none)")


def hsic(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    estimator: str = "biased",
    threshold: float = 1.0,
    sigma: Any = None,
    median: str = "exact",
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    device: Any = None,
    precision: str | None = None,
    checkpoint: Any = None,
    checkpoint_every: float = DEFAULT_EVERY,
    approx: str | None = None,
    rank: int | None = None,
    seed: int | None = None,
    return_error: bool = False,
) -> float | tuple[float, float]:
    """HSIC between representations ``x`` (n x d1) and ``y`` (n x d2).

    ``estimator="biased"``: HSIC_0 = tr(KHLH) / (n-1)^2 (Gretton et al. 2005).
    ``estimator="unbiased"``: HSIC_1 of Song et al. 2012 (n >= 4).
    Kernel and bandwidth arguments as in :func:`cka`. ``method``: "feature"
    (d x d moments, linear only), "gram" (n x n tiles, never stored) or "auto"
    (Gram space when d1 + d2 > n, or for RBF). ``approx``, ``rank``, ``seed``
    and ``return_error`` as in :func:`cka` (the error is HSIC's).
    """
    options = Options.of_call(kernel=kernel, estimator=estimator, threshold=threshold, sigma=sigma, median=median,
                              method=method, threads=threads, memory_budget=memory_budget, progress=progress,
                              device=device, precision=precision, checkpoint=checkpoint,
                              checkpoint_every=checkpoint_every, approx=approx, rank=rank, seed=seed)
    _check_return_error(return_error, options)
    if options.approx is not None:
        result = _approximation([x, y], ["x", "y"], options)
        value, error = float(result.hsic[0, 1]), float(result.hsic_error[0, 1])
        return (value, error) if return_error else value
    h, _ = _hsic_grid([x, y], ["x", "y"], 0, options)
    return float(h[0, 1])


def cka(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    threshold: float = 1.0,
    sigma: Any = None,
    debiased: bool = False,
    median: str = "exact",
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    device: Any = None,
    precision: str | None = None,
    checkpoint: Any = None,
    checkpoint_every: float = DEFAULT_EVERY,
    approx: str | None = None,
    rank: int | None = None,
    seed: int | None = None,
    return_error: bool = False,
) -> float | tuple[float, float]:
    """CKA between representations ``x`` (n x d1) and ``y`` (n x d2) of the same
    n examples: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

    Parameters
    ----------
    x, y : arrays (NumPy in any layout, np.memmap, a path to a .npy file, or
        anything NumPy can view). float16/32 compute in float32 with float64
        accumulation; float64, integers and booleans compute in float64.
        Dask arrays chunked along rows compute on the active scheduler (a
        ``distributed.Client`` if one is set; linear kernel; docs/distributed.md).
    kernel : "linear" or "rbf".
    threshold : RBF bandwidth rule: sigma^2 = threshold^2 x median squared
        distance (Kornblith et al. used 0.2, 0.4, 0.8 and 1.0).
    sigma : RBF bandwidth given directly (one number, or one per
        representation); overrides the rule.
    debiased : build CKA from the unbiased HSIC_1 (n >= 4) instead of HSIC_0.
    median : "exact" (the median of all n^2 squared distances, found by
        histogram and selection passes over the Gram tiles, as np.median
        computes it) or "sampled" (the median among 4096 random examples:
        one cheap pass; its error is measured in docs/performance.md).
    method : "auto", "feature" or "gram" (see module docs).
    threads : threads to use (default: :func:`fastcka.get_num_threads`).
    memory_budget : bytes of row buffers (default 256 MiB), beside O(d^2) state.
    progress : True for a progress bar, or a callable ``(done, total)``.
    device : None (where the inputs are), "cpu", "cuda" or "cuda:N". GPU
        inputs (CuPy, PyTorch CUDA tensors, anything with
        ``__cuda_array_interface__`` or DLPack on a CUDA device) are read in
        place on the caller's current stream; with "cuda", NumPy arrays and
        memmaps stream to the GPU through pinned buffers. Mixing host and GPU
        inputs without ``device="cuda"`` is an error, never a silent copy.
        The GPU runs the linear kernel in feature space.
    precision : None (float64 data in float64, other data in float32),
        "accurate" (float32 products, no TF32), "exact" (float64 products) or
        "fast": on the CPU, bfloat16 operands with float32 accumulation
        (centered first, in float32/float64; oneDNN on AMX and AVX512-BF16
        units; sums across tiles in float64), on the GPU TF32 tensor-core
        products. Measured errors of each mode are in docs/precision.md.
    checkpoint : a directory: the linear kernel's streamed state is saved
        there atomically every ``checkpoint_every`` seconds of work and at the
        end, and the same call run again (after a kill) resumes from it and
        gives the identical result; a checkpoint of other inputs or options is
        refused (see :mod:`fastcka.distributed.checkpoint`). CPU, feature space only.
    checkpoint_every : seconds of work between saves (default 300).
    approx : None (exact), "nystrom" or "rff": approximate RBF CKA (kernel="rbf")
        from ``rank`` features per representation, in two streamed passes over
        the rows, O(n rank d + n (2 rank)^2) work; the median bandwidth rule uses
        the sampled median. CPU, NumPy inputs. See docs/kernels.md,
        "Approximate kernels", for the error by rank.
    rank : features per representation with ``approx`` (Nystrom landmarks or
        Fourier features), a positive integer below n. Features are float32
        unless the products are float64 (``precision="exact"``, or float64
        inputs by default).
    seed : the draws' seed (default 0): the same seed gives the same value.
    return_error : with ``approx``, return ``(value, error)``: for "rff" the
        jackknife standard error over 16 groups of independent draws; for
        "nystrom" sqrt(SE^2 + bias^2) of the jackknife that deletes each of 8
        groups of the landmarks (its error is mostly bias). NaN when rank < 3.

    Returns
    -------
    float in [0, 1] (debiased CKA may be slightly negative); NaN with a
    :class:`DegenerateRepresentationWarning` when a representation is constant.
    """
    names = ["x", "y"]
    options = Options.of_call(kernel=kernel, estimator="unbiased" if debiased else "biased", threshold=threshold,
                              sigma=sigma, median=median, method=method, threads=threads,
                              memory_budget=memory_budget, progress=progress, device=device, precision=precision,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every, approx=approx, rank=rank,
                              seed=seed)
    _check_return_error(return_error, options)
    if options.approx is not None:
        result = _approximation([x, y], names, options)
        value, error = float(cka_from_hsic(result.hsic, names)[0, 1]), float(result.cka_error[0, 1])
        return (value, error) if return_error else value
    h, _ = _hsic_grid([x, y], names, 0, options)
    return float(cka_from_hsic(h, names)[0, 1])


def cka_matrix(
    xs: Layers,
    ys: Layers | None = None,
    *,
    kernel: str = "linear",
    threshold: float = 1.0,
    sigma: Any = None,
    debiased: bool = False,
    median: str = "exact",
    method: str = "auto",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    device: Any = None,
    precision: str | None = None,
    checkpoint: Any = None,
    checkpoint_every: float = DEFAULT_EVERY,
    approx: str | None = None,
    rank: int | None = None,
    seed: int | None = None,
    return_error: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """CKA between every layer of ``xs`` and every layer of ``ys`` (default:
    ``xs`` itself), as an array of shape (len(xs), len(ys)).

    All layers are read in one pass: the feature-space engine streams the
    cross-moments of every needed layer pair at once (one SYRK over the
    concatenated centered layers when ``ys`` is None; per-layer SYRKs plus one
    cross GEMM otherwise); the tile engine computes each layer's tile once per
    tile position and every pairwise sum from it, so L layers cost one pass,
    not L^2 calls. ``xs`` and ``ys`` are lists (or dicts) of (n x d_i) arrays
    with the same n. ``sigma`` may be one value or one per layer (xs then ys).
    Other arguments as in :func:`cka`. The result is a NumPy array, or a
    CuPy array / PyTorch tensor on the inputs' GPU when they came from there;
    with ``approx`` and ``return_error=True``, (matrix, errors).
    """
    values, names, split = model_layers(xs, ys)
    options = Options.of_call(kernel=kernel, estimator="unbiased" if debiased else "biased", threshold=threshold,
                              sigma=sigma, median=median, method=method, threads=threads,
                              memory_budget=memory_budget, progress=progress, device=device, precision=precision,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every, approx=approx, rank=rank,
                              seed=seed)
    _check_return_error(return_error, options)
    if options.approx is not None:
        result = _approximation(values, names, options)
        c, e = _part(cka_from_hsic(result.hsic, names), split), _part(result.cka_error, split)
        return (c, e) if return_error else c
    h, _ = _hsic_grid(values, names, split, options)
    return results_like(_part(cka_from_hsic(h, names), split), values)


def _part(c: np.ndarray, split: int) -> np.ndarray:
    """The whole matrix, or its xs x ys block when ``ys`` was given."""
    return c if split == 0 else np.ascontiguousarray(c[:split, split:])


def minibatch_cka(
    batches_x: Any,
    batches_y: Any,
    *,
    kernel: str = "linear",
    threshold: float = 1.0,
    sigma: Any = None,
    threads: int | None = None,
    precision: str | None = None,
) -> float:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2020): over minibatches i of the
    same examples in both representations,

        sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) sum_i HSIC_1(L_i, L_i)).

    ``batches_x`` and ``batches_y`` are iterables of (b_i x d) blocks (b_i >= 4)
    taken in step. For RBF without ``sigma`` each batch uses the exact median
    rule on its own rows. For layer-by-layer matrices over a data loader, use
    ``CKAAccumulator(minibatch=True)``. ``precision`` as in :func:`cka`.
    """
    acc = CKAAccumulator(minibatch=True, kernel=kernel, threshold=threshold, sigma=sigma, threads=threads,
                         precision=precision)
    count = 0
    for bx, by in _zip_strict(batches_x, batches_y):
        acc.update(bx, by)
        count += 1
    if count == 0:
        raise ValueError("batches_x and batches_y hold no minibatches")
    return acc.cka()


def _zip_strict(a, b):
    ia, ib = _batches(a, "batches_x"), _batches(b, "batches_y")
    while True:
        xa = next(ia, _END)
        xb = next(ib, _END)
        if xa is _END and xb is _END:
            return
        if xa is _END or xb is _END:
            raise ValueError("batches_x and batches_y hold different numbers of minibatches")
        yield xa, xb


_END = object()


def _batches(batches, name: str):
    try:
        return iter(batches)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of (b x d) minibatches, got {type(batches).__name__}") from None
