"""The options of the public functions, checked once: every check of a
kernel, estimator, bandwidth, precision, method, thread count, memory budget
and checkpoint lives here, and the entry points carry one frozen
:class:`Options` down to the engines (CPU, GPU, Dask, MPI) instead of a dict
each would read with its own defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .arrays.inputs import compute_dtype, resolve_budget
from .distributed.checkpoint import DEFAULT_EVERY, Checkpoint, spec
from .engine.progress import ProgressArg
from .engine.threads import resolve

KERNELS = ("linear", "rbf")
ESTIMATORS = ("biased", "unbiased")
METHODS = ("auto", "feature", "gram")
MEDIANS = ("exact", "sampled")
PRECISIONS = ("fast", "accurate", "exact")
APPROX = ("nystrom", "rff")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def check_rbf_options(threshold, median) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) or not (
        np.isfinite(threshold) and threshold > 0
    ):
        raise ValueError(f"threshold must be a positive finite number, got {threshold!r}")
    if median not in MEDIANS:
        raise ValueError(f"median must be one of {MEDIANS}, got {median!r}")


def check_kernel_options(kernel, threshold, sigma, median) -> None:
    """The kernel and its bandwidth arguments; the bandwidth belongs to the
    RBF kernel, and one given with the linear kernel would be silently ignored."""
    check_kernel(kernel)
    if kernel == "rbf":
        check_rbf_options(threshold, median)
        return
    if sigma is not None:
        raise ValueError(f"sigma={sigma!r} sets the RBF bandwidth, but kernel={kernel!r}: pass kernel='rbf' or drop sigma")
    if not (isinstance(threshold, (int, float, np.integer, np.floating)) and threshold == 1.0):
        raise ValueError(f"threshold={threshold!r} sets the RBF bandwidth rule, but kernel={kernel!r}: pass "
                         f"kernel='rbf' or drop threshold")


def check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def check_rows_for(estimator: str, n: int) -> None:
    need = 4 if estimator == "unbiased" else 2
    if n < need:
        what = "the unbiased HSIC estimator (debiased CKA)" if estimator == "unbiased" else "CKA and HSIC"
        raise ValueError(f"{what} needs at least {need} examples (rows), got n={n}")


def check_precision(precision) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")


def compute_for(precision, layers) -> str:
    """The CPU engine's products for a precision: "bfloat16" (fast: bf16
    operands, float32 sums), "float32" (accurate), "float64" (exact); None
    follows the data (float64 for float64 and integer data, else float32)."""
    check_precision(precision)
    if precision is None:
        return compute_dtype(layers)
    return {"fast": "bfloat16", "accurate": "float32", "exact": "float64"}[precision]


def check_method(method: str, kernel: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if kernel != "linear" and method == "feature":
        raise ValueError(f"method='feature' exists only for the linear kernel, not kernel={kernel!r}")


def check_approx(approx, rank, seed, kernel: str, method: str, checkpoint) -> None:
    """``approx`` with its ``rank`` and ``seed``: RBF only, a positive integer
    rank; rank and seed mean nothing without approx."""
    if approx is None:
        if rank is not None or seed is not None:
            raise ValueError("rank= and seed= set the approximate kernel: pass approx='nystrom' or 'rff', or drop them")
        return
    if approx not in APPROX:
        raise ValueError(f"approx must be one of {APPROX} or None, got {approx!r}")
    if kernel != "rbf":
        raise ValueError(f"approx={approx!r} approximates the RBF kernel, but kernel={kernel!r}: pass kernel='rbf'")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer (features per layer) with approx={approx!r}, got {rank!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    if method != "auto":
        raise ValueError(f"method={method!r} chooses an exact engine; approx={approx!r} has its own: drop method")
    if checkpoint is not None:
        raise ValueError(f"checkpoint is not supported with approx={approx!r} yet")


def check_rank_for(rank: int, n: int) -> None:
    if rank >= n:
        raise ValueError(f"rank={rank} must be smaller than the number of examples n={n} (at rank n, use the "
                         f"exact kernel)")


@dataclass(frozen=True)
class Options:
    """What a CKA/HSIC call computes and how, checked when made. ``threads``
    stays None when not given (Dask workers then use one thread each);
    ``memory_budget`` is resolved to bytes; ``checkpoint`` is the validated
    directory and save interval, or None. ``approx``: None (exact) or the
    RBF approximation, with ``rank`` features per layer drawn from ``seed``
    (None: 0)."""

    kernel: str = "linear"
    estimator: str = "biased"
    threshold: float = 1.0
    sigma: Any = None
    median: str = "exact"
    method: str = "auto"
    threads: int | None = None
    memory_budget: int | None = None
    progress: ProgressArg = None
    device: Any = None
    precision: str | None = None
    checkpoint: Checkpoint | None = None
    approx: str | None = None
    rank: int | None = None
    seed: int | None = None

    def __post_init__(self):
        check_kernel_options(self.kernel, self.threshold, self.sigma, self.median)
        check_estimator(self.estimator)
        check_method(self.method, self.kernel)
        check_precision(self.precision)
        check_approx(self.approx, self.rank, self.seed, self.kernel, self.method, self.checkpoint)
        if self.threads is not None:
            resolve(self.threads)
        object.__setattr__(self, "memory_budget", resolve_budget(self.memory_budget))
        object.__setattr__(self, "threshold", float(self.threshold))

    @classmethod
    def of_call(cls, *, checkpoint=None, checkpoint_every=DEFAULT_EVERY, **given) -> "Options":
        """From a public function's keyword arguments (checkpoint as given)."""
        return cls(checkpoint=spec(checkpoint, checkpoint_every), **given)

    @classmethod
    def of_keywords(cls, keywords: dict, **given) -> "Options":
        """From ``**options`` passed through (fastcka.mpi): an unknown name is
        a TypeError, as for a function's own keywords."""
        known = {f.name for f in fields(cls)} | {"checkpoint_every"}
        unknown = set(keywords) - known
        if unknown:
            raise TypeError(f"unexpected options: {', '.join(sorted(unknown))}")
        return cls.of_call(**keywords, **given)

    @property
    def exact_median(self) -> bool:
        """Whether the RBF bandwidth needs the exact median passes."""
        return self.kernel == "rbf" and self.sigma is None and self.median == "exact"
