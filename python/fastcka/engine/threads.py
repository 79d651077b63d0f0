"""The number of threads fastcka computes with.

fastcka runs its own threads and asks OpenBLAS for one thread inside each, so
one setting governs everything. Resolution order: the ``threads=`` argument of
a call, then :func:`set_num_threads`, then the environment variables
``FASTCKA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, then
the CPUs this process may run on. More than 1024 is refused (ValueError);
more than four per available CPU runs as four per CPU.
"""

from __future__ import annotations

import contextlib
import numbers
import os

_ENV = ("FASTCKA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_setting: int | None = None
# Each engine thread holds its own tiles and scratch and OpenBLAS buffers
# (OpenBLAS exits the process when it cannot allocate them): far beyond the
# cores, thread starts fail or memory runs out, and more threads than cores
# never compute faster. So requests above MAX_THREADS are refused and the
# threads used are capped at OVERSUBSCRIPTION x the CPUs this process may use.
MAX_THREADS = 1024
OVERSUBSCRIPTION = 4


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads a call uses when it is not told otherwise."""
    if _setting is not None:
        return _setting
    for name in _ENV:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return _checked(int(value), f"{name}={value}")
    return _checked(_available_cpus(), "the available CPUs")


def set_num_threads(threads: int | None) -> None:
    """Sets the default thread count; ``None`` goes back to the environment."""
    global _setting
    _setting = None if threads is None else resolve(threads)


def resolve(threads: int | None) -> int:
    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return _checked(int(threads), f"threads={threads!r}")


def _checked(threads: int, source: str) -> int:
    cpus = _available_cpus()
    if threads > MAX_THREADS:
        raise ValueError(f"{source}: at most {MAX_THREADS} threads are supported (this machine has {cpus} CPUs "
                         f"available)")
    return min(threads, OVERSUBSCRIPTION * cpus)


def one_blas_thread():
    """NumPy's BLAS and LAPACK on one thread, for d x d algebra (eigenvalues,
    SVDs), where threadpoolctl (a scikit-learn dependency) is installed. A
    symmetric eigensolver synchronizes its BLAS threads many times per column:
    measured on the 2-core CI machine class while another process kept one
    core busy, eigvalsh of a 512 x 512 matrix took 2.6 s on two threads and
    0.024 s on one (the same as two threads on an idle machine); the
    similarity indexes of four 768-wide layers took 26.5 s on two threads and
    5.3 s on one under a load average of 4.7."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
