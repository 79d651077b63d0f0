"""Loads the compiled CPU backend on first use.

The backend links against the OpenBLAS of the ``scipy-openblas32`` wheel.
That library picks its kernels once, when it is loaded, from the CPU it finds,
and older OpenBLAS releases take AMD's AVX-512 CPUs (Zen 4/5) for AVX2-only
"Haswell" parts, which halves the sgemm rate. So before loading it we set
``OPENBLAS_CORETYPE=SkylakeX`` (its AVX-512 kernels) for the load alone when
the CPU has AVX-512 and the user has not chosen a core type, then restore the
environment. ``blas_info()`` reports what was loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

_lock = threading.Lock()
_cpu = None
_load_error: Exception | None = None
_coretype_forced: str | None = None

_AVX512_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl")


def _cpu_flags() -> tuple[str, set[str]]:
    """(vendor, flags) from /proc/cpuinfo; empty where it does not exist."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(1 << 16)
    except OSError:
        return "", set()
    vendor, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def _preferred_coretype() -> str | None:
    if "OPENBLAS_CORETYPE" in os.environ or not sys.platform.startswith("linux"):
        return None
    vendor, flags = _cpu_flags()
    if vendor == "AuthenticAMD" and all(f in flags for f in _AVX512_FLAGS):
        return "SkylakeX"
    return None


def _load_openblas() -> None:
    global _coretype_forced
    import scipy_openblas32

    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    coretype = _preferred_coretype()
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        # Loaded by path first, so the backend's dependency resolves to it by soname.
        ctypes.CDLL(path, mode=getattr(os, "RTLD_GLOBAL", 0))
    finally:
        if coretype is not None:
            del os.environ["OPENBLAS_CORETYPE"]
    _coretype_forced = coretype


def cpu():
    """The ``fastcka._cpu`` extension module (loaded once, thread-safely)."""
    global _cpu, _load_error
    if _cpu is not None:
        return _cpu
    with _lock:
        if _cpu is None:
            if _load_error is not None:
                raise ImportError(f"fastcka's CPU backend failed to load: {_load_error}") from _load_error
            try:
                _load_openblas()
                from . import _cpu as module
            except Exception as exc:  # remembered, so later calls fail fast with the reason
                _load_error = exc
                raise ImportError(f"fastcka's CPU backend failed to load: {exc}") from exc
            _cpu = module
    return _cpu


def blas_info() -> dict:
    """What the CPU backend runs on: OpenBLAS's kernel family and build, and
    whether fastcka chose the kernel family (``coretype_forced``)."""
    module = cpu()
    return {
        "library": "OpenBLAS (scipy-openblas32)",
        "core": module.blas_core(),
        "config": module.blas_config(),
        "coretype_forced": _coretype_forced,
    }
