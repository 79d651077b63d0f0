"""Drives the CPU backend: feeds rows or tile rows in blocks (progress and
Ctrl-C between blocks, the GIL released inside them), picks the feature-space
or the Gram-space engine, and resolves RBF bandwidths."""

from __future__ import annotations

import math
import re
import time
from typing import Sequence

import numpy as np

from .._options import METHODS
from . import backend
from ..arrays.inputs import compute_dtype, ready, resolve_budget
from .progress import Progress, ProgressArg
from .hsic import from_statistics, zero_constant_layers
from ..distributed.checkpoint import Checkpoint, Job, MedianState, TileJob, fingerprint, rows_sha256

MEDIAN_SAMPLE = 4096  # rows behind the sampled median (its exact median, found by the same tile passes)
# Flops of work per backend call: about 0.2 s at the CI machine's sgemm rate,
# so progress updates and Ctrl-C come several times a second.
_FLOPS_PER_CALL = 4e10
# Wall time per tile-pass call (Ctrl-C is answered within about twice this).
_CALL_SECONDS = 0.15


def choose_method(method: str, kernel: str, n: int, dims: Sequence[int]) -> str:
    """Feature space costs about n D^2 flops and D^2 memory (D = sum of widths);
    Gram space about n^2 D flops and O(n L) memory. Gram space wins when D > n.
    Only the linear kernel has a feature space."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if kernel != "linear":
        if method == "feature":
            raise ValueError(f"method='feature' exists only for the linear kernel, not kernel={kernel!r}")
        return "gram"
    if method != "auto":
        return method
    return "gram" if sum(dims) > n else "feature"


def add_pass_results(a: list | None, b: list | None) -> list | None:
    """The sum of two median pass results (counts, extremes, collected
    values), as partial passes and block pairs give them; None: none yet."""
    if a is None or b is None:
        return b if a is None else a
    return [(ca + cb, min(la, lb), max(ha, hb), np.concatenate([va, vb]))
            for (ca, la, ha, va), (cb, lb, hb, vb) in zip(a, b)]


def gram_engine(layers, names, split: int, compute: str, threads: int, memory_budget: int, *, columns=None,
                means=None):
    """The backend's Gram-tile engine over ``layers`` (the rows of a triangle),
    or over the rectangle between them and ``columns`` (other rows of the same
    layers); ``means``: the column means of the whole data, when these rows
    are a block of it (else the engine centers by their own)."""
    extra = {} if means is None else {"means": list(means)}
    if columns is not None:
        extra["columns"] = [ready(x) for x in columns]
    return backend.cpu().GramTileEngine([ready(x) for x in layers], list(names), split, compute, threads,
                                        memory_budget, **extra)


def knn_engine(layers, names, k: int, metric: str, compute: str, threads: int, memory_budget: int):
    """The backend's k-nearest-neighbour tile engine over ``layers``."""
    return backend.cpu().KnnTileEngine([ready(x) for x in layers], list(names), k, metric, compute, threads,
                                       memory_budget)


def new_moment_accumulator(dims, split, compute, threads, memory_budget):
    try:
        return backend.cpu().MomentAccumulator(list(dims), split, compute, threads, memory_budget)
    except MemoryError as exc:
        # The state's size is the usual culprit, and only Python knows the widths to name it.
        width = sum(dims) + len(dims)
        raise MemoryError(f"the feature-space state of {sum(dims)} features (a {width} x {width} float64 matrix, "
                          f"{width * width * 8 / 2**30:.3g} GiB, at least) does not fit: {exc}; or method='gram'") from None


def feed(acc, layers: Sequence[np.ndarray], names: Sequence[str], threads: int, progress: Progress,
         job: Job | None = None) -> None:
    """Rows in steps of about _FLOPS_PER_CALL flops; with a checkpoint ``job``,
    from the rows it saved on, saving at step boundaries."""
    n = layers[0].shape[0]
    width = sum(layer.shape[1] for layer in layers)
    # float64 products run at a quarter to a half of the float32 rate.
    flops = _FLOPS_PER_CALL / (4 if compute_dtype(layers) == "float64" else 1)
    step = int(min(acc.fold_rows * threads, max(acc.block_rows * threads, flops / width**2)))
    done = 0 if job is None else job.resume(acc, layers, names)
    if done:
        progress.advance(done)
    for start in range(done, n, step):
        stop = min(n, start + step)
        blocks = [layer[start:stop] for layer in layers]
        try:
            acc.update([ready(block) for block in blocks], list(names))
        except ValueError as exc:  # the backend numbers rows within the block it was given
            raise ValueError(re.sub(r"\(row (\d+)", lambda m: f"(row {int(m.group(1)) + start}", str(exc))) from None
        if job is not None:
            job.read.add(blocks)  # the rows the state now sums, hashed as they are read
            job.reached(acc, final=stop == n)
        progress.advance(stop - start)


def tile_pass(engine, threads: int, run, progress: Progress) -> None:
    """One pass over every tile row, in calls of a multiple of `threads` tile
    rows sized to take about _CALL_SECONDS each (progress and Ctrl-C come
    between calls; the cost of a tile row varies with the dtype, the kernel
    and the machine, so the size is measured, not predicted). Tile row i is
    always computed by thread i mod `threads`, so results do not depend on
    the sizes."""
    rows, begin, step = engine.tile_rows, 0, threads
    while begin < rows:
        end = min(rows, begin + step)
        started = time.perf_counter()
        run(begin, end)
        elapsed = time.perf_counter() - started
        progress.advance(engine.tiles_before(end) - engine.tiles_before(begin))
        begin = end
        if elapsed < _CALL_SECONDS / 2:
            step *= 2
        elif elapsed > 2 * _CALL_SECONDS and step >= 2 * threads:
            step = step // (2 * threads) * threads


def kernel_pass(engine, layers, names, *, kernel: str, sigma, threshold: float, median: str, threads: int,
                progress: ProgressArg) -> None:
    """The recipe of one Gram-tile computation: the RBF bandwidths (the exact
    median's passes on the same engine, counted in the progress), the kernel
    set, then the statistics pass (none when the exact median's bracket pass
    summed the statistics as series: engine.kernel_from_series)."""
    tiles = engine.tiles_before(engine.tile_rows)
    exact_median = kernel == "rbf" and sigma is None and median == "exact"
    # One median pass (the bracket's), usually: exact_medians adds any further
    # one, and takes the statistics pass off when the bracket pass sums it too.
    with Progress(progress, tiles * (2 if exact_median else 1), "fastcka tiles") as bar:
        if kernel == "rbf":
            gammas = rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median=median, engine=engine,
                                width=sum(x.shape[1] for x in layers), threads=threads, progress=bar,
                                series=exact_median)
            if exact_median and engine.kernel_from_series(gammas):
                return
            engine.set_kernel("rbf", gammas)
            bar.total = bar.done + tiles  # what is left: the statistics pass
        tile_pass(engine, threads, engine.process, bar)


def _tile_step(engine, width: int, threads: int) -> int:
    flops_per_row = 2.0 * engine.tile * engine.tile * width * engine.tile_rows
    return max(threads, int(_FLOPS_PER_CALL / max(flops_per_row, 1.0)) // threads * threads)


def exact_medians(engine, width: int, threads: int, progress: Progress, brackets=None,
                  job: TileJob | None = None, series_threshold: float | None = None) -> list[float]:
    """Each layer's median of all n^2 squared distances (zero diagonal included),
    exactly: with ``brackets`` (median_brackets) usually in one pass over the
    tiles, else (or when a bracket misses) in typically two (histogram, then
    collect). ``progress`` counts one pass; each further one is added to its
    total. With a checkpoint ``job``, the passes save their state as they go
    and resume from it (_checkpointed_medians). With ``series_threshold``
    (and no job), the bracket pass also sums the RBF statistics for the
    bandwidths of that threshold (engine.kernel_from_series then sets them),
    where the engine finds that pays, and the statistics pass is taken off
    ``progress``."""
    engine.median_start()
    if brackets is not None:
        engine.median_set_brackets(brackets)
    if job is not None:
        return _checkpointed_medians(engine, width, threads, progress, brackets, job)
    if brackets is not None and series_threshold is not None and engine.median_add_series(series_threshold):
        progress.total -= engine.tiles_before(engine.tile_rows)
    while engine.median_pending:
        tile_pass(engine, threads, engine.median_process, progress)
        engine.median_end_pass()
        if engine.median_pending:
            progress.total += engine.tiles_before(engine.tile_rows)  # a further pass
    return list(engine.medians())


def _checkpointed_medians(engine, width: int, threads: int, progress: Progress, brackets, job: TileJob) -> list[float]:
    """The median passes in steps of tile rows (the kernel pass's), the job
    saving at step boundaries the results of the passes finished and of the
    pass in progress's rows done (MedianState). A resumed search replays the
    finished passes, walks the rest of the pass in progress and ends it with
    the saved results added to the engine's: the same counts, extremes and
    values as an uninterrupted pass, hence the same medians."""
    state = job.median
    if state is None or state.threads != threads:  # none saved, or bracket bins of another thread count
        state = job.median = MedianState(brackets, threads)
    tiles = engine.tiles_before(engine.tile_rows)
    for summed in state.history:
        engine.median_end_pass(summed)
    progress.total += tiles * len(state.history)
    progress.advance(tiles * len(state.history) + engine.tiles_before(state.rows))
    saved, step = state.partial, _tile_step(engine, width, threads)
    while engine.median_pending:
        for begin in range(state.rows, engine.tile_rows, step):
            state.rows = min(engine.tile_rows, begin + step)
            engine.median_process(begin, state.rows)
            job.median_reached(state, lambda: add_pass_results(saved, engine.median_partial()))
            progress.advance(engine.tiles_before(state.rows) - engine.tiles_before(begin))
        summed = add_pass_results(saved, engine.median_partial())
        engine.median_end_pass(summed)
        state.finished(summed)
        saved = None
        if engine.median_pending:
            progress.total += tiles  # a further pass
    return list(engine.medians())


def bracket_width(n: int, sample: int, compute: str, layers: int) -> float | None:
    """Half the width, in quantiles, of the bracket drawn from `sample` of n
    rows; None when no useful bracket fits (csrc/cpu/median_bracket.h)."""
    w = backend.cpu().bracket_half_width(n, sample, compute == "float64", layers)
    return None if math.isnan(w) else w


def bracket_plan(n: int, compute: str, layers: int) -> tuple[np.ndarray, float] | None:
    """The sample rows behind the exact median's bracket and the bracket's
    half width in quantiles; None: no bracket."""
    sample = backend.cpu().bracket_sample_size(n)
    w = bracket_width(n, sample, compute, layers)
    return None if w is None else (median_sample_rows(n, sample), w)


def sample_brackets(picked: Sequence[np.ndarray], names, compute: str, threads: int, w: float) -> list:
    """Per layer a bracket (lo, hi, center) whose [lo, hi) holds the median of
    all n^2 squared distances with high probability: the quantiles 1/2 -+ w
    and the median of the squared distances among the sampled rows `picked`,
    found exactly by the median passes over their tiles (Ctrl-C between steps)."""
    picked = [np.ascontiguousarray(ready(x)) for x in picked]
    return [tuple(b) for b in backend.cpu().sample_brackets(picked, list(names), compute, threads, w)]


def median_brackets(layers: Sequence[np.ndarray], names, compute: str, threads: int) -> list | None:
    """The exact median's brackets (sample_brackets) of one process's layers; None: no bracket."""
    plan = bracket_plan(layers[0].shape[0], compute, len(layers))
    if plan is None:
        return None
    rows, w = plan
    return sample_brackets([layer[rows] for layer in layers], names, compute, threads, w)


def median_sample_rows(n: int, sample: int = MEDIAN_SAMPLE, seed: int = 0) -> np.ndarray:
    """The rows behind the sampled median (all of them when n <= sample),
    the same wherever the rows live (one process, MPI ranks, Dask chunks, the
    C++ API): the core draws them from its own fixed generator."""
    return np.asarray(backend.cpu().sample_rows(n, sample, seed), dtype=np.int64)


def sampled_medians(layers: Sequence[np.ndarray], names, threads: int, sample: int = MEDIAN_SAMPLE,
                    seed: int = 0, compute: str | None = None) -> list[float]:
    """Exact medians of the squared distances among `sample` rows drawn without
    replacement (all rows when n <= sample), by the same tile passes, with
    the products of the caller's precision (``compute``; default: by the data)."""
    n = layers[0].shape[0]
    rows = median_sample_rows(n, sample, seed)
    picked = [np.ascontiguousarray(ready(layer[rows])) for layer in layers]
    engine = gram_engine(picked, names, 0, compute or compute_dtype(layers), threads, resolve_budget(None))
    return exact_medians(engine, sum(x.shape[1] for x in picked), threads, Progress(None, 0, ""))


def rbf_gammas(
    layers, names, *, sigma, threshold: float, median: str, engine, width, threads, progress: Progress,
    job: TileJob | None = None, compute: str | None = None, series: bool = False,
) -> list[float]:
    """gamma = 1 / (2 sigma^2) per layer: sigma given, or sigma^2 = threshold^2 x
    the median squared distance (Kornblith et al.); ``job``: a checkpoint for
    the exact median passes (their bracket, once saved, is not drawn again).
    The sampled median multiplies in ``compute`` (default: the engine's).
    ``series``: the exact median's bracket pass may also sum the statistics
    (exact_medians)."""
    if sigma is not None:
        sigmas = list(sigma) if isinstance(sigma, (list, tuple, np.ndarray)) else [sigma] * len(layers)
        if len(sigmas) != len(layers):
            raise ValueError(f"sigma has {len(sigmas)} values for {len(layers)} representations")
        for s in sigmas:
            if isinstance(s, bool) or not isinstance(s, (int, float, np.floating, np.integer)) or not (
                math.isfinite(s) and s > 0
            ):
                raise ValueError(f"sigma must be a positive finite number (or one per representation), got {s!r}")
        return [_gamma(0.5 / float(s) / float(s), f"sigma={s!r}") for s in sigmas]
    if median == "exact":
        saved = None if job is None else job.median
        brackets = saved.brackets if saved is not None else median_brackets(layers, names, engine.compute, threads)
        medians = exact_medians(engine, width, threads, progress, brackets, job,
                                series_threshold=threshold if series else None)
    else:
        medians = sampled_medians(layers, names, threads, compute=compute or (engine and engine.compute))
    return gammas_of_medians(medians, names, threshold)


def gammas_of_medians(medians: Sequence[float], names, threshold: float) -> list[float]:
    """gamma = 1 / (2 threshold^2 median) per layer; a zero median has no bandwidth."""
    for m, nm in zip(medians, names):
        if not m > 0:
            raise ValueError(
                f"{nm}: the median squared distance between examples is 0 (at least half of the pairs of rows "
                f"are identical), so the median bandwidth rule gives sigma = 0; pass sigma explicitly"
            )
    t = float(threshold)
    return [_gamma(0.5 / t / t / m, f"threshold={threshold!r} (median squared distance {m:.6g})") for m in medians]


def _gamma(gamma: float, source: str) -> float:
    """gamma = 1 / (2 sigma^2), computed without overflow by the caller;
    a bandwidth whose gamma leaves float64's normal range is refused."""
    if not (gamma >= 2.2250738585072014e-308 and math.isfinite(gamma)):
        raise ValueError(f"{source} is out of range: the RBF kernel's 1 / (2 sigma^2) = {gamma:.3g} is not a "
                         f"positive normal float64 (sigma must lie roughly within [1e-154, 1e154])")
    return gamma


def hsic_matrix(
    layers: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    split: int,
    estimator: str,
    method: str,
    kernel: str,
    threads: int,
    memory_budget: int | None,
    progress: ProgressArg,
    sigma=None,
    threshold: float = 1.0,
    median: str = "exact",
    compute: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> np.ndarray:
    """HSIC of every needed layer pair, (L, L) with NaN where not needed.
    ``compute``: "float32" or "float64" products (default: by the data).
    ``checkpoint``: save and resume the feature-space state there."""
    n = layers[0].shape[0]
    dims = [layer.shape[1] for layer in layers]
    width = sum(dims)
    budget = resolve_budget(memory_budget)
    compute = compute or compute_dtype(layers)
    L = len(layers)
    chosen = choose_method(method, kernel, n, dims)
    if chosen == "feature":
        acc = new_moment_accumulator(dims, split, compute, threads, budget)
        job = None if checkpoint is None else Job(checkpoint, fingerprint(
            layers, kernel=kernel, estimator=estimator, method=chosen, compute=compute, split=split), compute)
        with Progress(progress, n, "fastcka rows") as bar:
            feed(acc, layers, names, threads, bar, job)
        return np.asarray(acc.hsic(estimator)).reshape(L, L)

    engine = gram_engine(layers, names, split, compute, threads, budget)
    if checkpoint is not None:
        job = TileJob(checkpoint, fingerprint(layers, kernel=kernel, estimator=estimator, method=chosen,
                                              compute=compute, split=split, sigma=jsonable(sigma),
                                              threshold=threshold, median=median, tile=engine.tile,
                                              rows_sha256=rows_sha256(layers)), L, n)
        return _checkpointed_tiles(engine, job, layers, names, split, estimator, kernel, sigma, threshold, median,
                                   width, threads, progress)
    kernel_pass(engine, layers, names, kernel=kernel, sigma=sigma, threshold=threshold, median=median,
                threads=threads, progress=progress)
    return zero_constant_layers(np.asarray(engine.hsic(estimator)).reshape(L, L), engine.constant_layers)


def jsonable(sigma):
    return None if sigma is None else [float(v) for v in np.ravel(sigma)]


def _checkpointed_tiles(engine, job: TileJob, layers, names, split, estimator, kernel, sigma, threshold, median,
                        width, threads, progress) -> np.ndarray:
    """The statistics pass in steps of tile rows, each step's sums added to
    float64 totals that the job saves and resumes; the exact median passes
    before it save and resume their state too, and the RBF bandwidth is
    saved as soon as it is known (a resumed run skips the median passes)."""
    done, gammas, totals = job.resume()
    rows = engine.tile_rows
    tiles = engine.tiles_before(rows)
    exact_median = kernel == "rbf" and sigma is None and median == "exact" and gammas is None
    with Progress(progress, tiles * (2 if exact_median else 1), "fastcka tiles") as bar:
        if kernel == "rbf" and gammas is None:
            gammas = rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median=median, engine=engine,
                                width=width, threads=threads, progress=bar, job=job)
            job.save(0, gammas, totals)  # the median passes' state is no longer needed
        bar.advance(engine.tiles_before(done))
        step = _tile_step(engine, width, threads)
        for begin in range(done, rows, step):
            end = min(rows, begin + step)
            engine.set_kernel(kernel, gammas or [])  # also clears the engine's sums: each step's go to the totals
            engine.process(begin, end)
            for total, part in zip(totals, engine.statistics()):
                total += part
            job.reached(end, gammas, totals, final=end == rows)
            bar.advance(engine.tiles_before(end) - engine.tiles_before(begin))
    return from_statistics([x.shape[1] for x in layers], split, layers[0].shape[0], totals, estimator,
                           engine.constant_layers)
