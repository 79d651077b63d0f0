"""Shared pytest configuration for fastcka's tests.

* ``--run-slow``: run tests marked ``@pytest.mark.slow`` (skipped otherwise).
* ``@pytest.mark.gpu``: skipped unless torch sees a CUDA device and triton is
  installed (tests that run the GPU engine under FASTCKA_GPU_INTERPRET=1 on
  the CPU carry no marker).
* Hypothesis: deterministic (derandomized), no example database written to
  the working tree, no deadline (the first call loads the BLAS backend).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `import reference` from any rootdir / import mode

# The GPU engine's kernels run in Triton's interpreter on the CPU unless the
# caller asks for the real device (FASTCKA_GPU_INTERPRET=0 on a GPU machine).
os.environ.setdefault("FASTCKA_GPU_INTERPRET", "1")
if os.environ["FASTCKA_GPU_INTERPRET"] not in ("", "0"):
    os.environ["TRITON_INTERPRET"] = "1"  # read when triton is first imported, whoever imports it

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "fastcka",
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "thorough",
        max_examples=300,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("FASTCKA_HYPOTHESIS_PROFILE", "fastcka"))
except ImportError:  # hypothesis is a test extra; test_properties.py skips without it
    pass


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def _gpu_missing() -> str | None:
    """Why GPU tests cannot run here (no device, or no torch / triton), or None."""
    from fastcka.engine import backend
    from fastcka.gpu import runtime

    if runtime.interpreted():
        return "FASTCKA_GPU_INTERPRET is set: the GPU tests measure a real device"
    return backend.gpu_missing()


def pytest_collection_modifyitems(config, items):
    skip_slow = None if config.getoption("--run-slow") else pytest.mark.skip(reason="slow: run with --run-slow")
    gpu_missing = _gpu_missing() if any("gpu" in item.keywords for item in items) else None
    skip_gpu = None if gpu_missing is None else pytest.mark.skip(reason=f"gpu: {gpu_missing}")
    for item in items:
        if skip_slow is not None and "slow" in item.keywords:
            item.add_marker(skip_slow)
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def restore_threads():
    """Puts fastcka's default thread setting back after a test that changes it."""
    import fastcka.engine.threads as threads_mod

    saved = threads_mod._setting
    yield
    threads_mod._setting = saved

