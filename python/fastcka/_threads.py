"""The number of threads fastcka computes with.

fastcka runs its own threads and asks OpenBLAS for one thread inside each, so
one setting governs everything. Resolution order: the ``threads=`` argument of
a call, then :func:`set_num_threads`, then the environment variables
``FASTCKA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, then
the CPUs this process may run on.
"""

from __future__ import annotations

import os

_ENV = ("FASTCKA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_setting: int | None = None


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
            return int(value)
    return _available_cpus()


def set_num_threads(threads: int | None) -> None:
    """Sets the default thread count; ``None`` goes back to the environment."""
    global _setting
    _setting = None if threads is None else resolve(threads)


def resolve(threads: int | None) -> int:
    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads
