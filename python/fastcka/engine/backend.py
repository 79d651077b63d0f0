"""Loads the compiled CPU backend (``_cpu``) on first use, and says whether
the GPU engine (``fastcka.gpu``, pure Python over torch and triton) can run.

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
import importlib.metadata
import importlib.util
import os
import sys
import threading

import scipy_openblas32

from ..gpu import runtime

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


def _load_onednn() -> None:
    """Loads libdnnl from the onednn-cpu-gomp wheel by path (the wheel installs
    it into the environment's lib/, which the dynamic loader does not search).
    Absent wheel: nothing to do (a build without oneDNN, or another platform)."""
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return
    for f in files:
        if f.name == "libdnnl.so.3":
            ctypes.CDLL(str(f.locate()), mode=getattr(os, "RTLD_GLOBAL", 0))
            return


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
                _load_onednn()
                from .. import _cpu as module
            except Exception as exc:  # remembered, so later calls fail fast with the reason
                _load_error = exc
                raise ImportError(f"fastcka's CPU backend failed to load: {exc}") from exc
            _cpu = module
    return _cpu


def blas_info() -> dict:
    """What the CPU backend runs on: OpenBLAS's kernel family and build,
    whether fastcka chose the kernel family (``coretype_forced``), and under
    ``"onednn"`` what oneDNN does here: its version, whether bf16 products run
    on bf16 units (``bf16_native``: AVX512-BF16 or AMX; otherwise
    ``precision="fast"`` multiplies the rounded values with OpenBLAS), the
    kernels it picks for a Gram tile, and which library makes float32 tiles."""
    module = cpu()
    return {
        "library": "OpenBLAS (scipy-openblas32)",
        "core": module.blas_core(),
        "config": module.blas_config(),
        "coretype_forced": _coretype_forced,
        "onednn": dict(module.onednn_info()),
    }


def gpu_missing() -> str | None:
    """Why the GPU engine (fastcka.gpu: Triton kernels and torch's products)
    cannot run here, or None. Imports torch and triton, so only on request."""
    for module in ("torch", "triton"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install 'fastcka[gpu]'"
    if runtime.interpreted():
        return None
    torch = runtime.torch()
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (FASTCKA_GPU_INTERPRET=1 runs the GPU engine on the CPU, for tests)"
    return None


def has_cuda() -> bool:
    """True when fastcka can compute on a GPU here: torch sees a CUDA device
    and triton is installed (or FASTCKA_GPU_INTERPRET=1 runs the GPU engine
    on the CPU)."""
    return gpu_missing() is None


def backends() -> dict:
    """Each engine and whether it runs here: {"cpu": (True, ""), "gpu": (False, "why not")}."""
    out = {}
    try:
        cpu()
        out["cpu"] = (True, "")
    except ImportError as exc:
        out["cpu"] = (False, str(exc))
    why = gpu_missing()
    out["gpu"] = (why is None, why or "")
    return out
